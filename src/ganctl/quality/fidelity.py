"""Sample-quality metrics on features: FID, KID, Inception Score, precision and recall,
density and coverage.

Pure functions of feature matrices, real (N, d) and generated (M, d), whatever network made
them (`ganctl.quality.features`), or of a real set's moments (a reference statistics file).
Conventions follow torch-fidelity, whose numbers published work quotes, and a test checks them
against its functions:

- FID (Heusel et al. 2017): ||mu_r - mu_g||^2 + tr(S_r + S_g - 2 (S_r S_g)^(1/2)), with the
  unbiased covariances of each set. tr (S_r S_g)^(1/2) is the sum of the square roots of the
  eigenvalues of S_r^(1/2) S_g S_r^(1/2), a symmetric matrix, in float64.
- KID (Binkowski et al. 2018): the unbiased MMD^2 estimate with the cubic polynomial kernel
  k(x, y) = (x.y / d + 1)^3, over `subsets` random subsets of `subset_size` of each set; the
  mean and the standard deviation over subsets.
- IS (Salimans et al. 2016): exp E_x KL(p(y|x) || p(y)) from Inception's unbiased logits (its
  pool features times the classifier's weights, without the bias, as torch-fidelity takes
  them), in float64, over 10 splits of the samples after a shuffle with numpy's RandomState
  seeded 2020; the mean and the (population) standard deviation over splits.
- Distances and kernels are taken in float32 on the features' device (sums in float64), FID's
  moments in float64.
- Precision and recall (Kynkaanniemi et al. 2019, k = 3): each set's manifold is the union of
  balls around its points, of radius the distance to the point's k-th nearest neighbour in its
  own set. Precision: the share of generated points inside the real manifold; recall: the share
  of real points inside the generated manifold.
- Density and coverage (Naeem et al. 2020, k = 5): with the real balls only, density is the
  mean number of real balls a generated point falls in, divided by k (1 in expectation when the
  two distributions are equal; above 1 where generated points crowd dense real regions);
  coverage is the share of real balls holding at least one generated point.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ganctl import memory, progress
from ganctl.config import FIDELITY_METRICS
from ganctl.errors import DataError

IS_SPLITS = 10  # torch-fidelity's isc_splits, as Salimans et al.'s code
IS_SHUFFLE_SEED = 2020  # torch-fidelity's rng_seed for the shuffle before splitting
PR_K = 3  # Kynkaanniemi et al. 2019
DC_K = 5  # Naeem et al. 2020
KID_SUBSETS = 100  # torch-fidelity's defaults
KID_SUBSET_SIZE = 1000
BLOCK_VALUES = 1 << 22  # distances in one block of a pairwise-distance pass: 16 MB in float32
NEIGHBOUR_METRICS = ("pr", "dc")  # measured between features, in the precision/recall space


@dataclass(frozen=True)
class Moments:
    """The mean and unbiased covariance of a feature set, in float64."""

    mean: Tensor  # (d,)
    cov: Tensor  # (d, d)
    n: int

    @classmethod
    def of(cls, features: Tensor) -> Moments:
        x = features.double()
        if len(x) < 2:
            raise DataError(f"FID needs at least 2 samples per set, got {len(x)}")
        mean = x.mean(dim=0)
        centred = x - mean
        return cls(mean, centred.T @ centred / (len(x) - 1), len(x))


def frechet_distance(a: Moments, b: Moments) -> float:
    """The Frechet distance between Gaussians with these moments: the FID of their features."""
    # S_a^(1/2) from the eigendecomposition of the symmetric S_a (eigenvalues clipped at 0:
    # rounding makes tiny negative ones in a rank-deficient covariance).
    w, v = torch.linalg.eigh(a.cov)
    root_a = (v * w.clamp_min(0.0).sqrt()) @ v.T
    middle = root_a @ b.cov @ root_a
    trace_root = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp_min(0.0).sqrt().sum()
    diff = a.mean - b.mean
    return float(diff @ diff + a.cov.trace() + b.cov.trace() - 2.0 * trace_root)


def fid(real: Tensor | Moments, fake: Tensor) -> float:
    """FID of generated features against real features or a real set's moments."""
    return frechet_distance(real if isinstance(real, Moments) else Moments.of(real), Moments.of(fake))


