"""What a comparison reports: every run evaluated the same way, the numbers aggregated over
seeds with the best marked, and the files (compare.json, compare.csv, panel.png, curves.png).

Which way each number is better is `ganctl.quality.thresholds`'s table; the runs come from `ganctl.fleet.jobs`
or from the user's own folders.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ganctl.fileio import dumps, write_text_atomic
from ganctl.lipschitz.analysis import analyse
from ganctl.nets import checkpoint
from ganctl.pictures import histograms, line_chart, save_image, stack
from ganctl.quality import thresholds as metrics
from ganctl.runfolder import RunFolder, run_dir_of
from ganctl.training.evaluator import Evaluator
from ganctl.training.events import Summary

# The evaluator's own gradient-norm summary (512 points per eval step) is left out of a row:
# the row's gradient columns are `ganctl gradnorm`'s, at its defaults (4096 points).
_EVALUATOR_GRADNORM = ("gradnorm_mean", "gradnorm_q50", "violation_share", "vanishing_share")


@dataclass
class Evaluated:
    """One run's row of the comparison, and its pictures (samples, gradient-norm histograms)
    when they were drawn."""

    row: dict[str, Any]
    pictures: tuple[Image.Image, Image.Image] | None = None


def measure_run(path: Path, device: str = "cpu", pictures: bool = False) -> Evaluated:
    """Everything compared about one run (or checkpoint): the data's quality metrics as the
    run's own final evaluation computes them, `ganctl gradnorm`'s numbers at its defaults, and
    the training cost from the run's summary (or, without one, from its log)."""

    nets = checkpoint.load(Path(path), device=device)
    run_dir = run_dir_of(nets.path)
    cfg = nets.cfg
    row: dict[str, Any] = {
        "run": str(run_dir),
        "checkpoint": str(nets.path),
        "method": cfg.lipschitz,
        "seed": cfg.seed,
        "data": cfg.data,
        "step": nets.step,
        "critic_steps": nets.critic_steps,
    }
    evaluator = Evaluator(nets)
    row.update({k: v for k, v in evaluator.measure().items() if k not in _EVALUATOR_GRADNORM})
    # `ganctl gradnorm`'s defaults, so the numbers are the ones it prints; without its bounds, which the
    # row does not show (the certified W1 bound takes an exact W1 of 2048 pairs: 4 s a run)
    analysis = analyse(nets, bounds=False)
    report, interp = analysis.report, analysis.report.sets["interp"]
    row.update(
        {
            "interp_mean": interp["mean"],
            "interp_q50": interp["q50"],
            "violation_share": interp["above"],
            "vanishing_share": interp["vanishing"],
            "critic_gap": report.critic_gap,
            **({"wasserstein": report.wasserstein} if report.wasserstein is not None else {}),
            "alignment_mean": report.alignment["mean"],
            "verdict": report.verdict.status,
            **({"verdict_note": report.verdict.note} if report.verdict.note else {}),
        }
    )
    row.update(_cost(run_dir, nets.step))
    if not pictures:
        return Evaluated(row)

    norms = {k: v.cpu().numpy() for k, v in analysis.norms.items()}
    drawn = (
        evaluator.draw(None, f"{cfg.lipschitz}  seed {cfg.seed}  step {nets.step}"),
        histograms(None, norms, f"{cfg.lipschitz}: ||grad D|| (interp mean {interp['mean']:.3g})"),
    )
    return Evaluated(row, drawn)


def _cost(run_dir: Path, step: int) -> dict[str, Any]:
    folder = RunFolder(run_dir)
    summary = Summary.read(folder.summary_path)
    if summary is not None and summary.step == step:
        return {"s_per_step": summary.s_per_step, "peak_memory_mb": summary.peak_memory_mb}
    # An existing run: the log's elapsed time since its (last) start, per step logged since.
    records = folder.read_metrics()
    timed = [r for r in records if "elapsed_s" in r]
    if len(timed) >= 2:
        a, b = timed[0], timed[-1]
        if b["elapsed_s"] > a["elapsed_s"] and b["step"] > a["step"]:
            return {"s_per_step": (b["elapsed_s"] - a["elapsed_s"]) / (b["step"] - a["step"]), "peak_memory_mb": None}
    return {"s_per_step": None, "peak_memory_mb": None}


def columns(keys: Any) -> list[tuple[str, str, str | None]]:
    """(key, label, which way is better) for the reported keys, in `ganctl.quality.thresholds`'s order;
    an image metric is labelled with its name and feature space."""
    return [(k, k if m.image else m.label, m.better) for k, m in metrics.ordered(keys)]


