"""`ganctl compare`: the Lipschitz methods side by side on the same data, seeds and budget,
or existing runs and checkpoints compared without training."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ganctl.cli.options import ConfigFile, Json, escape, settings_of, with_settings
from ganctl.cli.output import (
    JobsProgress,
    TrainProgress,
    emphasis,
    handle_errors,
    interactive,
    job_line,
    plain,
    print_json,
    say,
    table,
)
from ganctl.config import default
from ganctl.errors import ConfigError
from ganctl.methods.registry import compared_methods
from ganctl.runfolder import RunLock
from ganctl.training.events import Ended, Event, JobStarted, Started

if TYPE_CHECKING:
    from ganctl.fleet.tuning import Budget

DEFAULT_METHODS = ",".join(compared_methods())


class CompareProgress:
    """One line per run, then the run's own progress (bar on a terminal, lines when piped)."""

    def __init__(self) -> None:
        self.inner: TrainProgress | None = None

    def __call__(self, event: Event) -> None:
        if isinstance(event, JobStarted):
            say(job_line(event))
            return
        if isinstance(event, Started):
            self.inner = TrainProgress().__enter__()
        if self.inner is not None:
            self.inner(event)
        if isinstance(event, Ended) and self.inner is not None:
            self.inner.__exit__(None, None, None)
            self.inner = None


def _fmt(key: str, stat: dict[str, float] | None, runs: int) -> str:
    if stat is None:
        return "-"
    mean, std = stat["mean"], stat["std"]
    if key in ("hq_share", "valid_share", "violation_share"):
        text = f"{mean:.1%}" + (f" ± {std:.1%}" if runs > 1 else "")
    elif key == "modes":
        text = f"{mean:.3g}" + (f" ± {std:.2g}" if runs > 1 else "")
    else:
        text = f"{mean:.4g}" + (f" ± {std:.2g}" if runs > 1 else "")
    return text


def _table(result: dict[str, Any]) -> None:
    # Imported when the command runs: `ganctl --help` must not import torch.
    from ganctl.fleet.report import columns

    methods, marks = result["methods"], result["best"]
    shown = columns(k for s in methods.values() for k in s)
    live = interactive()

    def cell(method: str, key: str, s: dict[str, Any]) -> str:
        text = _fmt(key, s.get(key), s["runs"])
        if method not in marks.get(key, []):
            return text
        return emphasis(text) if live else text + "*"

    rows = [[method, str(s["runs"]), *(cell(method, k, s) for k, _, _ in shown)] for method, s in methods.items()]
    if live:
        table(
            "methods side by side (mean ± std over seeds; best in bold green)",
            ["method", "runs", *(label for _, label, _ in shown)],
            rows,
        )
    else:  # plain, tab-separated, with '*' on the best value
        plain([["method", "runs", *(k for k, _, _ in shown)], *rows])


