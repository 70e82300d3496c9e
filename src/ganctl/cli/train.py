"""`ganctl train`: parse options, build a config, call `ganctl.training.loop.train`, show the result.

Every setting's option comes from its description in `ganctl.config` (`cli.options.with_settings`)
and defaults to "not given", so precedence is simple: flags override the --config file, which
overrides the method's published recipe, which overrides ganctl's defaults.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from ganctl.cli.options import ConfigFile, Json, Overwrite, escape, settings_of, with_settings
from ganctl.cli.output import TrainProgress, fail, handle_errors, print_json, print_summary, stopped
from ganctl.config import from_dict
from ganctl.errors import ConfigError, Interrupted, TrainingFailed, WriteError
from ganctl.fleet.launch import launch
from ganctl.runfolder import run_dir_of


def _train(
    settings: dict[str, Any],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help=escape("The run folder (DATA the data's file or folder name). [default: runs/DATA-METHOD-seedSEED]"),
            show_default=False,
        ),
    ] = None,
    config_file: ConfigFile = None,
    resume: Annotated[
        Path | None,
        typer.Option(
            "--resume", help="Continue from a checkpoint file or run folder; only schedule settings may change."
        ),
    ] = None,
    overwrite: Overwrite = False,
    nproc: Annotated[
        int | None,
        typer.Option(
            "--nproc",
            help="Train data-parallel on N processes (one per GPU on CUDA, gloo on the CPU) by launching torchrun "
            "with these same options; --batch-size is per process.",
            show_default=False,
        ),
    ] = None,
    max_restarts: Annotated[
        int,
        typer.Option(
            "--max-restarts",
            help="With --nproc: restart the whole group up to K times when a process fails; every process"
            " resumes from the run folder's newest readable checkpoint (as under torchrun --max-restarts).",
        ),
    ] = 0,
    json_output: Json = False,
) -> None:
    """Train a generator against a critic kept Lipschitz by --lipschitz."""

    values, extra = settings_of(settings, config_file)
    out = out or (Path(extra["out"]) if "out" in extra else None)
    if resume is not None:
        kwargs = {"resume": resume, "overrides": values, "out": out or run_dir_of(resume)}
    else:
        config = from_dict(values, where="options")
        name = Path(config.data).stem or "data"
        kwargs = {"config": config, "out": out or Path("runs") / f"{name}-{config.lipschitz}-seed{config.seed}"}
    if nproc is not None or max_restarts:
        _launch(nproc, max_restarts, kwargs["out"])
    # Imported when the command runs: `ganctl --help` must not import torch.
    from ganctl.training.loop import train as run_train

    if os.environ.get("RANK", "0") != "0":  # a torchrun rank other than 0: rank 0 reports
        run_train(**kwargs, overwrite=overwrite)
        return
    try:
        with TrainProgress() as progress:
            summary = run_train(**kwargs, overwrite=overwrite, on_event=progress)
    except (TrainingFailed, Interrupted, WriteError) as exc:
        if json_output:  # a CI script reads why it stopped, not an empty stdout
            print_json(stopped(exc))
        raise
    if json_output:
        print_json(summary.to_dict())
    print_summary(summary)


train = handle_errors(with_settings(_train))


def _launch(nproc: int | None, max_restarts: int, out: Path) -> None:
    """Re-run this command under torchrun on `nproc` processes (restarting the group up to
    `max_restarts` times) and exit with its status; a failed group is one line."""

    if nproc is None:
        raise ConfigError("--max-restarts restarts a group of processes: give --nproc N as well")
    if nproc < 1:
        raise ConfigError(f"--nproc must be >= 1, got {nproc}")
    if max_restarts < 0:
        raise ConfigError(f"--max-restarts must be >= 0, got {max_restarts}")
    if os.environ.get("WORLD_SIZE"):
        raise ConfigError("--nproc: already running under torchrun; drop --nproc (and use torchrun's --max-restarts)")
    args, argv, i = [], sys.argv[1:], 0
    while i < len(argv):  # the same command line without --nproc and --max-restarts
        if argv[i] in ("--nproc", "--max-restarts"):
            i += 2
            continue
        if not argv[i].startswith(("--nproc=", "--max-restarts=")):
            args.append(argv[i])
        i += 1
    outcome = launch(args, nproc, max_restarts, out)
    if outcome.message is not None:
        raise fail(outcome.message, outcome.code)
    raise typer.Exit(outcome.code)
