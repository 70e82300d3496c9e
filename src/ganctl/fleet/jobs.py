"""Runs as jobs: what `ganctl compare` and `--tune` train, one ordinary run folder each.

A `Job` is one (method, seed) with its resolved config and its folder. `plan` builds and checks
every job before anything trains; `status` says whether a job's folder is finished, resumable
or new; `ganctl.fleet.executors.Runner` trains them (here, in worker processes or on Ray). Whoever runs
jobs (a comparison, a tuning) goes through here, so a job is trained, resumed and reported the
same way whoever asked for it and wherever it runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ganctl.config import SCHEDULE_FIELDS, ResolvedConfig, flag_of, from_dict
from ganctl.errors import CheckpointError, ConfigError
from ganctl.methods.registry import METHOD_SETTINGS, available_methods, get_method, setting_values
from ganctl.methods.resolve import resolve
from ganctl.nets import checkpoint
from ganctl.runfolder import RunFolder
from ganctl.training.events import EventHandler, JobState, Summary
from ganctl.training.loop import train


@dataclass(frozen=True)
class Job:
    method: str
    seed: int
    run_dir: Path
    config: ResolvedConfig
    trial: int | str | None = None  # a tuning's trial number, "report", or None


@dataclass
class JobResult:
    """What a job left: its state, its run's summary (None when it was already done) and, when
    the caller asked, the run's row of the comparison (`ganctl.fleet.report.Evaluated`)."""

    state: JobState
    summary: Summary | None = None
    evaluated: Any = None


def job_config(base: dict[str, Any], method: str, seed: int, setting: dict[str, Any] | None = None) -> ResolvedConfig:
    """The resolved config of `method` on `seed`: the settings given for every run (a method's
    own settings, such as --lambda, only where the method owns them) and a tuning trial's
    `setting`. Resolved here, once; impossible settings fail now, not after hours of other runs."""
    owns = get_method(method).owns
    own = {k: v for k, v in base.items() if k not in METHOD_SETTINGS or k in owns}
    values = {**own, **setting_values(setting or {}), "lipschitz": method, "seed": seed}
    return resolve(from_dict(values, where="compare"))


def check_methods(base: dict[str, Any], methods: list[str]) -> None:
    """Refuse an empty or repeated method list, and a method's setting that none of them owns."""
    if not methods:
        raise ConfigError("--methods: give at least one method")
    if len(set(methods)) != len(methods):
        raise ConfigError(f"--methods {','.join(methods)}: a method is listed twice")
    unknown = [m for m in methods if m not in available_methods()]
    if unknown:
        raise ConfigError(
            f"--methods {','.join(methods)}: {unknown[0]!r} is not one of: {', '.join(available_methods())}"
        )
    owners = [get_method(m).owns for m in methods]
    for name in (k for k in base if k in METHOD_SETTINGS):
        if not any(name in own for own in owners):
            raise ConfigError(f"{flag_of(name)} applies to none of --methods {','.join(methods)}")


def plan(base: dict[str, Any], methods: list[str], seeds: list[int], out: Path) -> list[Job]:
    """One job per (method, seed) into OUT/<method>-seed<seed>; every config is checked first."""
    check_methods(base, methods)
    return [
        Job(method, seed, Path(out) / f"{method}-seed{seed}", job_config(base, method, seed))
        for method in methods
        for seed in seeds
    ]


def status(job: Job) -> JobState:
    """ "done", "resume" (from the run folder's newest readable checkpoint) or "new". A folder
    holding a run of another config is an error rather than something to overwrite."""
    if not RunFolder(job.run_dir).checkpoints():
        return "new"
    try:
        _, stored, step = checkpoint.peek_newest(job.run_dir)
    except CheckpointError as exc:
        raise CheckpointError(f"{exc}; choose another --out") from None
    wanted, there = job.config.to_dict(), stored.to_dict()
    # Schedule settings may differ (a longer --steps extends finished runs); settings the data
    # fills in (image size, channels) are None until the data is read.
    differ = sorted(
        k
        for k, v in wanted.items()
        if k not in SCHEDULE_FIELDS and k != "decay_steps" and v is not None and there[k] != v
    )
    if differ:
        detail = ", ".join(f"{k} {there[k]!r} there, {wanted[k]!r} asked" for k in differ[:4])
        raise ConfigError(f"{job.run_dir}: holds a run with other settings ({detail}); choose another --out")
    return "done" if step >= job.config.steps else "resume"


def run_job(job: Job, on_event: EventHandler | None = None, known: JobState | None = None) -> JobResult:
    """Train (or finish) one run and write its summary, with peak memory on CUDA. `known`:
    the job's `status`, when the caller has already read it."""

    state = known or status(job)
    if state == "done":
        return JobResult("done")
    device = torch.device(job.config.device) if job.config.device != "auto" else None
    on_cuda = torch.cuda.is_available() and (device is None or device.type == "cuda")
    if on_cuda:
        torch.cuda.reset_peak_memory_stats()
    if state == "resume":  # from the run folder: an unreadable newest checkpoint is skipped
        summary = train(out=job.run_dir, resume=job.run_dir, overrides={"steps": job.config.steps}, on_event=on_event)
    else:
        summary = train(job.config, job.run_dir, overwrite=True, on_event=on_event)
    summary.peak_memory_mb = torch.cuda.max_memory_allocated() / 2**20 if on_cuda else None
    summary.resumed = state == "resume"
    RunFolder(job.run_dir).write_summary(summary.to_dict())
    return JobResult(state, summary)
