"""Lipschitz methods side by side: the same data, seeds and generator budget for every method,
each run an ordinary run folder, every run evaluated the same way.

Each method keeps its published recipe (`ganctl.lipschitz`) for whatever the caller does not
set for all; settings given in `base` apply to every run. A run counts as finished when its
folder holds a checkpoint at the requested step; an unfinished one is resumed from its latest
checkpoint, so an interrupted comparison picks up where it stopped.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ganctl import checkpoint
from ganctl.config import SCHEDULE_FIELDS, TrainConfig, flag_of, from_dict
from ganctl.errors import CheckpointError, ConfigError
from ganctl.fileio import write_text_atomic
from ganctl.recipes import METHOD_SETTINGS, get_method, resolve
from ganctl.runfolder import RunFolder, RunLock, run_dir_of

# (key, label, which value is best: "max", "min", "one" (closest to 1) or None)
COLUMNS = (
    ("modes", "modes", "max"),
    ("hq_share", "high-quality", "max"),
    ("valid_share", "valid", "max"),
    ("w1", "W1", "min"),
    # Diagnostics, not quality, so nothing is marked best: a norm near 1 on average can hide
    # half the interpolates violating the bound, and a clipped critic with vanishing gradients
    # has no violations at all.
    ("interp_mean", "interp |grad|", None),
    ("violation_share", "violations", None),
    ("wasserstein", "W1 estimate (Wasserstein critics)", None),
    ("s_per_step", "s / step", "min"),
    ("peak_memory_mb", "peak MiB", "min"),
)
# Image metrics, named with their feature space (fid[random-conv], ...): which way is better.
# Density has no best: above 1 it means generated points crowd where real ones are dense.
IMAGE_METRICS = {"fid": "min", "kid": "min", "precision": "max", "recall": "max", "coverage": "max", "density": None}


def direction_of(metric: str) -> str | None:
    """Which way a metric is better ("min" or "max"), None when neither is."""
    if metric in IMAGE_METRICS:
        return IMAGE_METRICS[metric]
    return next((d for k, _, d in COLUMNS if k == metric), None)


def columns(keys: Any) -> list[tuple[str, str, str | None]]:
    """The columns for rows with these keys: COLUMNS, with the image metrics after the data's
    own ones."""
    image = sorted(k for k in set(keys) if k.split("[")[0] in IMAGE_METRICS and k.endswith("]"))
    extra = [(k, k, IMAGE_METRICS[k.split("[")[0]]) for k in image]
    return [*COLUMNS[:4], *extra, *COLUMNS[4:]]


@dataclass
class Job:
    method: str
    seed: int
    run_dir: Path
    config: TrainConfig


def plan(base: dict[str, Any], methods: list[str], seeds: list[int], out: Path) -> list[Job]:
    """One job per (method, seed); every config is validated before anything trains."""
    if not methods:
        raise ConfigError("--methods: give at least one method")
    if len(set(methods)) != len(methods):
        raise ConfigError(f"--methods {','.join(methods)}: a method is listed twice")
    # A method's own setting (--lambda, --clip...) given for all applies to the methods that own it.
    owners = {m: get_method(m).owns for m in methods}
    for name in (k for k in base if k in METHOD_SETTINGS):
        if not any(name in own for own in owners.values()):
            raise ConfigError(f"{flag_of(name)} applies to none of --methods {','.join(methods)}")
    jobs = []
    for method in methods:
        own = {k: v for k, v in base.items() if k not in METHOD_SETTINGS or k in owners[method]}
        for seed in seeds:
            config = from_dict({**own, "lipschitz": method, "seed": seed}, where="compare")
            resolve(config)  # refuse impossible settings now, not after hours of other runs
            jobs.append(Job(method, seed, Path(out) / f"{method}-seed{seed}", config))
    return jobs


def status(job: Job) -> str:
    """ "done", "resume" (from the run folder's newest readable checkpoint) or "new". A folder
    holding a run of another config is an error rather than something to overwrite."""
    if not RunFolder(job.run_dir).checkpoints():
        return "new"
    try:
        _, stored, step = checkpoint.peek_newest(job.run_dir)
    except CheckpointError as exc:
        raise CheckpointError(f"{exc}; choose another --out") from None
    wanted = resolve(job.config)
    # Schedule settings may differ (a longer --steps extends finished runs); settings the data
    # fills in (image size, channels) are None until the data is read.
    differ = sorted(
        k
        for k, v in wanted.to_dict().items()
        if k not in SCHEDULE_FIELDS and k != "decay_steps" and v is not None and stored.to_dict().get(k) != v
    )
    if differ:
        detail = ", ".join(f"{k} {stored.to_dict().get(k)!r} there, {wanted.to_dict()[k]!r} asked" for k in differ[:4])
        raise ConfigError(f"{job.run_dir}: holds a run with other settings ({detail}); choose another --out")
    return "done" if step >= wanted.steps else "resume"


def run_job(
    job: Job,
    on_event: Callable[[str, dict[str, Any]], None] | None = None,
    known: str | None = None,
) -> dict[str, Any]:
    """Train (or finish) one run and write its summary, with peak memory on CUDA. `known`:
    the job's `status`, when the caller has already read it."""
    from ganctl.training import train

    state = known or status(job)
    if state == "done":
        return {"state": "done"}
    device = torch.device(job.config.device) if job.config.device not in (None, "auto") else None
    on_cuda = torch.cuda.is_available() and (device is None or device.type == "cuda")
    if on_cuda:
        torch.cuda.reset_peak_memory_stats()
    if state == "resume":  # from the run folder: an unreadable newest checkpoint is skipped
        summary = train(out=job.run_dir, resume=job.run_dir, overrides={"steps": job.config.steps}, on_event=on_event)
    else:
        summary = train(job.config, job.run_dir, overwrite=True, on_event=on_event)
    summary["peak_memory_mb"] = torch.cuda.max_memory_allocated() / 2**20 if on_cuda else None
    summary["resumed"] = state == "resume"
    RunFolder(job.run_dir).write_summary(summary)
    return {"state": state, **summary}


def evaluate(path: Path, device: str = "cpu", pictures: bool = False) -> dict[str, Any]:
    """Everything compared about one run (or checkpoint): the data's quality metrics as the
    run's own final evaluation computes them, `ganctl gradnorm`'s numbers at its defaults, and
    the training cost from the run's summary (or, without one, from its log)."""
    from ganctl.analysis.gradnorm import analyse
    from ganctl.evaluation import Evaluator

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
    row.update(evaluator.evaluate())
    report = analyse(nets)  # `ganctl gradnorm`'s defaults, so the numbers are the ones it prints
    interp = report["sets"]["interp"]
    row.update(
        {
            "interp_mean": interp["mean"],
            "interp_q50": interp["q50"],
            "violation_share": interp["above"],
            "vanishing_share": interp["vanishing"],
            "critic_gap": report["critic_gap"],
            **({"wasserstein": report["wasserstein"]} if "wasserstein" in report else {}),
            "alignment_mean": report["alignment"]["mean"],
            "verdict": report["verdict"]["status"],
        }
    )
    row.update(_cost(run_dir, nets.step))
    if pictures:  # kept out of the JSON: the run's picture and its gradient-norm histograms
        from ganctl.render import histograms

        norms = {k: v.cpu().numpy() for k, v in report["_norms"].items()}
        row["_pictures"] = (
            evaluator.draw(None, f"{cfg.lipschitz}  seed {cfg.seed}  step {nets.step}"),
            histograms(None, norms, f"{cfg.lipschitz}: ||grad D|| (interp mean {interp['mean']:.3g})"),
        )
    return row


def _cost(run_dir: Path, step: int) -> dict[str, Any]:
    folder = RunFolder(run_dir)
    summary = folder.read_summary()
    if summary is not None and summary.get("step") == step:
        return {"s_per_step": summary.get("s_per_step"), "peak_memory_mb": summary.get("peak_memory_mb")}
    # An existing run: the log's elapsed time since its (last) start, per step logged since.
    records = folder.read_metrics()
    timed = [r for r in records if "elapsed_s" in r]
    if len(timed) >= 2:
        a, b = timed[0], timed[-1]
        if b["elapsed_s"] > a["elapsed_s"] and b["step"] > a["step"]:
            return {"s_per_step": (b["elapsed_s"] - a["elapsed_s"]) / (b["step"] - a["step"]), "peak_memory_mb": None}
    return {"s_per_step": None, "peak_memory_mb": None}


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


def compare_runs(
    paths: list[Path], device: str = "cpu", out: Path | None = None, settings: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Evaluate existing runs or checkpoints and put them side by side; with `out`, write
    compare.json, compare.csv, panel.png and curves.png there."""
    started = time.perf_counter()
    rows = [evaluate(p, device, pictures=out is not None) for p in paths]
    methods = aggregate(rows)
    result = {"runs": rows, "methods": methods, "best": best(methods), "settings": settings}
    result["seconds"] = round(time.perf_counter() - started, 3)
    if out is not None:
        write_outputs(result, Path(out))
    for row in rows:
        row.pop("_pictures", None)
    return result


def compare(
    base: dict[str, Any],
    methods: list[str],
    seeds: list[int],
    out: Path,
    device: str = "cpu",
    on_event: Callable[[str, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train every (method, seed) into OUT/<method>-seed<seed> (skipping finished runs and
    resuming unfinished ones), then evaluate them all the same way and write the outputs."""
    emit = on_event or (lambda kind, payload: None)
    out = Path(out)
    jobs = plan({**base, "device": device}, methods, seeds, out)
    states = [status(job) for job in jobs]  # a folder holding some other run fails now, before any training
    with RunLock(out) as lock:  # one comparison writes into --out at a time (each run locks its own folder)
        if lock.note:
            emit("warning", {"message": lock.note})
        return _train_and_compare(jobs, states, base, methods, seeds, out, device, emit, on_event)


def _train_and_compare(
    jobs: list[Job],
    states: list[str],
    base: dict[str, Any],
    methods: list[str],
    seeds: list[int],
    out: Path,
    device: str,
    emit: Callable[..., None],
    on_event: Callable[[str, dict[str, Any]], None] | None,
) -> dict[str, Any]:
    for i, (job, known) in enumerate(zip(jobs, states)):
        emit(
            "job",
            {
                "index": i,
                "total": len(jobs),
                "method": job.method,
                "seed": job.seed,
                "run_dir": str(job.run_dir),
                "state": known,
            },
        )
        run_job(job, on_event, known)
    return compare_runs(
        [job.run_dir for job in jobs],
        device=device,
        out=out,
        settings={"base": base, "methods": methods, "seeds": seeds},
    )


# --- outputs ------------------------------------------------------------------------------
CSV_FIRST = ("method", "seed", "run", "step", "critic_steps")


def plain(result: dict[str, Any]) -> dict[str, Any]:
    return {**result, "runs": [{k: v for k, v in row.items() if not k.startswith("_")} for row in result["runs"]]}


def write_outputs(result: dict[str, Any], out: Path) -> None:
    import csv
    import io

    out.mkdir(parents=True, exist_ok=True)
    rows = plain(result)["runs"]
    write_text_atomic(out / "compare.json", json.dumps(plain(result), indent=2, sort_keys=True) + "\n")
    keys = list(CSV_FIRST) + sorted({k for row in rows for k in row} - set(CSV_FIRST))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=keys, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in keys})
    write_text_atomic(out / "compare.csv", buffer.getvalue())
    _panel(result["runs"], out / "panel.png")
    _curves(result["runs"], out / "curves.png")


