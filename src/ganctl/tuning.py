"""Equal-budget tuning (`ganctl compare --tune K`), after Lucic et al. 2018 ("Are GANs Created
Equal?"): every method gets the same number K of trials, each a setting drawn from the method's
own search space (its `search` in `ganctl.recipes.METHODS`) by a scrambled Halton sequence with a fixed
seed. Trials train on tuning seeds and are scored by one metric; the best setting is then
trained on fresh report seeds, which alone give the reported numbers, so nothing is reported on
the seeds it was tuned on.

Every trial and report run is an ordinary run folder, so a tuning resumes like `compare`:

    OUT/tune/<method>/trial-<k>-seed<s>/    the trials
    OUT/<method>-seed<s>/                   the chosen setting on each report seed
    OUT/tune.json, OUT/budget.png            trials, scores, choices and the budget curves
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ganctl import compare
from ganctl.config import data_kind, from_dict
from ganctl.errors import ConfigError
from ganctl.fileio import write_text_atomic
from ganctl.recipes import METHOD_SETTINGS, get_method, resolve, search_space, setting_values
from ganctl.runfolder import RunLock

TUNE_SEED_BASE = 1000  # tuning seeds are 1000, 1001, ...: never a report seed
SEQUENCE_SEED = 0  # the Halton sequence's scrambling: the same trials on every call


def trials(method: str, k: int) -> list[dict[str, Any]]:
    """The method's K trial settings: K points of a scrambled Halton sequence over its space."""
    from scipy.stats import qmc

    space = search_space(method)
    points = qmc.Halton(d=len(space), scramble=True, seed=SEQUENCE_SEED).random(k)
    return [{name: dim.pick(float(u)) for (name, dim), u in zip(space.items(), row)} for row in points]


def default_metric(data: str) -> tuple[str, str]:
    """What a trial is scored by, and which way is better: W1 on 2-D data (it counts missing
    modes and blur alike), the run's FID on images (its feature space in the name)."""
    return ("w1", "min") if data_kind(data) == "points" else ("fid", "min")


def _score(row: dict[str, Any], metric: str) -> float:
    key = next((k for k in row if k == metric or k.startswith(f"{metric}[")), None)
    if key is None or not isinstance(row[key], (int, float)):
        raise ConfigError(
            f"--tune-metric {metric}: the runs report no such number (they report: "
            f"{', '.join(k for k, v in row.items() if isinstance(v, (int, float)))})"
        )
    value = float(row[key])
    return value if math.isfinite(value) else math.inf


def _final(job: compare.Job, device: str) -> dict[str, Any]:
    """A finished run's final evaluation: from its summary, else measured again."""
    from ganctl.runfolder import RunFolder

    summary = RunFolder(job.run_dir).read_summary()
    if summary is not None and summary.get("step") == job.config.steps:
        return summary["final"]
    return compare.evaluate(job.run_dir, device)


def _jobs(
    base: dict[str, Any], method: str, setting: dict[str, Any], seeds: list[int], folder: Callable[[int], Path]
) -> list[compare.Job]:
    own = {k: v for k, v in base.items() if k not in METHOD_SETTINGS or k in get_method(method).owns}
    jobs = []
    for seed in seeds:
        config = from_dict({**own, **setting_values(setting), "lipschitz": method, "seed": seed}, where="tune")
        resolve(config)
        jobs.append(compare.Job(method, seed, folder(seed), config))
    return jobs


