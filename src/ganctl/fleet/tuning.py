"""Equal-budget tuning (`ganctl compare --tune K`), after Lucic et al. 2018 ("Are GANs Created
Equal?"): every method gets the same number K of trials, each a setting drawn from the method's
own search space (its `search` in `ganctl.methods.registry.METHODS`) by a scrambled Halton sequence with a fixed
seed. Trials train on tuning seeds and are scored by one metric; the best setting is then
trained on fresh report seeds, which alone give the reported numbers, so nothing is reported on
the seeds it was tuned on.

Every trial and report run is an ordinary run folder, so a tuning resumes like `compare`:

    OUT/tune/<method>/trial-<k>-seed<s>/    the trials
    OUT/<method>-seed<s>/                   the chosen setting on each report seed
    OUT/tune.json, OUT/budget.png            trials, scores, choices and the budget curves
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import qmc

from ganctl.config import data_kind
from ganctl.errors import ConfigError
from ganctl.fileio import dumps, write_text_atomic
from ganctl.fleet import compare, jobs, report
from ganctl.fleet.executors import Placement, Runner
from ganctl.methods.registry import search_space
from ganctl.pictures import line_chart, save_image
from ganctl.quality.thresholds import direction_of
from ganctl.runfolder import RunFolder, RunLock
from ganctl.training.events import EventHandler, Summary, Warned

TUNE_SEED_BASE = 1000  # tuning seeds are 1000, 1001, ...: never a report seed
SEQUENCE_SEED = 0  # the Halton sequence's scrambling: the same trials on every call


def trials(method: str, k: int) -> list[dict[str, Any]]:
    """The method's K trial settings: K points of a scrambled Halton sequence over its space."""

    space = search_space(method)
    points = qmc.Halton(d=len(space), scramble=True, seed=SEQUENCE_SEED).random(k)
    return [{name: dim.pick(float(u)) for (name, dim), u in zip(space.items(), row)} for row in points]


def default_metric(data: str) -> tuple[str, str]:
    """What a trial is scored by, and which way is better: W1 on 2-D data (it counts missing
    modes and blur alike), the run's FID on images (its feature space in the name)."""
    return ("w1", "min") if data_kind(data) == "points" else ("fid", "min")


def _score(row: dict[str, Any], metric: str) -> float:
    key = next((k for k in row if k == metric or k.startswith(f"{metric}[")), None)
    if key is not None and row[key] is None:  # undefined in the run (NaN, written as null): the worst
        return math.inf
    if key is None or not isinstance(row[key], (int, float)):
        raise ConfigError(
            f"--tune-metric {metric}: the runs report no such number (they report: "
            f"{', '.join(k for k, v in row.items() if isinstance(v, (int, float)))})"
        )
    value = float(row[key])
    return value if math.isfinite(value) else math.inf


def _final(job: jobs.Job, device: str) -> dict[str, Any]:
    """A finished run's final evaluation: from its summary, else measured again."""
    summary = Summary.read(RunFolder(job.run_dir).summary_path)
    if summary is not None and summary.step == job.config.steps:
        return summary.final
    return report.measure_run(job.run_dir, device).row


@dataclass(frozen=True)
class Budget:
    """The same tuning budget for every method: `trials` settings, each trained on `seeds` tuning
    seeds and scored by `metric` (None: W1 on 2-D data, the run's FID on images)."""

    trials: int
    seeds: int = 1
    metric: str | None = None


@dataclass(frozen=True)
class Plan:
    """A tuning: every method's K trials on the tuning seeds, scored by `metric`, then each
    method's best trial on the report seeds."""

    base: dict[str, Any]
    methods: list[str]
    k: int
    tune_seeds: list[int]
    report_seeds: list[int]
    out: Path
    metric: str
    direction: str

    def trial_jobs(self, method: str) -> list[tuple[dict[str, Any], list[jobs.Job]]]:
        """(setting, its jobs on the tuning seeds) for each trial of `method`."""
        folder = self.out / "tune" / method
        return [
            (
                setting,
                [self.job(method, seed, setting, folder / f"trial-{i}-seed{seed}", i) for seed in self.tune_seeds],
            )
            for i, setting in enumerate(trials(method, self.k))
        ]

    def job(self, method: str, seed: int, setting: dict[str, Any], run_dir: Path, trial: int | str) -> jobs.Job:
        return jobs.Job(method, seed, run_dir, jobs.job_config(self.base, method, seed, setting), trial)

    @property
    def total(self) -> int:
        return len(self.methods) * (self.k * len(self.tune_seeds) + len(self.report_seeds))


