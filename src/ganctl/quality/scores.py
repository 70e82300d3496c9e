"""Image metrics of generated images against a real set, in named feature spaces, with what
they were measured on.

`Spaces` says which network measures which metric: FID, KID and IS in the main space
(Inception-v3, or the random-conv fallback), precision/recall and density/coverage in VGG-16
space when its weights are given (where Kynkaanniemi et al. 2019 and torch-fidelity's `prc`
measure them), else in the main space. Every metric's name carries its space
(``fid[inception]``, ``precision[vgg16]``), and `provenance` records the resolution of both
sides, whether either was resampled, and whether the result is *standard*: published weights,
the published space for each metric, nothing resampled, and a reference file (if any) known to
come from the same weights. Only a standard number may be set beside a paper's.

A real set's features are cached under the image cache folder, keyed by the feature network's
weights, the set's fingerprint, the sample count and the seed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor

from ganctl import cache, progress
from ganctl.config import TrainConfig, metric_list
from ganctl.data import DataSource
from ganctl.errors import ConfigError, DataError
from ganctl.fileio import atomic_path
from ganctl.quality import fidelity
from ganctl.quality.dinov2 import DINOV2_ENV, dinov2, dinov2_path
from ganctl.quality.features import (
    INCEPTION_ENV,
    VGG_ENV,
    FeatureSpace,
    inception,
    inception_path,
    random_conv,
    vgg16,
    weights_path,
    weights_where,
)
from ganctl.quality.reference import Reference

CHUNK = 500  # images per chunk through the generator and the feature networks
FEATURES_FORMAT = "ganctl.features/1"
MAIN_METRICS = ("fid", "kid", "is")


@dataclass(frozen=True)
class Spaces:
    """The feature spaces of a measurement: `main` (FID, KID, IS) and `pr` (precision/recall,
    density/coverage; None: the main space)."""

    main: FeatureSpace
    pr: FeatureSpace | None = None

    def of(self, metric: str) -> FeatureSpace:
        return self.pr if metric in fidelity.NEIGHBOUR_METRICS and self.pr is not None else self.main

    def used(self, metrics: Iterable[str]) -> list[FeatureSpace]:
        found: list[FeatureSpace] = []
        for m in metrics:
            space = self.of(m)
            if all(space is not s for s in found):
                found.append(space)
        return found


def choose_spaces(
    features: str,
    inception_file: str | None,
    vgg_file: str | None,
    device: torch.device | str,
    dinov2_file: str | None = None,
    dinov2_resize: str = "torch-fidelity",
) -> Spaces:
    """--features auto | random-conv | inception | dinov2 (auto: Inception-v3 when its weights
    are given, by --inception or $GANCTL_INCEPTION, else random-conv; dinov2: from --dinov2 or
    $GANCTL_DINOV2), and VGG-16 for precision/recall when its weights are given (--vgg or
    $GANCTL_VGG)."""
    path = inception_path(inception_file)
    inception_where = weights_where(inception_file, INCEPTION_ENV, "--inception")
    if features == "auto":
        main = inception(path, device, inception_where) if path is not None else random_conv(device)
    elif features == "random-conv":
        main = random_conv(device)
    elif features == "inception":
        if path is None:
            raise ConfigError("--features inception needs the weights file: --inception PATH or $GANCTL_INCEPTION")
        main = inception(path, device, inception_where)
    elif features == "dinov2":
        found = dinov2_path(dinov2_file)
        if found is None:
            raise ConfigError("--features dinov2 needs the weights file: --dinov2 PATH or $GANCTL_DINOV2")
        main = dinov2(found, device, weights_where(dinov2_file, DINOV2_ENV, "--dinov2"), dinov2_resize)
    else:
        raise ConfigError(f"--features {features!r} is not one of: auto, random-conv, inception, dinov2")
    vgg = weights_path(vgg_file, VGG_ENV)
    pr = vgg16(vgg, device, weights_where(vgg_file, VGG_ENV, "--vgg")) if vgg is not None else None
    return Spaces(main, pr)


def check_sizes(metrics: tuple[str, ...], n_real: int | None, n_fake: int, flag: str, data: str) -> None:
    """Refuse, before any work, sets too small for the metrics asked: FID and KID need 2 samples
    a side, precision/recall k + 1 = 4 and density/coverage k + 1 = 6 real ones (a k-th nearest
    neighbour), the Inception Score one generated sample per split (10)."""
    needs = {
        "fid": (2, 2, "FID needs a covariance"),
        "kid": (2, 2, "KID's unbiased estimate needs two samples"),
        "pr": (fidelity.PR_K + 1, fidelity.PR_K + 1, f"precision/recall need a {fidelity.PR_K}-th nearest neighbour"),
        "dc": (fidelity.DC_K + 1, 1, f"density/coverage need a {fidelity.DC_K}-th nearest real neighbour"),
        "is": (0, fidelity.IS_SPLITS, f"the Inception Score needs a sample per split ({fidelity.IS_SPLITS})"),
    }
    for metric in metrics:
        real, fake, why = needs[metric]
        if n_real is not None and n_real < real:
            raise ConfigError(
                f"{flag} {metric}: {why}, so at least {real} real images; --data {data} holds {n_real}"
                f" (leave {metric} out of {flag}, or give it none)"
            )
        if n_fake < fake:
            raise ConfigError(f"{flag} {metric}: {why}, so at least {fake} generated images; {n_fake} were asked for")


def check_metrics(spaces: Spaces, metrics: tuple[str, ...], flag: str = "--metrics") -> None:
    """IS needs a classifier's logits: one line when the main space has none."""
    if "is" in metrics and not spaces.main.has_logits:
        raise ConfigError(
            f"{flag} is: the Inception Score needs Inception-v3's classifier (--inception PATH or"
            f" $GANCTL_INCEPTION); the {spaces.main.label} space has no classifier"
        )


