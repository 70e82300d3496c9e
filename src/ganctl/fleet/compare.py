"""Lipschitz methods side by side: the same data, seeds and generator budget for every method,
each run an ordinary run folder, every run evaluated the same way.

Each method keeps its recipe (`ganctl.methods.registry.METHODS`) for whatever the caller does not set
for all; settings given in `base` apply to every run. The runs are jobs (`ganctl.fleet.jobs`): a run
counts as finished when its folder holds a checkpoint at the requested step, and an unfinished
one resumes from its newest readable checkpoint, so an interrupted comparison picks up where it
stopped. `ganctl.fleet.report` evaluates and writes the results.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ganctl.fleet import report
from ganctl.fleet.executors import Placement, Runner
from ganctl.fleet.jobs import plan, status
from ganctl.runfolder import RunLock
from ganctl.training.events import EventHandler, Warned


def compare_runs(
    paths: list[Path], device: str = "cpu", out: Path | None = None, settings: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Evaluate existing runs or checkpoints and put them side by side; with `out`, write
    compare.json, compare.csv, panel.png and curves.png there."""
    started = time.perf_counter()
    evaluated = [report.measure_run(p, device, pictures=out is not None) for p in paths]
    return side_by_side(evaluated, out, settings, started)


def side_by_side(
    evaluated: list[report.Evaluated], out: Path | None, settings: dict[str, Any] | None, started: float
) -> dict[str, Any]:
    """The evaluated runs aggregated per method, the best marked; written to `out` when given.
    Its "seconds" count from `started`: the training and evaluation of the runs it reports."""
    rows = [e.row for e in evaluated]
    notes = {r["method"]: r.pop("verdict_note") for r in rows if "verdict_note" in r}  # a method's, not a number
    methods = report.aggregate(rows)
    data = sorted({str(r["data"]) for r in rows})
    result = {"runs": rows, "methods": methods, "best": report.best(methods), "settings": settings}
    if len(data) > 1:  # a number on one data set is not better than one on another
        result["best"] = {}
        result["note"] = f"the runs are on different data ({', '.join(data)}): no best is marked"
    if notes:
        result["verdict_notes"] = notes
    result["seconds"] = round(time.perf_counter() - started, 3)
    if out is not None:
        report.write_outputs(result, evaluated, Path(out))
    return result


def compare(
    base: dict[str, Any],
    methods: list[str],
    seeds: list[int],
    out: Path,
    device: str = "cpu",
    on_event: EventHandler | None = None,
    placement: Placement | None = None,
) -> dict[str, Any]:
    """Train every (method, seed) into OUT/<method>-seed<seed> (skipping finished runs and
    resuming unfinished ones), one after another or as `placement` says, then evaluate them all
    the same way and write the outputs."""
    out = Path(out)
    placement = placement or Placement()
    placement.check()
    jobs = plan({**base, "device": device}, methods, seeds, out)
    states = [status(job) for job in jobs]  # a folder holding some other run fails now, before any training
    with RunLock(out) as lock:  # one comparison writes into --out at a time (each run locks its own folder)
        if lock.note and on_event is not None:
            on_event(Warned(lock.note))
        started = time.perf_counter()
        results = Runner(len(jobs), on_event, placement).run_all(jobs, states, evaluate=True)
        settings = {"base": base, "methods": methods, "seeds": seeds}
        return side_by_side([r.evaluated for r in results], out, settings, started)