def tune(
    base: dict[str, Any],
    methods: list[str],
    budget: Budget,
    report_seeds: list[int],
    out: Path,
    device: str = "cpu",
    on_event: EventHandler | None = None,
    placement: Placement | None = None,
) -> dict[str, Any]:
    """Tune every method within the same `budget`, train each one's best setting on
    `report_seeds`, and compare those runs as `ganctl compare` does. Every trial is planned
    first, so all of them can run at once (`placement`), then every report run."""
    k, metric = budget.trials, budget.metric
    if k < 1:
        raise ConfigError(f"--tune must be >= 1, got {k}")
    if budget.seeds < 1:
        raise ConfigError(f"--tune-seeds must be >= 1, got {budget.seeds}")
    seeds = [TUNE_SEED_BASE + i for i in range(budget.seeds)]
    if set(seeds) & set(report_seeds):
        raise ConfigError(f"report seeds {report_seeds} overlap the tuning seeds {seeds}: choose another --seed")
    base = {**base, "device": device}
    data = base.get("data") or "25gaussians"
    name, direction = (metric, direction_of(metric)) if metric else default_metric(data)
    if direction is None:
        raise ConfigError(f"--tune-metric {name}: has no better direction; choose a quality metric such as w1 or fid")
    placement = placement or Placement()
    placement.check()
    jobs.plan(base, methods, report_seeds, out)  # every method and setting checked before any training
    tuning = Plan(base, methods, k, seeds, report_seeds, Path(out), name, direction)
    with RunLock(tuning.out) as lock:  # one tuning writes into --out at a time (each run locks its own folder)
        if lock.note and on_event is not None:
            on_event(Warned(lock.note))
        return _tune(tuning, device, Runner(tuning.total, on_event, placement))


def _tune(tuning: Plan, device: str, runner: Runner) -> dict[str, Any]:
    started = time.perf_counter()
    planned = {m: tuning.trial_jobs(m) for m in tuning.methods}  # every trial's config checked first
    runner.run_all([job for m in tuning.methods for _, trial_jobs in planned[m] for job in trial_jobs])
    result: dict[str, Any] = {
        "metric": tuning.metric,
        "direction": tuning.direction,
        "trials": tuning.k,
        "tune_seeds": tuning.tune_seeds,
        "report_seeds": tuning.report_seeds,
        "methods": {m: _trials(tuning, planned[m], device) for m in tuning.methods},
    }
    report_jobs = [
        tuning.job(method, seed, result["methods"][method]["chosen"], tuning.out / f"{method}-seed{seed}", "report")
        for method in tuning.methods
        for seed in tuning.report_seeds
    ]
    reported = time.perf_counter()
    evaluated = [r.evaluated for r in runner.run_all(report_jobs, evaluate=True)]
    settings = {
        "base": tuning.base,
        "methods": tuning.methods,
        "seeds": tuning.report_seeds,
        "tune": tuning.k,
        "tune_seeds": tuning.tune_seeds,
    }
    compared = compare.side_by_side(evaluated, tuning.out, settings, reported)  # its seconds: the report runs
    for method, stats in compared["methods"].items():
        result["methods"][method]["report"] = stats
    result["seconds"] = round(time.perf_counter() - started, 3)
    compared["tuning"] = result
    folder = report.ComparisonFolder(tuning.out)
    write_text_atomic(folder.tune, dumps(result, indent=2, sort_keys=True) + "\n")
    report.write_json(compared, tuning.out)  # the table again, with the tuning in it
    _budget_curves(result, folder.budget)
    return compared


def _trials(tuning: Plan, planned: list[tuple[dict[str, Any], list[jobs.Job]]], device: str) -> dict[str, Any]:
    """Score one method's trained trials; its best trial and the best-so-far curve."""
    scored = []
    for i, (setting, trial_jobs) in enumerate(planned):
        values = [_score(_final(job, device), tuning.metric) for job in trial_jobs]
        scored.append({"trial": i, "setting": setting, "scores": values, "score": sum(values) / len(values)})
    sign = 1.0 if tuning.direction == "min" else -1.0
    best = min(scored, key=lambda t: sign * t["score"])
    running, curve = math.inf, []
    for t in scored:
        running = min(running, sign * t["score"])
        curve.append(sign * running)
    return {"trials": scored, "best_trial": best["trial"], "chosen": best["setting"], "best_so_far": curve}


def _budget_curves(result: dict[str, Any], path: Path) -> None:
    """Best-so-far score against the number of trials, one line per method (Lucic et al.'s
    budget curve)."""

    series = {
        m: (np.arange(1, len(r["best_so_far"]) + 1), np.array(r["best_so_far"])) for m, r in result["methods"].items()
    }
    better = "lower" if result["direction"] == "min" else "higher"
    save_image(path, line_chart(series, f"best {result['metric']} so far ({better} is better) against trials"))