def labelled(space: FeatureSpace, values: dict[str, float]) -> dict[str, float]:
    """Metric names carry their feature space, so a fallback number is never read as a
    published FID: fid[random-conv], precision[inception], ..."""
    return {f"{k}[{space.label}]": v for k, v in values.items()}


# --- the real set's features ----------------------------------------------------------------------
@dataclass
class RealFeatures:
    features: Tensor  # (n, dims), CPU float32
    n: int
    fingerprint: str  # of the real set (`dataset.fingerprint()`)
    seed: int
    cache: str | None  # the cache file, where it could be written


def _identity(space: FeatureSpace) -> str:
    """What makes a space's features: its weights and, where the preprocessing varies (DINOv2's
    two resizes), the label that names it."""
    return space.sha256 if space.label in (space.name, f"{space.name}-unverified") else f"{space.sha256}|{space.label}"


def real_features(space: FeatureSpace, dataset: DataSource, n: int, seed: int) -> RealFeatures:
    """Features of n real images (all of a smaller finite set), read from the cache when the
    same network has seen the same images, else computed and cached."""
    n = min(n, dataset.length) if dataset.length is not None else n
    fingerprint = dataset.fingerprint()
    path = cache.path("features", f"{FEATURES_FORMAT}|{_identity(space)}|{fingerprint}|{n}|{seed}")
    cached = _read_features(path, n)
    if cached is None:
        generator = torch.Generator().manual_seed(seed)
        chunks = progress.counted(dataset.chunks(n, generator, CHUNK), f"real images through {space.label}", n)
        cached = torch.cat([space.features(chunk) for chunk in chunks])
        meta = {"space": space.label, "sha256": space.sha256, "fingerprint": fingerprint, "n": n, "seed": seed}
        _write_features(path, cached, meta)
    return RealFeatures(cached, n, fingerprint, seed, str(path) if path.exists() else None)


def _read_features(path: Path, n: int | None) -> Tensor | None:
    try:
        with safe_open(str(path), "pt") as fh:
            if (fh.metadata() or {}).get("format") != FEATURES_FORMAT:
                return None
            features = fh.get_tensor("features")
    except (SafetensorError, OSError, ValueError, KeyError):
        return None  # absent or damaged: computed again
    if features.dim() != 2 or not bool(torch.isfinite(features).all()):
        return None  # damaged in a way safetensors cannot see: computed again
    return features if n is None or len(features) == n else None


def _write_features(path: Path, features: Tensor, meta: dict[str, Any]) -> None:
    metadata = {"format": FEATURES_FORMAT, **{k: json.dumps(v) for k, v in meta.items()}}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            save_file({"features": features.contiguous()}, str(tmp), metadata=metadata)
    except OSError:
        pass  # the cache is an optimisation; an unwritable cache folder costs a recomputation