def inception_score(logits: Tensor, splits: int = IS_SPLITS, seed: int = IS_SHUFFLE_SEED) -> dict[str, float]:
    """IS's mean and standard deviation over `splits` splits of the shuffled samples."""

    n = len(logits)
    if n < splits:
        raise DataError(f"the Inception Score needs at least {splits} samples (one per split), got {n}")
    x = logits.double()[torch.from_numpy(np.random.RandomState(seed).permutation(n))]
    p, log_p = x.softmax(dim=1), x.log_softmax(dim=1)
    scores = []
    for i in range(splits):
        part_p, part_log = p[i * n // splits : (i + 1) * n // splits], log_p[i * n // splits : (i + 1) * n // splits]
        marginal = part_p.mean(dim=0, keepdim=True)
        scores.append(float((part_p * (part_log - marginal.log())).sum(dim=1).mean().exp()))
    return {"mean": float(np.mean(scores)), "std": float(np.std(scores))}


def _polynomial_kernel_sums(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """The sum and the trace of (x y^T / d + 1)^3: the products in float32 (as torch-fidelity
    takes them), the sums in float64."""
    k = (x @ y.T / x.shape[1] + 1.0) ** 3
    return k.double().sum(), k.diagonal().double().sum()


def _mmd2_unbiased(x: Tensor, y: Tensor) -> Tensor:
    m = len(x)
    (xx, xx_diag), (yy, yy_diag), (xy, _) = (_polynomial_kernel_sums(*p) for p in ((x, x), (y, y), (x, y)))
    return (xx - xx_diag + yy - yy_diag) / (m * (m - 1)) - 2.0 * xy / (m * m)


def kid(
    real: Tensor, fake: Tensor, subsets: int = KID_SUBSETS, subset_size: int = KID_SUBSET_SIZE, seed: int = 0
) -> dict[str, float]:
    """KID's mean and standard deviation over subsets (the subset size is capped by the smaller
    set, and both numbers are reported with it)."""
    size = min(subset_size, len(real), len(fake))
    if size < 2:
        raise DataError(f"KID needs at least 2 samples per set, got {len(real)} real and {len(fake)} generated")
    g = torch.Generator().manual_seed(seed)
    x_all, y_all = real.float(), fake.float()
    values = torch.stack(
        [
            _mmd2_unbiased(
                x_all[torch.randperm(len(x_all), generator=g)[:size]],
                y_all[torch.randperm(len(y_all), generator=g)[:size]],
            )
            for _ in progress.counted(range(subsets), "KID's subsets", subsets, lambda _: 1)
        ]
    )
    return {
        "mean": float(values.mean()),
        "std": float(values.std(unbiased=False)),
        "subsets": subsets,
        "subset_size": size,
    }


def _rows(columns: int) -> int:
    """Rows of a block of pairwise distances against `columns` points: BLOCK_VALUES at most, so
    that the memory a block takes does not grow with the sets (26,000 stacks made 213 MB blocks)."""
    return max(1, BLOCK_VALUES // max(1, columns))


def _kth_neighbour_radii(x: Tensor, ks: tuple[int, ...], what: str) -> dict[int, Tensor]:
    """For each k of `ks`, the distance from each point to its k-th nearest other point of the
    same set (both k from one top-k of each block of distances)."""
    kmax = max(ks)
    if len(x) <= kmax:
        raise DataError(f"a set of {len(x)} samples has no {kmax}-th nearest neighbour; give at least {kmax + 1}")
    radii: dict[int, list[Tensor]] = {k: [] for k in ks}
    done = 0
    progress.report(what, 0, len(x))
    for block in x.split(_rows(len(x))):
        # Ascending; column 0 is the point itself (distance 0), so column k is its k-th neighbour.
        nearest = torch.cdist(block, x).topk(kmax + 1, dim=1, largest=False).values
        for k in ks:
            radii[k].append(nearest[:, k])
        del nearest
        memory.release()
        done += len(block)
        progress.report(what, done, len(x))
    return {k: torch.cat(r) for k, r in radii.items()}


def neighbour_metrics(
    real: Tensor, fake: Tensor, metrics: tuple[str, ...] = NEIGHBOUR_METRICS, pr_k: int = PR_K, dc_k: int = DC_K
) -> dict[str, float]:
    """Precision and recall ("pr") and density and coverage ("dc") in the fewest passes over the
    pairwise distances: each set's k-nearest radii once, then one pass over blocks of real x
    generated distances for all four numbers."""
    real, fake = real.float(), fake.float()
    want_pr, want_dc = "pr" in metrics, "dc" in metrics
    ks = tuple(k for k, wanted in ((pr_k, want_pr), (dc_k, want_dc)) if wanted)
    if not ks:
        return {}
    real_r = _kth_neighbour_radii(real, ks, "real samples' nearest neighbours")
    fake_r = _kth_neighbour_radii(fake, (pr_k,), "generated samples' nearest neighbours")[pr_k] if want_pr else None
    in_real = torch.zeros(len(fake), dtype=torch.bool)  # precision: inside some real ball of radius r_k(real)
    real_balls = torch.zeros(len(fake), dtype=torch.long)  # density: how many real balls of radius r_dc hold it
    in_fake, covered = [], []  # per real point: inside a generated ball (recall); its ball holds a sample (coverage)
    start, what = 0, "distances between real and generated samples"
    progress.report(what, 0, len(real))
    for block in real.split(_rows(len(fake))):
        d = torch.cdist(block, fake)  # (block, generated)
        rows = slice(start, start + len(block))
        if want_pr:
            in_real |= (d <= real_r[pr_k][rows, None]).any(dim=0)
            in_fake.append((d <= fake_r[None, :]).any(dim=1))
        if want_dc:
            real_balls += (d <= real_r[dc_k][rows, None]).sum(dim=0)
            covered.append(d.min(dim=1).values <= real_r[dc_k][rows])
        del d
        memory.release()
        start += len(block)
        progress.report(what, start, len(real))
    out: dict[str, float] = {}
    if want_pr:
        out.update(precision=float(in_real.double().mean()), recall=float(torch.cat(in_fake).double().mean()))
    if want_dc:
        density = real_balls.double().mean() / dc_k
        out.update(density=float(density), coverage=float(torch.cat(covered).double().mean()))
    return out


def precision_recall(real: Tensor, fake: Tensor, k: int = PR_K) -> dict[str, float]:
    return neighbour_metrics(real, fake, ("pr",), pr_k=k)


def density_coverage(real: Tensor, fake: Tensor, k: int = DC_K) -> dict[str, float]:
    return neighbour_metrics(real, fake, ("dc",), dc_k=k)


METRICS = FIDELITY_METRICS  # what --metrics accepts


def check_features(x: Tensor, which: str) -> None:
    """Refuse features no score can be read from: none per sample (every distance 0: FID 0,
    precision 1), or a NaN or infinity (the eigendecomposition fails to converge)."""
    if x.dim() != 2 or x.shape[1] == 0:
        raise DataError(f"the {which} samples' features have shape {tuple(x.shape)}: no feature to compare them by")
    if not bool(torch.isfinite(x).all()):
        raise DataError(f"the {which} samples' features hold NaN or infinite values: no score can be read from them")


def compute(real: Tensor | Moments, fake: Tensor, metrics: tuple[str, ...], seed: int = 0) -> dict[str, float]:
    """The asked metrics of one feature space as flat numbers: fid, kid (and kid_std),
    precision, recall, density, coverage (IS, from logits alone, is `inception_score`). With
    the real set's moments instead of its features, FID alone can be computed."""
    for name, x in (("real", real), ("generated", fake)):
        if isinstance(x, Tensor):
            check_features(x, name)
    out: dict[str, float] = {}
    if "fid" in metrics:
        progress.report("FID", 0, 1)
        out["fid"] = fid(real, fake)
        progress.report("FID", 1, 1)
    if isinstance(real, Moments):
        others = [m for m in metrics if m in ("kid", "pr", "dc")]
        if others:
            raise DataError(f"{', '.join(others)} need the real images' features, not only their mean and covariance")
        return {k: (v if math.isfinite(v) else float("nan")) for k, v in out.items()}
    if "kid" in metrics:
        k = kid(real, fake, seed=seed)
        out.update({"kid": k["mean"], "kid_std": k["std"]})
    out.update(neighbour_metrics(real, fake, tuple(m for m in metrics if m in NEIGHBOUR_METRICS)))
    return {k: (v if math.isfinite(v) else float("nan")) for k, v in out.items()}
