"""Every number ganctl reports that can be better or worse, which way is better, and the one
threshold checker behind the CI gates of `ganctl eval` and `ganctl gradnorm`.

Pure data and no torch: `--help` reads the thresholds' flags from here, and `compare`, `tuning`,
`eval` and `gradnorm` all ask this table which way a metric is better. Image metrics carry their
feature space in their name (``fid[inception]``); the table knows them by the part before the
bracket.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ganctl.errors import ConfigError


@dataclass(frozen=True)
class Metric:
    name: str  # as reported, without a feature space
    label: str  # a column heading
    better: str | None  # "max", "min", "one" (closest to 1) or None (a diagnostic: no best)
    share: bool = False  # a fraction, shown as a percentage
    image: bool = False  # measured in a feature space: reported as name[space]


# In the order `compare` shows them: the data's own quality metrics, the image metrics, then
# diagnostics and costs.
METRICS = (
    Metric("modes", "modes", "max"),
    Metric("hq_share", "high-quality", "max", share=True),
    Metric("valid_share", "valid", "max", share=True),
    Metric("w1", "W1", "min"),
    Metric("class_consistency", "class consistency", "max", share=True),
    # A classifier of the user's labelled data judging the samples (`ganctl.quality.classifier`),
    # named with its weights' hash like an image metric with its feature space.
    Metric("classes_covered", "classes covered", "max", image=True),
    Metric("confident_share", "confident", "max", share=True, image=True),
    Metric("class_kl", "KL(class histogram)", "min", image=True),
    Metric("rejected_share", "of no class", "min", share=True, image=True),  # auto's reject class
    Metric("gan_test", "GAN-test", "max", share=True, image=True),
    # Stacked data (VEEGAN, PacGAN): each channel classified, a mode per triple.
    Metric("modes_covered", "modes covered", "max", image=True),
    Metric("modes_kl", "KL(modes || uniform)", "min", image=True),
    Metric("gan_train", "GAN-train", "max", share=True, image=True),
    # Copying (`ganctl.quality.copying`), in a named space: the share of samples nearer a
    # training image than an unseen one (fresh real images: about 0.5; the held-out images' own
    # is beside it), and Meehan et al.'s C_T, best at 0, which no direction here expresses.
    Metric("nearer_seen", "nearer a training image", "min", share=True, image=True),
    Metric("held_nearer_seen", "held-out: nearer a training image", None, share=True, image=True),
    Metric("c_t", "C_T (data copying)", None, image=True),
    Metric("fid", "FID", "min", image=True),
    Metric("kid", "KID", "min", image=True),
    Metric("is", "IS", "max", image=True),
    Metric("intra_fid", "intra-class FID", "min", image=True),
    Metric("precision", "precision", "max", image=True),
    Metric("recall", "recall", "max", image=True),
    Metric("coverage", "coverage", "max", image=True),
    # Density has no best: above 1 it means generated points crowd where real ones are dense.
    Metric("density", "density", None, image=True),
    # Diagnostics, not quality, so nothing is marked best: a norm near 1 on average can hide
    # half the interpolates violating the bound, and a clipped critic with vanishing gradients
    # has no violations at all.
    Metric("interp_mean", "interp |grad|", None),
    Metric("violation_share", "violations", None, share=True),
    Metric("max_norm", "largest |grad|", None),
    Metric("wasserstein", "W1 estimate (Wasserstein critics)", None),
    Metric("s_per_step", "s / step", "min"),
    Metric("peak_memory_mb", "peak MiB", "min"),
)
_BY_NAME = {m.name: m for m in METRICS}


def base_name(key: str) -> str:
    """fid[inception] -> fid."""
    return key.split("[", 1)[0]


def metric(key: str) -> Metric | None:
    """The table's entry for a reported key (any feature space), None for an unknown one."""
    found = _BY_NAME.get(base_name(key))
    if found is None or (found.image != key.endswith("]")):
        return None
    return found


def direction_of(key: str) -> str | None:
    """Which way a metric is better ("max", "min" or "one"), None when neither is or it is unknown."""
    found = metric(key) or _BY_NAME.get(key)
    return found.better if found is not None else None


def ordered(keys: Iterable[str]) -> list[tuple[str, Metric]]:
    """The keys the table knows, in its order (image metrics by name, then feature space)."""
    known = [(k, metric(k)) for k in set(keys)]
    position = {m.name: i for i, m in enumerate(METRICS)}
    return sorted(((k, m) for k, m in known if m is not None), key=lambda km: (position[km[1].name], km[0]))


def find(values: Mapping[str, Any], name: str) -> str | None:
    """The key of `values` that reports metric `name` (itself, or name[space])."""
    return next((k for k in values if k == name or k.startswith(f"{name}[")), None)


# --- thresholds ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Threshold:
    flag: str  # --max-fid
    metric: str  # fid
    fails_above: bool  # --max-*: fails above the limit; --min-*: fails below it
    help: str


