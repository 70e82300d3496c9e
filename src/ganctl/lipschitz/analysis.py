"""`ganctl gradnorm`'s report on a checkpoint: per point set (real, generated, interpolated and
noisy real points) the statistics of ||grad D||, per class for a conditional critic, both
Lipschitz bounds, the alignment with optimal transport, the certified W1 bound where one holds,
the verdict and its gates; trajectories over a run's checkpoints, and their pictures."""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from ganctl import memory, progress, streams
from ganctl.data import load_dataset, sample_shape
from ganctl.devices import resolve_device
from ganctl.errors import ConfigError, DataError
from ganctl.lipschitz.bounds import certified_w1_report, upper_bound_report
from ganctl.lipschitz.defaults import GRADNORM_N as DEFAULT_N
from ganctl.lipschitz.defaults import TOL as DEFAULT_TOL
from ganctl.lipschitz.defaults import TRAJECTORY_N
from ganctl.lipschitz.norms import QUANTILES, gradient_norms, summarise
from ganctl.lipschitz.transport import ALIGNMENT_PAIRS, alignment, empirical_lower_bound, optimal_coupling
from ganctl.methods import penalties
from ganctl.methods.losses import gap_stats
from ganctl.methods.registry import get_method
from ganctl.nets.augment import as_trained
from ganctl.nets.checkpoint import load
from ganctl.nets.networks import Networks
from ganctl.pictures import histograms, quantile_trajectories
from ganctl.runfolder import find_checkpoint, list_checkpoints


# --- the whole report -------------------------------------------------------------------
def verdict(interp: dict[str, float], tol: float, loss: str = "wasserstein") -> tuple[str, str]:
    """One word and a sentence for the interpolate norms. Unit norm on the transport paths is a
    property of the optimal critic of the Wasserstein loss only (Gulrajani et al. 2017,
    Proposition 1), so only a Wasserstein critic below it is said to under-use its bound."""
    if interp["vanishing"] > 0.5 or interp["q50"] < 1e-2:
        return "vanishing", f"median norm {interp['q50']:.3g}: the critic is nearly flat where the penalty looks"
    if interp["q50"] > 10.0:
        return "exploding", f"median norm {interp['q50']:.3g}: far above 1"
    if interp["above"] > 0.05:
        return "violating", f"{interp['above']:.1%} of interpolates have norm above 1 + {tol}"
    if interp["below"] > 0.5 and loss == "wasserstein":
        return (
            "under-using",
            f"{interp['below']:.1%} of interpolates have norm below 1 - {tol}: Lipschitz, but the optimal Wasserstein"
            " critic has unit norm on its transport paths",
        )
    if interp["below"] > 0.5:
        return (
            "inside the bound",
            f"{interp['below']:.1%} of interpolates have norm below 1 - {tol} (no unit-norm optimum applies to the"
            f" {loss} loss)",
        )
    return "within tolerance", f"{1 - interp['above'] - interp['below']:.1%} of interpolates within 1 +/- {tol}"


def _verdict(interp: dict[str, float], tol: float, cfg: Any) -> Verdict:
    status, detail = verdict(interp, tol, cfg.loss)
    return Verdict(status, detail, strength_note(status, cfg))  # type: ignore[arg-type]


def _one(_: object) -> int:
    return 1


class RealPoints(NamedTuple):
    x: Tensor  # (n, ...) on the networks' device
    y: Tensor | None  # their labels, for a conditional critic


def check_points(nets: Networks, n: int) -> None:
    """Each point set and its gradients are held at once (real, fake, interpolates, noise, and
    the norms' batches on top): refuse a count that cannot fit before drawing any of them."""
    values = math.prod(sample_shape(nets.cfg))
    memory.require(6 * n * values * memory.FLOAT, f"--n {n}: {n:,} points of {values:,} values a set", str(nets.device))