# --- generated images ---------------------------------------------------------------------------
@dataclass
class Generated:
    """What the metrics need of generated images, gathered chunk by chunk: features per space,
    the main space's logits (IS), and the images' resolution."""

    spaces: Spaces
    metrics: tuple[str, ...]
    features: dict[str, list[Tensor]] = field(default_factory=dict)
    logits: list[Tensor] = field(default_factory=list)
    labels: list[Tensor] = field(default_factory=list)  # a conditional generator's classes
    resolution: tuple[int, int] | None = None
    n: int = 0

    def add(self, images: Tensor, labels: Tensor | None = None) -> None:
        self.n += len(images)
        if labels is not None:
            self.labels.append(labels.cpu())
        self.resolution = tuple(images.shape[-2:])
        for space in self.spaces.used(self.metrics):
            wants_logits = space is self.spaces.main and "is" in self.metrics
            feats, logits = space.features_and_logits(images) if wants_logits else (space.features(images), None)
            self.features.setdefault(space.label, []).append(feats)
            if logits is not None:
                self.logits.append(logits)

    def of(self, space: FeatureSpace) -> Tensor:
        return torch.cat(self.features[space.label])

    def of_class(self, space: FeatureSpace, label: int) -> Tensor:
        return self.of(space)[torch.cat(self.labels) == label]


