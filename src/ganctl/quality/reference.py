"""Reference statistics files: a real set's feature mean and covariance, the `mu` / `sigma`
.npz of TTUR and pytorch-fid, so that FID against a large set (CIFAR-10's 50,000 training
images) needs neither the images nor their features.

A file ganctl writes (`ganctl eval --data D --save-stats F.npz`) also holds the feature
space's label and weights hash, the number of images, their resolution and whether they were
resampled, and the data's fingerprint. Reading one for a feature space with another hash is
refused; a file without those fields (TTUR's, pytorch-fid's) is accepted for a feature space
of its dimension and reported as unverified, never silently taken for a match.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ganctl.errors import DataError
from ganctl.fileio import write_atomic
from ganctl.quality.features import FeatureSpace
from ganctl.quality.fidelity import Moments

FORMAT = "ganctl.ref-stats/1"


@dataclass(frozen=True)
class Reference:
    """A real set's moments and what is known of how they were made."""

    moments: Moments
    path: str
    verified: bool  # the file names this feature space's weights hash
    n: int | None = None
    resolution: tuple[int, int] | None = None
    resampled: bool | None = None
    fingerprint: str | None = None

    def describe(self) -> dict[str, Any]:
        return {
            "file": self.path,
            "verified": self.verified,
            "n": self.n,
            "resolution": list(self.resolution) if self.resolution else None,
            "resampled": self.resampled,
            "fingerprint": self.fingerprint,
        }


def save(path: Path, features: torch.Tensor, space: FeatureSpace, info: dict[str, Any]) -> Reference:
    """Write the moments of real `features` with their provenance (`info`: resolution,
    resampled, fingerprint) to `path` atomically."""
    moments = Moments.of(features)
    h, w = info["resolution"]
    arrays = {
        "mu": moments.mean.numpy(),
        "sigma": moments.cov.numpy(),
        "format": np.array(FORMAT),
        "feature_space": np.array(space.label),
        "feature_sha256": np.array(space.sha256),
        "n": np.array(moments.n),
        "resolution": np.array([h, w]),
        "resampled": np.array(bool(info["resampled"])),
        "fingerprint": np.array(info["fingerprint"]),
    }

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)

    write_atomic(Path(path), write)
    return Reference(moments, str(path), True, moments.n, (h, w), bool(info["resampled"]), info["fingerprint"])


def load(path: Path, space: FeatureSpace) -> Reference:
    """The moments in `path` for `space`: refused when the file names another feature space,
    its shapes do not fit, or it holds non-finite values."""
    where = f"--ref-stats {path}"
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except FileNotFoundError:
        raise DataError(f"{where}: no such file") from None
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"{where}: not a readable .npz file ({exc})") from None
    if "mu" not in arrays or "sigma" not in arrays:
        raise DataError(f"{where}: holds no 'mu' and 'sigma' arrays (the TTUR / pytorch-fid layout)")
    mu, sigma = np.asarray(arrays["mu"], dtype=np.float64), np.asarray(arrays["sigma"], dtype=np.float64)
    d = space.dims
    if mu.shape != (d,) or sigma.shape != (d, d):
        raise DataError(
            f"{where}: statistics of {mu.shape[0] if mu.ndim == 1 else mu.shape}-d features, but the"
            f" {space.label} space has {d} dimensions"
        )
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise DataError(f"{where}: the statistics hold NaN or infinite values")
    sha = str(arrays["feature_sha256"]) if "feature_sha256" in arrays else None
    if sha is not None and sha != space.sha256:
        label = f"the {arrays['feature_space']} space's, " if "feature_space" in arrays else ""
        raise DataError(
            f"{where}: computed with other weights ({label}sha256 {sha[:16]}...) than this {space.label} space's"
            f" ({space.sha256[:16]}...); compute them again with --save-stats"
        )
    made_in = str(arrays["feature_space"]) if "feature_space" in arrays else None
    if sha is not None and made_in is not None and made_in != space.label:  # same weights, another preprocessing
        raise DataError(
            f"{where}: computed in the {made_in} space, not this {space.label} one (the same weights, resized"
            " differently); compute them again with --save-stats"
        )
    n = int(arrays["n"]) if "n" in arrays else None
    moments = Moments(torch.from_numpy(mu), torch.from_numpy(sigma), n or 0)
    resolution = tuple(int(v) for v in arrays["resolution"]) if "resolution" in arrays else None
    resampled = bool(arrays["resampled"]) if "resampled" in arrays else None
    fingerprint = str(arrays["fingerprint"]) if "fingerprint" in arrays else None
    return Reference(moments, str(path), sha is not None, n, resolution, resampled, fingerprint)