def real_points(nets: Networks, n: int, seed: int = 0, data: str | None = None) -> RealPoints:
    """n real points on the networks' device (with their labels for a conditional run), from a
    stream seeded by `seed`: from the checkpoint's own data, or from `data` (any `--data` value)
    when given, which must have the critic's input shape (and its classes)."""

    check_points(nets, n)
    g = torch.Generator(device=nets.device)
    g.manual_seed(seed)
    source = nets.dataset if data is None else load_dataset(dataclasses.replace(nets.cfg, data=data))
    if nets.cfg.conditional:
        if source.classes.count != nets.cfg.num_classes:
            raise DataError(
                f"--data {data}: {source.classes.count} classes, but this critic takes {nets.cfg.num_classes}"
            )
        points = RealPoints(*source.sample_labelled(n, g, nets.device))
    else:
        points = RealPoints(source.sample(n, g, nets.device), None)
    expected = sample_shape(nets.cfg)
    if tuple(points.x.shape[1:]) != expected:
        raise DataError(
            f"--data {data}: its points have shape {tuple(points.x.shape[1:])}, but this critic takes {expected}"
            f" (the checkpoint was trained on {nets.cfg.data})"
        )
    return points


@dataclass(frozen=True)
class Measure:
    """How `ganctl gradnorm` measures a checkpoint: points per set, seed, tolerance, which
    generator, real points from other data, and the noise of an extra set around real points."""

    n: int = DEFAULT_N
    seed: int = 0
    tol: float = DEFAULT_TOL
    raw: bool = False
    data: str | None = None
    noise_std: float | None = None


Status = Literal["vanishing", "exploding", "violating", "under-using", "inside the bound", "within tolerance"]


@dataclass(frozen=True)
class Verdict:
    status: Status  # one word for the interpolate norms
    detail: str  # the sentence behind it, with its numbers
    note: str | None = None  # why a run's own settings give this verdict, where they explain it


def strength_note(status: str, cfg: Any) -> str | None:
    """A gradient-penalty critic over its bound, when the run's penalty is weaker than the
    paper's: the verdict is what that weight allows, not a broken run. WGAN-GP's 2-D default is
    its toy code's lambda 0.1 (gan_toy.py: "Smaller lambda makes things faster for toy tasks",
    added as LAMBDA * mean((||grad|| - 1)^2), as here), a hundredth of the 10 of its image
    models; with it the critic's norm rises above 1."""
    method = get_method(cfg.lipschitz)
    if status not in ("violating", "exploding") or "gp_target" not in method.owns or cfg.penalty_weight is None:
        return None  # only a penalty towards a unit norm (WGAN-GP's) is weakened into exceeding it
    paper = method.recipe.penalty_weight
    if paper is None or cfg.penalty_weight >= paper:
        return None
    return (
        f"this critic was trained with lambda {cfg.penalty_weight:g}, weaker than WGAN-GP's {paper:g} on images:"
        f" a weak penalty lets the norm leave 1 (on 2-D data lambda 0.1 is WGAN-GP's toy code, gan_toy.py, chosen"
        f" there for speed); train with --lambda {paper:g} to hold the critic near norm 1"
    )


@dataclass(frozen=True)
class LowerBound:
    """An empirical lower bound on the critic's Lipschitz constant: the largest difference
    quotient over the measured pairs and the largest input-gradient norm seen."""

    pairs: float
    max_grad_norm: float
    value: float