def image_metrics(
    spaces: Spaces,
    metrics: tuple[str, ...],
    fake: Generated,
    real: dict[str, Tensor],
    reference: Reference | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """The asked metrics, labelled by space. `real` maps a space's label to the real set's
    features there; with a `reference`, FID takes its moments instead of real features."""
    out: dict[str, float] = {}
    main = spaces.main
    wanted = [m for m in metrics if m in ("fid", "kid")]
    if wanted:
        against = reference.moments if reference is not None and wanted == ["fid"] else real[main.label]
        out.update(labelled(main, fidelity.compute(against, fake.of(main), tuple(wanted), seed)))
    if "is" in metrics:
        score = fidelity.inception_score(torch.cat(fake.logits))
        out.update(labelled(main, {"is": score["mean"], "is_std": score["std"]}))
    wanted = [m for m in metrics if m in fidelity.NEIGHBOUR_METRICS]
    if wanted:
        space = spaces.of(wanted[0])
        out.update(labelled(space, fidelity.compute(real[space.label], fake.of(space), tuple(wanted), seed)))
    return out


def real_class_features(space: FeatureSpace, dataset: DataSource, label: int, n: int, seed: int) -> Tensor:
    """Features of up to n real images of one class, cached like `real_features`."""
    fingerprint = f"{dataset.fingerprint()}|class {label}"
    path = cache.path("features", f"{FEATURES_FORMAT}|{_identity(space)}|{fingerprint}|{n}|{seed}")
    cached = _read_features(path, None)
    if cached is None:
        generator = torch.Generator().manual_seed(seed)
        chunks = dataset.class_chunks(label, n, generator, CHUNK)
        cached = torch.cat([space.features(chunk) for chunk in chunks])
        meta = {"space": space.label, "sha256": space.sha256, "fingerprint": fingerprint, "n": n, "seed": seed}
        _write_features(path, cached, meta)
    return cached


def intra_class_fid(spaces: Spaces, generated: Generated, dataset: DataSource, n: int, seed: int) -> dict[str, Any]:
    """Intra-class FID (Miyato & Koyama 2018): each class's FID against that class's real
    images, in the main space, and their mean over classes."""
    main, per_class = spaces.main, {}
    names = dataset.classes.names
    for k, name in progress.counted(enumerate(names), "intra-class FID, class by class", len(names), lambda _: 1):
        fake = generated.of_class(main, k)
        if len(fake) < 2:
            continue
        real = real_class_features(main, dataset, k, n, seed)
        per_class[name] = fidelity.fid(real, fake) if len(real) >= 2 else float("nan")
    values = [v for v in per_class.values() if v == v]
    return {f"intra_fid[{main.label}]": sum(values) / len(values) if values else float("nan"), "per_class": per_class}


def real_needed(spaces: Spaces, metrics: tuple[str, ...], reference: Reference | None) -> list[FeatureSpace]:
    """The spaces where the metrics need the real set's features (none for IS alone, nor for
    FID against a reference file)."""
    needs = [m for m in metrics if m != "is" and not (m == "fid" and reference is not None)]
    return spaces.used(needs)


def provenance(
    spaces: Spaces,
    metrics: tuple[str, ...],
    real: DataSource | None,
    fake_resolution: tuple[int, int] | None,
    fake_resampled: bool,
    reference: Reference | None = None,
) -> dict[str, Any]:
    """The resolution of both sides, whether either was resampled, and whether the numbers are
    standard (and if not, why). The real side is the reference file when there is one (FID's),
    and the real images for the metrics that need them."""
    why = []
    for space in spaces.used(metrics):
        if space.name == "random-conv":
            why.append("random-conv is a random network's space, comparable between runs only")
        elif not space.standard and space.name == "dinov2":
            why.append(f"{space.label}: not the shapes of a DINOv2 network Meta published")
        elif not space.standard:
            why.append(f"{space.label}: the weights are not the published file (sha256 {space.sha256[:16]}...)")
    if any(m in fidelity.NEIGHBOUR_METRICS for m in metrics) and spaces.of("pr").name not in ("vgg16", "dinov2"):
        why.append(
            "precision/recall and density/coverage were published in VGG-16 space (give --vgg) and, by Stein et al."
            " 2023, in DINOv2's (--features dinov2)"
        )
    real_resolution, real_resampled = None, False
    if reference is not None:
        real_resolution, real_resampled = reference.resolution, bool(reference.resampled)
        if not reference.verified:
            why.append("the --ref-stats file names no feature space, so it cannot be checked against these weights")
        elif reference.resampled:
            why.append("the --ref-stats statistics were made from resampled images")
    if real is not None and real_needed(spaces, metrics, reference):
        real_resolution, real_resampled = tuple(real.shape[-2:]), real.resampled or real_resampled
        if real.resampled:
            native = real.native_size
            was = f" from {native[0]} x {native[1]}" if native and tuple(native) != real_resolution else ""
            why.append(f"the real images were resampled{was} to {real_resolution[0]} x {real_resolution[1]}")
    if fake_resampled:
        why.append("the generated images were resampled")
    checked = {space.label: space.checked for space in spaces.used(metrics)}
    resolution = {
        "real": list(real_resolution) if real_resolution else None,
        "fake": list(fake_resolution) if fake_resolution else None,
        "real_resampled": real_resampled,
        "fake_resampled": fake_resampled,
    }
    return {"resolution": resolution, "standard": not why, "not_standard_because": why, "checked": checked}


def check_resolution(real: tuple[int, int] | None, fake: tuple[int, int] | None, where: str) -> None:
    """Images of two sizes are not compared (resampling one side changes FID by several per cent)."""
    if real is not None and fake is not None and tuple(real) != tuple(fake):
        raise DataError(
            f"{where}: the generated images are {fake[0]} x {fake[1]} but the real ones {real[0]} x {real[1]};"
            " metrics compare images of one size (give --image-size to resample both, and the result is then"
            " not standard)"
        )


# --- image metrics ---------------------------------------------------------------------------
def run_spaces(cfg: TrainConfig, device: torch.device) -> Spaces:
    """A run's feature spaces for its evaluations: random-conv, or Inception-v3 from --inception
    (or $GANCTL_INCEPTION); and VGG-16 for precision/recall when --vgg is given."""
    if cfg.eval_features == "random-conv":
        main = random_conv(device)
    else:
        path = inception_path(cfg.inception)
        if path is None:
            raise ConfigError("--eval-features inception needs the weights file: --inception PATH or $GANCTL_INCEPTION")
        main = inception(path, device, weights_where(cfg.inception, INCEPTION_ENV, "--inception"))
    spaces = Spaces(main, vgg16(Path(cfg.vgg).expanduser(), device) if cfg.vgg else None)
    check_metrics(spaces, metric_list(cfg.eval_metrics, "--eval-metrics"), "--eval-metrics")
    return spaces


def spaces_described(spaces: Spaces) -> dict[str, Any]:
    found = {"feature_space": spaces.main.describe()}
    if spaces.pr is not None:
        found["pr_feature_space"] = spaces.pr.describe()
    return found