EVAL_THRESHOLDS = (
    Threshold("--max-fid", "fid", True, "Fail (exit 1) when FID is above this."),
    Threshold("--max-kid", "kid", True, "Fail when KID is above this."),
    Threshold("--min-is", "is", False, "Fail when the Inception Score is below this."),
    Threshold("--min-precision", "precision", False, "Fail when precision is below this."),
    Threshold("--min-recall", "recall", False, "Fail when recall is below this."),
    Threshold("--min-density", "density", False, "Fail when density is below this."),
    Threshold("--min-coverage", "coverage", False, "Fail when coverage is below this."),
    Threshold("--min-valid", "valid_share", False, "shapes: fail when the valid share is below this."),
    Threshold("--min-modes", "modes", False, "Fail when fewer modes are covered."),
    Threshold("--min-hq", "hq_share", False, "2-D: fail when the high-quality share is below this."),
    Threshold("--max-w1", "w1", True, "2-D: fail when W1 is above this."),
    Threshold(
        "--max-w1-bound",
        "w1_bound",
        True,
        "--w1-bound: fail when the certified W1 lower bound is above this (the generator is then certainly at least"
        " that far from the data).",
    ),
    Threshold("--min-class-consistency", "class_consistency", False, "Conditional: fail below this class consistency."),
    Threshold("--max-intra-fid", "intra_fid", True, "Conditional: fail when the intra-class FID is above this."),
    Threshold("--min-classes", "classes_covered", False, "--classifier: fail when fewer classes are covered."),
    Threshold("--max-class-kl", "class_kl", True, "--classifier: fail when the class histogram's KL is above this."),
    Threshold("--min-confident", "confident_share", False, "--classifier: fail below this confident share."),
    Threshold("--min-gan-test", "gan_test", False, "--classifier, conditional: fail below this GAN-test accuracy."),
    Threshold("--min-gan-train", "gan_train", False, "--classifier, conditional: fail below this GAN-train accuracy."),
    Threshold("--min-modes-covered", "modes_covered", False, "--classifier, stacked: fail when fewer are covered."),
    Threshold("--max-modes-kl", "modes_kl", True, "--classifier, stacked data: fail when KL to uniform is above this."),
    Threshold(
        "--max-copying",
        "nearer_seen",
        True,
        "Fail when the share of samples nearer a training image than an unseen one is above this (fresh real"
        " images: about 0.5; needs held-out images).",
    ),
)
GRADNORM_THRESHOLDS = (
    Threshold(
        "--max-violation", "violation_share", True, "Fail (exit 1) when the interpolates' violation share exceeds this."
    ),
    Threshold("--max-norm", "max_norm", True, "Fail when any measured norm exceeds this."),
    Threshold("--min-norm", "interp_mean", False, "Fail when the interpolates' mean norm is below this."),
)


def threshold(flag: str) -> Threshold:
    return next(t for t in (*EVAL_THRESHOLDS, *GRADNORM_THRESHOLDS) if t.flag == flag)


@dataclass
class Gate:
    """The limits a user set and the sentences of those broken, each with the numbers."""

    limits: dict[str, float] = field(default_factory=dict)
    broken: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.broken

    def to_dict(self) -> dict[str, Any]:
        return {"limits": dict(self.limits), "broken": list(self.broken), "passed": self.passed}


def check_limits(limits: Mapping[str, float | None], thresholds: Iterable[Threshold]) -> dict[str, float]:
    """The limits that were set, refusing a non-finite one."""
    given = {}
    for t in thresholds:
        value = limits.get(t.flag)
        if value is None:
            continue
        if not math.isfinite(value):
            raise ConfigError(f"{t.flag} must be a finite number, got {value}")
        given[t.flag] = float(value)
    return given


def gate(
    values: Mapping[str, Any],
    limits: Mapping[str, float | None],
    thresholds: Iterable[Threshold],
    where: str = "",
    into: Gate | None = None,
) -> Gate:
    """Check measured `values` against the set `limits` (by flag). A threshold on a metric that
    was not measured is bad input; a NaN breaks any threshold. `where` prefixes the sentences
    (a run's name); `into` collects several checks in one gate."""
    result = into if into is not None else Gate()
    thresholds = list(thresholds)
    for flag, limit in check_limits(limits, thresholds).items():
        t = next(t for t in thresholds if t.flag == flag)
        key = find(values, t.metric)
        if key is None:
            measured = ", ".join(values) or "nothing"
            raise ConfigError(f"{flag}: {t.metric} was not measured here (measured: {measured})")
        value = float(values[key])
        result.limits[flag] = limit
        if math.isnan(value) or (value > limit if t.fails_above else value < limit):
            relation = ">" if t.fails_above else "<"
            line = f"{key} {value:.6g} {relation} {flag} {limit} (by {abs(value - limit):.6g})"
            result.broken.append(f"{where}: {line}" if where else line)
    return result