@dataclass
class Report:
    """`ganctl gradnorm`'s report on one checkpoint (`to_dict` is its --json): per point set the
    statistics of ||grad D|| (`summarise`'s), per class for a conditional critic, the critic's
    gap, transport alignment, both Lipschitz bounds, the certified W1 lower bound where one
    holds, and the verdict."""

    n: int
    seed: int
    tol: float
    step: int
    generator: Literal["ema", "raw"]
    sets: dict[str, dict[str, float]]  # real, fake, interp (and real+noise): summarise()'s statistics
    critic_gap: float
    alignment: dict[str, Any]
    lower_bound: LowerBound
    verdict: Verdict
    seconds: float
    wasserstein: float | None = None  # the gap read as a W1 estimate: Wasserstein critics only
    classes: dict[str, dict[str, dict[str, float]]] | None = None  # a conditional critic's, per class
    upper_bound: dict[str, Any] | None = None  # value, certified, method, per-layer table
    w1_lower_bound: dict[str, Any] | None = None  # a certified critic's only
    checkpoint: str | None = None  # what the command measured, and its gate
    data: str | None = None
    thresholds: dict[str, Any] | None = None
    augment: dict[str, Any] | None = None  # a run that augments: measured through its policy at probability p

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON; a field that does not apply (None) is left out."""

        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None or k == "w1_lower_bound"}


@dataclass
class Analysis:
    """`analyse`'s result: the report (plain data, what --json prints) and the norms behind its
    per-set statistics (tensors, for histograms)."""

    report: Report
    norms: dict[str, Tensor]

    def gate_values(self) -> dict[str, float]:
        return gate_values(self.report)


def gate_values(report: Report) -> dict[str, float]:
    """The numbers of a report that the CI thresholds judge (`ganctl.quality.thresholds.GRADNORM_THRESHOLDS`):
    the interpolates' violation share and mean norm, and the largest norm of any set."""
    sets = report.sets
    return {
        "violation_share": sets["interp"]["above"],
        "max_norm": max(s["max"] for s in sets.values()),
        "interp_mean": sets["interp"]["mean"],
    }


def analyse(
    nets: Networks,
    n: int = DEFAULT_N,
    seed: int = 0,
    tol: float = DEFAULT_TOL,
    raw: bool = False,
    noise_std: float | None = None,
    real: RealPoints | None = None,
    bounds: bool = True,
) -> Analysis:
    """The full report for a checkpoint's networks (`ganctl.load`) or a trainer: per point set
    statistics (and per class, for a conditional critic, whose every point is taken at its
    label), bounds, alignment, verdict, and the time it took."""
    started = time.perf_counter()
    device = nets.device
    check_points(nets, n)
    real = real if real is not None else real_points(nets, n, seed)
    x, y = real.x[:n].to(device), real.y[:n].to(device) if real.y is not None else None
    g = torch.Generator(device=device)  # latents, interpolation and noise: a stream apart from
    g.manual_seed(seed + streams.ANALYSIS_FAKE)  # the real points', so passing `real` in changes nothing else
    n = len(x)
    fake = nets.sample(n, g, raw=raw, labels=y)  # a conditional generator draws the real points' classes
    sets = {"real": x, "fake": fake, "interp": penalties.interpolate(x, fake, g)}
    if noise_std:
        sets["real+noise"] = x + noise_std * torch.randn(x.shape, generator=g, device=device)
    norms_by_set, values_by_set, stats = {}, {}, {}
    # A run that augments is measured as it trains: through its augmentation, at its current
    # probability, with respect to the un-augmented points (the penalties' convention).
    seen = as_trained(nets.critic, nets.augment, g)
    for name, points in progress.counted(sets.items(), f"gradient norms at {n:,} points a set", len(sets), _one):
        values_by_set[name], norms_by_set[name] = gradient_norms(seen, points, y=y)
        stats[name] = summarise(norms_by_set[name], tol)
    gap = gap_stats(float(values_by_set["real"].double().mean() - values_by_set["fake"].double().mean()), nets.cfg.loss)
    pair_bound = empirical_lower_bound(nets.critic, x, fake, y)
    largest = max(float(v.max()) for v in norms_by_set.values())
    report = Report(
        n=n,
        seed=seed,
        tol=tol,
        step=nets.step,
        generator="raw" if raw or nets.ema is None else "ema",
        sets=stats,
        critic_gap=gap["critic_gap"],
        wasserstein=gap.get("wasserstein"),  # on these points
        classes=_by_class(nets, norms_by_set, y, tol) if y is not None else None,
        alignment=_alignment_summary(nets.critic, x, fake, g, y),
        lower_bound=LowerBound(pair_bound, largest, max(pair_bound, largest)),
        verdict=_verdict(stats["interp"], tol, nets.cfg),
        seconds=0.0,
    )
    if bounds:
        report.upper_bound = upper_bound_report(nets.critic, tuple(x.shape[1:]), device, nets.cfg.conditional)
        if report.upper_bound["certified"]:  # how far below its certificate the critic was measured
            bound = report.upper_bound["value"]
            report.upper_bound["largest_norm"] = largest
            report.upper_bound["margin"] = bound - largest
            report.upper_bound["median_share"] = {k: v["q50"] / bound for k, v in stats.items()}
        report.w1_lower_bound = certified_w1_report(nets, x, fake, report.upper_bound)
    if seen is not nets.critic:  # the bound of what was measured, D o T: the critic's times T's
        factor = nets.augment.augment.lipschitz_factor(int(x.shape[1]))
        report.augment = {"policy": nets.cfg.augment, "p": nets.augment.p, "lipschitz_factor": factor}
        if report.upper_bound is not None and report.upper_bound["value"] is not None:  # None: no finite bound
            report.augment["upper_bound"] = report.upper_bound["value"] * factor
    report.seconds = round(time.perf_counter() - started, 3)
    return Analysis(report, norms_by_set)