def aggregate(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per method: every numeric column's mean and sample standard deviation over seeds
    (0 for one seed), and the seeds."""
    by_method: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_method.setdefault(row["method"], []).append(row)
    result = {}
    for method, group in by_method.items():
        stats: dict[str, Any] = {"seeds": [r["seed"] for r in group], "runs": len(group)}
        keys = [k for k in group[0] if isinstance(group[0][k], (int, float)) and not isinstance(group[0][k], bool)]
        for key in keys:
            values = [float(r[key]) for r in group if isinstance(r.get(key), (int, float))]
            if len(values) != len(group):
                continue
            mean = sum(values) / len(values)
            std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
            stats[key] = {"mean": mean, "std": std}
        result[method] = stats
    return result


def best(methods: dict[str, dict[str, Any]]) -> dict[str, list[str]]:
    """For each column with a direction, the method(s) with the best mean."""
    marks: dict[str, list[str]] = {}
    for key, _, direction in columns(k for s in methods.values() for k in s):
        scored = {m: s[key]["mean"] for m, s in methods.items() if key in s}
        if direction is None or len(scored) < 2:
            continue
        score = {"max": lambda v: -v, "min": lambda v: v, "one": lambda v: abs(v - 1.0)}[direction]
        top = min(score(v) for v in scored.values())
        marks[key] = [m for m, v in scored.items() if score(v) == top]
    return marks


# --- outputs ------------------------------------------------------------------------------
CSV_FIRST = ("method", "seed", "run", "step", "critic_steps")


@dataclass(frozen=True)
class ComparisonFolder:
    """What a comparison writes into its --out, beside one run folder per job: this class
    alone knows the names (`ganctl.runfolder` knows a run folder's)."""

    path: Path

    json = property(lambda self: self.path / "compare.json")
    csv = property(lambda self: self.path / "compare.csv")
    panel = property(lambda self: self.path / "panel.png")  # samples and gradient-norm histograms
    curves = property(lambda self: self.path / "curves.png")  # training curves
    tune = property(lambda self: self.path / "tune.json")  # with --tune: trials, scores, choices
    budget = property(lambda self: self.path / "budget.png")  # with --tune: best score against trials

    def files(self, tuned: bool) -> list[Path]:
        return [self.json, self.csv, self.panel, self.curves, *((self.tune, self.budget) if tuned else ())]


def write_json(result: dict[str, Any], out: Path) -> None:
    write_text_atomic(ComparisonFolder(out).json, dumps(result, indent=2, sort_keys=True) + "\n")


def write_outputs(result: dict[str, Any], evaluated: list[Evaluated], out: Path) -> None:
    """The comparison's table (JSON and CSV), panel and curves in `out` (`ComparisonFolder`)."""

    out.mkdir(parents=True, exist_ok=True)
    folder = ComparisonFolder(out)
    rows = result["runs"]
    write_json(result, out)
    keys = list(CSV_FIRST) + sorted({k for row in rows for k in row} - set(CSV_FIRST))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=keys, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in keys})
    write_text_atomic(folder.csv, buffer.getvalue())
    _panel(evaluated, folder.panel)
    _curves(rows, folder.curves)


def _panel(evaluated: list[Evaluated], path: Path) -> None:
    """A column per method (its first seed): samples above the gradient-norm histograms."""

    first: dict[str, Evaluated] = {}
    for e in evaluated:
        method, seed = e.row["method"], e.row["seed"]
        if e.pictures is not None and (method not in first or seed < first[method].row["seed"]):
            first[method] = e
    if not first:
        return
    shown = []
    for e in first.values():
        picture, hist = e.pictures
        picture = picture.resize((360, round(picture.height * 360 / picture.width)))
        shown.append(stack([picture, hist.resize((360, round(hist.height * 360 / hist.width)))]))
    save_image(path, stack(shown, vertical=False, pad=10))


def _curves(rows: list[dict[str, Any]], path: Path) -> None:
    """The critic's Wasserstein estimate and the data's main quality metric against step, one
    line per method (the mean over its seeds at the steps they share)."""

    by_method: dict[str, list[list[dict[str, Any]]]] = {}
    for row in rows:
        by_method.setdefault(row["method"], []).append(RunFolder(row["run"]).read_metrics())
    logged = {k for logs in by_method.values() for log in logs for r in log for k in r}
    titles = {
        "critic_gap": "E[D(real)] - E[D(fake)] (a W1 estimate for Wasserstein critics only)",
        "eval/w1": "W1 to the data (lower is better)",
        "eval/valid_share": "valid share (shapes judge)",
    }
    titles.update({k: f"{k[5:]} (lower is better)" for k in sorted(logged) if k.startswith("eval/fid[")})
    charts = []
    for key, title in titles.items():
        if key not in logged:
            continue
        series = {}
        for method, logs in by_method.items():
            per_seed = [{r["step"]: r[key] for r in log if r.get(key) is not None} for log in logs]
            steps = sorted(set.intersection(*(set(d) for d in per_seed))) if per_seed else []
            if steps:
                series[method] = (np.array(steps), np.array([np.mean([d[s] for d in per_seed]) for s in steps]))
        if series:
            charts.append(line_chart(series, title))
    if charts:
        save_image(path, stack(charts))