def _compare(
    settings: dict[str, Any],
    runs: Annotated[
        list[Path] | None,
        typer.Argument(
            help="Existing run folders or checkpoints to compare, without training.",
            show_default=False,
            metavar="CKPT_OR_RUN",
        ),
    ] = None,
    methods: Annotated[str, typer.Option("--methods", help="Comma-separated Lipschitz methods.")] = DEFAULT_METHODS,
    seeds: Annotated[int, typer.Option("--seeds", help="Seeds per method: --seed, --seed + 1, ...")] = 1,
    seed: Annotated[int, typer.Option("--seed", help="The first seed of every method's runs.")] = 0,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help=escape("Folder for the runs and the results. [default: runs/compare-DATA]"),
            show_default=False,
        ),
    ] = None,
    config_file: ConfigFile = None,
    tune: Annotated[
        int | None,
        typer.Option(
            "--tune",
            help="Tune first: K trials per method from its search space (the same K for all), on tuning seeds"
            " 1000, 1001, ...; each method's best setting is then trained on the report seeds.",
            show_default=False,
        ),
    ] = None,
    tune_seeds: Annotated[int, typer.Option("--tune-seeds", help="Tuning seeds per trial.")] = 1,
    tune_metric: Annotated[
        str | None,
        typer.Option(
            "--tune-metric",
            help=escape("What a trial is scored by. [default: w1 on 2-D data, fid on images]"),
            show_default=False,
        ),
    ] = None,
    jobs: Annotated[
        int,
        typer.Option(
            "--jobs",
            help="Runs at once, each in its own process: on CUDA round robin over the GPUs, on the CPU with"
            " cpu_count / N threads each unless --threads is given. The numbers are a sequential comparison's.",
        ),
    ] = 1,
    launcher: Annotated[
        str,
        typer.Option(
            "--launcher",
            help="local (this machine) or ray: each run a Ray task asking for its CPUs and GPU, its run folder on a"
            " filesystem every node sees, retried from its newest checkpoint if its worker dies (the ray extra).",
        ),
    ] = "local",
    ray_address: Annotated[
        str | None,
        typer.Option(
            "--ray-address",
            help="With --launcher ray: the cluster (auto, or HOST:PORT of `ray start --head`; default: $RAY_ADDRESS,"
            " else a Ray instance on this machine).",
            show_default=False,
        ),
    ] = None,
    ray_retries: Annotated[
        int, typer.Option("--ray-retries", help="With --launcher ray: retries of a run whose worker dies.")
    ] = 3,
    json_output: Json = False,
) -> None:
    """Train each method with the same data, seeds and budget, then evaluate every run the same way.

    Or compare existing CKPT_OR_RUN... without training.

    Every setting of `ganctl train` (for example --batch-size 128 --lr-d 1e-4 --two-sided, or
    --config FILE) applies to every run. Finished runs under --out are not trained again;
    unfinished ones resume. With CKPT_OR_RUN arguments nothing trains. Writes compare.json,
    compare.csv, panel.png and curves.png to --out; with --tune also tune.json and budget.png.
    """
    # Imported when the command runs: `ganctl --help` must not import torch.
    from ganctl.fleet.executors import Placement
    from ganctl.fleet.tuning import Budget

    base, extra = settings_of(settings, config_file)
    out = out or (Path(extra["out"]) if "out" in extra else None)
    placement = Placement(jobs, launcher, ray_address, ray_retries)
    placement.check()
    progress = CompareProgress() if placement.sequential else JobsProgress()
    if runs:
        if base:
            raise ConfigError("compare CKPT_OR_RUN...: training options make no sense when comparing existing runs")
        result = _existing(runs, out, settings.get("device"))
    else:
        if seeds < 1:
            raise ConfigError(f"--seeds must be >= 1, got {seeds}")
        name = Path(base.get("data", default("data"))).stem or "data"
        out = out or Path("runs") / f"compare-{name}"
        method_list = [m.strip() for m in methods.split(",") if m.strip()]
        asked = _Asked(base, method_list, list(range(seed, seed + seeds)), out, placement)
        budget = Budget(tune, tune_seeds, tune_metric) if tune is not None else None
        result = _train_and_compare(asked, budget, progress)
    _show(result, out, json_output)


compare = handle_errors(with_settings(_compare, exclude=("lipschitz",)))


@dataclass(frozen=True)
class _Asked:
    """What a comparison that trains was asked for."""

    base: dict[str, Any]
    methods: list[str]
    seeds: list[int]
    out: Path
    placement: Any


def _device(device: str | None) -> str:
    # Imported when the command runs: `ganctl --help` must not import torch.
    from ganctl.devices import resolve_device

    return str(resolve_device(device or default("device")))


def _existing(runs: list[Path], out: Path | None, device: str | None) -> dict[str, Any]:
    # Imported when the command runs: `ganctl --help` must not import torch.
    from ganctl.fleet.compare import compare_runs

    with RunLock(out) if out is not None else contextlib.nullcontext():  # it writes its results there
        return compare_runs(runs, device=_device(device), out=out)


def _train_and_compare(asked: _Asked, budget: Budget | None, progress: Any) -> dict[str, Any]:
    # Imported when the command runs: `ganctl --help` must not import torch.
    from ganctl.fleet.compare import compare as run_compare

    device = _device(asked.base.get("device"))
    with _shown(progress):
        if budget is None:
            return run_compare(asked.base, asked.methods, asked.seeds, asked.out, device, progress, asked.placement)
        from ganctl.fleet.tuning import tune

        return tune(asked.base, asked.methods, budget, asked.seeds, asked.out, device, progress, asked.placement)


def _show(result: dict[str, Any], out: Path | None, json_output: bool) -> None:
    if json_output:
        print_json(result)
        return
    _table(result)
    if "note" in result:
        say(f"note: {result['note']}")
    for method, note in result.get("verdict_notes", {}).items():
        say(f"note on {method}'s verdict: {note}")
    if "tuning" in result:
        _chosen(result["tuning"])
    if out is not None:
        from ganctl.fleet.report import ComparisonFolder

        say("results: " + ", ".join(map(str, ComparisonFolder(out).files(tuned="tuning" in result))))


def _shown(progress: Any) -> contextlib.AbstractContextManager:
    return progress if isinstance(progress, JobsProgress) else contextlib.nullcontext()


def _chosen(tuning: dict[str, Any]) -> None:
    for method, r in tuning["methods"].items():
        setting = ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in r["chosen"].items())
        best = r["trials"][r["best_trial"]]["score"]
        say(f"{method}: trial {r['best_trial']} of {tuning['trials']} ({tuning['metric']} {best:.4g}): {setting}")