def tune(
    base: dict[str, Any],
    methods: list[str],
    k: int,
    tune_seeds: int,
    report_seeds: list[int],
    out: Path,
    device: str = "cpu",
    metric: str | None = None,
    on_event: Callable[[str, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Tune every method with K trials on `tune_seeds` seeds, train each one's best setting on
    `report_seeds`, and compare those runs as `ganctl compare` does."""
    emit = on_event or (lambda kind, payload: None)
    if k < 1:
        raise ConfigError(f"--tune must be >= 1, got {k}")
    if tune_seeds < 1:
        raise ConfigError(f"--tune-seeds must be >= 1, got {tune_seeds}")
    seeds = [TUNE_SEED_BASE + i for i in range(tune_seeds)]
    if set(seeds) & set(report_seeds):
        raise ConfigError(f"report seeds {report_seeds} overlap the tuning seeds {seeds}: choose another --seed")
    base = {**base, "device": device}
    data = base.get("data") or "25gaussians"
    name, direction = (metric, compare.direction_of(metric)) if metric else default_metric(data)
    if direction is None:
        raise ConfigError(f"--tune-metric {name}: has no better direction; choose a quality metric such as w1 or fid")
    compare.plan(base, methods, report_seeds, out)  # every method and setting checked before any training
    out = Path(out)
    with RunLock(out) as lock:  # one tuning writes into --out at a time (each run locks its own folder)
        if lock.note:
            emit("warning", {"message": lock.note})
        return _tune(base, methods, k, seeds, report_seeds, out, device, name, direction, emit, on_event)


def _tune(
    base: dict[str, Any],
    methods: list[str],
    k: int,
    seeds: list[int],
    report_seeds: list[int],
    out: Path,
    device: str,
    name: str,
    direction: str,
    emit: Callable[..., None],
    on_event: Callable[[str, dict[str, Any]], None] | None,
) -> dict[str, Any]:
    started = time.perf_counter()
    plans = {
        m: [
            (s, _jobs(base, m, s, seeds, lambda seed, m=m, i=i: out / "tune" / m / f"trial-{i}-seed{seed}"))
            for i, s in enumerate(trials(m, k))
        ]
        for m in methods
    }
    total = sum(len(jobs) for per_method in plans.values() for _, jobs in per_method) + len(methods) * len(report_seeds)
    done = 0
    result: dict[str, Any] = {
        "metric": name,
        "direction": direction,
        "trials": k,
        "tune_seeds": seeds,
        "report_seeds": report_seeds,
        "methods": {},
    }

    def run(job: compare.Job, trial: int | str) -> None:
        nonlocal done
        state = compare.status(job)
        emit(
            "job",
            {
                "index": done,
                "total": total,
                "method": job.method,
                "seed": job.seed,
                "run_dir": str(job.run_dir),
                "state": state,
                "trial": trial,
            },
        )
        compare.run_job(job, on_event, state)
        done += 1

    for method, per_method in plans.items():
        scored = []
        for i, (setting, jobs) in enumerate(per_method):
            values = []
            for job in jobs:
                run(job, i)
                values.append(_score(_final(job, device), name))
            scored.append({"trial": i, "setting": setting, "scores": values, "score": sum(values) / len(values)})
        sign = 1.0 if direction == "min" else -1.0
        best = min(scored, key=lambda t: sign * t["score"])
        running, curve = math.inf, []
        for t in scored:
            running = min(running, sign * t["score"])
            curve.append(sign * running)
        result["methods"][method] = {
            "trials": scored,
            "best_trial": best["trial"],
            "chosen": best["setting"],
            "best_so_far": curve,
        }
    report_dirs = []
    for method in methods:
        chosen = result["methods"][method]["chosen"]
        for job in _jobs(base, method, chosen, report_seeds, lambda seed, m=method: out / f"{m}-seed{seed}"):
            run(job, "report")
            report_dirs.append(job.run_dir)
    settings = {"base": base, "methods": methods, "seeds": report_seeds, "tune": k, "tune_seeds": seeds}
    report = compare.compare_runs(report_dirs, device=device, out=out, settings=settings)
    for method, stats in report["methods"].items():
        result["methods"][method]["report"] = stats
    result["seconds"] = round(time.perf_counter() - started, 3)
    report["tuning"] = result
    write_text_atomic(out / "tune.json", json.dumps(result, indent=2, sort_keys=True) + "\n")
    write_text_atomic(out / "compare.json", json.dumps(compare.plain(report), indent=2, sort_keys=True) + "\n")
    _budget_curves(result, out / "budget.png")
    return report


def _budget_curves(result: dict[str, Any], path: Path) -> None:
    """Best-so-far score against the number of trials, one line per method (Lucic et al.'s
    budget curve)."""
    import numpy as np

    from ganctl.render import line_chart, save_image

    series = {
        m: (np.arange(1, len(r["best_so_far"]) + 1), np.array(r["best_so_far"])) for m, r in result["methods"].items()
    }
    better = "lower" if result["direction"] == "min" else "higher"
    save_image(path, line_chart(series, f"best {result['metric']} so far ({better} is better) against trials"))