def _by_class(nets: Networks, norms: dict[str, Tensor], y: Tensor, tol: float) -> dict[str, Any]:
    """Each class's statistics per point set (its points, and its fakes and interpolates)."""
    out = {}
    for k, name in enumerate(nets.class_names):
        mask = y == k
        if mask.any():
            out[name] = {s: summarise(v[mask], tol) for s, v in norms.items()}
    return out


def _alignment_summary(
    critic: nn.Module, real: Tensor, fake: Tensor, g: torch.Generator, y: Tensor | None = None
) -> dict[str, Any]:
    """`alignment` on the first ALIGNMENT_PAIRS points, paired by the optimal coupling (for a
    conditional critic, within each class: the real and fake of a pair share a label)."""
    k = min(len(real), ALIGNMENT_PAIRS)
    if y is None:
        cos = alignment(critic, real[:k], fake[:k][optimal_coupling(real[:k], fake[:k])], g)
    else:
        perm = torch.arange(k, device=fake.device)
        for label in y[:k].unique():
            idx = (y[:k] == label).nonzero().squeeze(1)
            perm[idx] = idx[optimal_coupling(real[idx], fake[idx])]
        cos = alignment(critic, real[:k], fake[perm], g, y[:k])
    q = torch.quantile(cos.double().cpu(), torch.tensor(QUANTILES, dtype=torch.float64))
    return {
        "pairs": k,
        "coupling": "optimal",
        "mean": float(cos.mean()),
        **{f"q{round(p * 100):02d}": float(v) for p, v in zip(QUANTILES, q)},
    }


def trajectory(run: Path, measure: Measure = Measure(), device: str = "cpu") -> list[Report]:
    """`analyse` at every checkpoint of a run (a run folder, or one checkpoint file), in step
    order, on the same real points, latents and interpolation coefficients throughout. Each
    row keeps the upper bound's value, not its per-layer table."""

    run = Path(run)
    paths = list_checkpoints(run) if run.is_dir() else []
    if not paths:
        paths = [find_checkpoint(run)]  # a file, or a clear error for a folder with none
    rows, real = [], None
    m = measure
    for path in progress.counted(paths, f"checkpoints of {run}", len(paths), _one):
        nets = load(path, device=device)
        if real is None:
            real = real_points(nets, m.n, m.seed, m.data)
        report = analyse(nets, n=m.n, seed=m.seed, tol=m.tol, raw=m.raw, noise_std=m.noise_std, real=real).report
        report.upper_bound.pop("layers")
        report.checkpoint = str(path)
        rows.append(report)
    return rows