def _panel(rows: list[dict[str, Any]], path: Path) -> None:
    """A column per method (its first seed): samples above the gradient-norm histograms."""
    from ganctl.render import save_image, stack

    first: dict[str, dict[str, Any]] = {}
    for row in rows:
        if "_pictures" in row and (row["method"] not in first or row["seed"] < first[row["method"]]["seed"]):
            first[row["method"]] = row
    if not first:
        return
    columns = []
    for row in first.values():
        picture, hist = row["_pictures"]
        picture = picture.resize((360, round(picture.height * 360 / picture.width)))
        columns.append(stack([picture, hist.resize((360, round(hist.height * 360 / hist.width)))]))
    save_image(path, stack(columns, vertical=False, pad=10))


def _curves(rows: list[dict[str, Any]], path: Path) -> None:
    """The critic's Wasserstein estimate and the data's main quality metric against step, one
    line per method (the mean over its seeds at the steps they share)."""
    import numpy as np

    from ganctl.render import line_chart, save_image, stack

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
            per_seed = [{r["step"]: r[key] for r in log if key in r} for log in logs]
            steps = sorted(set.intersection(*(set(d) for d in per_seed))) if per_seed else []
            if steps:
                series[method] = (np.array(steps), np.array([np.mean([d[s] for d in per_seed]) for s in steps]))
        if series:
            charts.append(line_chart(series, title))
    if charts:
        save_image(path, stack(charts))