def draw_histograms(path: Path, norms: dict[str, Tensor], step: int) -> None:
    """The per-set norm histograms of one checkpoint, overlaid, as a PNG."""

    histograms(path, {k: v.cpu().numpy() for k, v in norms.items()}, f"||grad D||  step {step}")


def draw_trajectories(path: Path, runs: dict[str, list[Report]]) -> None:
    """The interpolate-norm quantiles of every run's checkpoints against step, as a PNG."""

    series = {
        name: {
            "step": np.array([r.step for r in rows]),
            **{q: np.array([r.sets["interp"][q] for r in rows]) for q in ("q05", "q50", "q95")},
        }
        for name, rows in runs.items()
    }
    title = "||grad D(x_hat)|| at interpolates, by step: median (thick), q05 and q95 (thin)"
    quantile_trajectories(path, series, title)


# --- ganctl.grad_norms --------------------------------------------------------------------------
def _measure(
    n: int | None, default: int, seed: int, tol: float, raw: bool, data: str | None, noise: float | None
) -> Measure:
    """The measurement asked, checked before any checkpoint is read."""
    if n is not None and n <= 0:
        raise ConfigError(f"--n must be > 0, got {n}")
    if not (tol >= 0 and math.isfinite(tol)):
        raise ConfigError(f"--tol must be a finite number >= 0, got {tol}")
    if noise is not None and not (noise > 0 and math.isfinite(noise)):
        raise ConfigError(f"--noise must be a finite number > 0, got {noise}")
    return Measure(n or default, seed, tol, raw, data, noise)


def grad_norms(
    checkpoint: str | Path,
    *,
    n: int | None = None,
    seed: int = 0,
    tol: float = DEFAULT_TOL,
    raw: bool = False,
    data: str | None = None,
    noise: float | None = None,
    device: str = "cpu",
) -> Analysis:
    """How Lipschitz a checkpoint's critic is (a checkpoint file, or a run folder's newest):
    ||grad_x D(x)|| on n real points (from its data, or `data`), as many generated ones (the EMA
    generator unless `raw`), the interpolates between them, and with `noise` real points plus
    N(0, noise^2), with the bounds, the alignment with optimal transport, the certified W1 bound
    where one holds, and the verdict (`tol`: norms above 1 + tol violate). The report and, for
    pictures, the norms themselves (`Analysis`); `Analysis.gate_values()` feeds the thresholds.

    This is `ganctl gradnorm CKPT`: the command parses its options, calls this, and prints."""

    m = _measure(n, DEFAULT_N, seed, tol, raw, data, noise)
    nets = load(checkpoint, device=str(resolve_device(device)))
    real = real_points(nets, m.n, m.seed, m.data) if m.data is not None else None
    analysis = analyse(nets, n=m.n, seed=m.seed, tol=m.tol, raw=m.raw, noise_std=m.noise_std, real=real)
    analysis.report.checkpoint, analysis.report.data = str(nets.path), m.data or nets.cfg.data
    return analysis


def grad_norm_trajectory(
    run: str | Path,
    *,
    n: int | None = None,
    seed: int = 0,
    tol: float = DEFAULT_TOL,
    raw: bool = False,
    data: str | None = None,
    noise: float | None = None,
    device: str = "cpu",
) -> list[Report]:
    """`grad_norms` at every checkpoint of a run folder, in step order, on the same real points,
    latents and interpolation coefficients (n 1024 per set unless given): how Lipschitz the
    critic was over training. This is `ganctl gradnorm RUN`."""

    m = _measure(n, TRAJECTORY_N, seed, tol, raw, data, noise)
    return trajectory(Path(run), m, str(resolve_device(device)))
