"""Everything the CLI shows: the only module that imports rich. Results go to stdout,
progress and messages to stderr. Colour and bars only on a terminal; NO_COLOR turns every
style off (colour, bold and the rest)."""

from __future__ import annotations

import functools
import math
import os
import sys
import time
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Column, Table
from rich.text import Text

from ganctl.errors import GanctlError, Interrupted, JobFailed, RankFailed, TrainingFailed, WriteError
from ganctl.fileio import dumps
from ganctl.fleet.launch import LAUNCHED_BY_GANCTL
from ganctl.quality.thresholds import Gate
from ganctl.training.events import Ended, Event, JobStarted, Logged, Saved, Started, Stepped, Summary, Warned

F = TypeVar("F", bound=Callable[..., Any])

EXIT_OK, EXIT_CHECK_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
EXIT_WRITE_FAILED = WriteError.exit_code  # 74, sysexits' EX_IOERR: a file could not be written

# NO_COLOR (no-color.org): rich drops colours by itself but keeps bold and italics; without a
# colour system it writes no escape codes at all, which is what a user who sets it asks for.
stderr = Console(stderr=True, highlight=False, color_system=None if os.environ.get("NO_COLOR") else "auto")


def fail(message: str, code: int = EXIT_USAGE, details: dict[str, Any] | None = None) -> typer.Exit:
    if os.environ.get("TORCHELASTIC_ERROR_FILE"):  # a torchrun worker: its launcher reads why
        from ganctl.fleet.launch import record_failure

        record_failure(message, code, details)
        if os.environ.get(LAUNCHED_BY_GANCTL):  # `ganctl train --nproc` prints one line for the group
            return typer.Exit(code)
    stderr.print(
        f"[bold red]error:[/] {escape(message)}" if stderr.is_terminal else f"error: {message}",
        markup=stderr.is_terminal,
        highlight=False,
        soft_wrap=True,
    )
    return typer.Exit(code)


def _out_of_memory(exc: BaseException) -> bool:
    """torch's OutOfMemoryError, or the CPU allocator's "can't allocate memory"."""
    return (
        type(exc).__name__ == "OutOfMemoryError" or "can't allocate memory" in str(exc) or "out of memory" in str(exc)
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def _worker_failed(exc: RankFailed, code: int) -> None:
    """A lost peer: one line (recorded for the launcher), then out at once. Leaving normally
    would run the backend's teardown against the dead peer, which aborts the process."""
    fail(str(exc), code, getattr(exc, "details", None))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def handle_errors(command: F) -> F:
    """Turn library errors into one line on stderr and exit code 2; Ctrl-C into 130."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except GanctlError as exc:
            raise fail(str(exc)) from None
        except TrainingFailed as exc:
            raise fail(str(exc), EXIT_CHECK_FAILED) from None
        except WriteError as exc:  # a full disk, a read-only filesystem: one line, where to resume
            raise fail(str(exc), EXIT_WRITE_FAILED) from None
        except JobFailed as exc:  # a job run in a worker process or a Ray task: its own line and code
            raise fail(str(exc), exc.exit_code) from None
        except RankFailed as exc:  # a torchrun worker whose peer died: the group cannot be left cleanly
            _worker_failed(exc, exc.exit_code)
        except Interrupted as exc:  # stopped cleanly by a signal, with a checkpoint
            stderr.print(str(exc), markup=False, highlight=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:  # a second Ctrl-C, or one outside training
            raise fail("interrupted", EXIT_INTERRUPTED) from None
        except (MemoryError, RuntimeError) as exc:  # an allocation that failed though the estimate passed
            if not isinstance(exc, MemoryError) and not _out_of_memory(exc):
                raise
            raise fail(f"out of memory ({_first_line(exc)}): give a smaller size", EXIT_CHECK_FAILED) from None

    return wrapper  # type: ignore[return-value]


def print_json(payload: Any) -> None:
    """Strict JSON on stdout: an undefined number is null, and "undefined" says where and why."""
    sys.stdout.write(dumps(payload, indent=2, sort_keys=True) + "\n")
    sys.stdout.flush()


def stopped(exc: TrainingFailed | Interrupted | WriteError) -> dict[str, Any]:
    """The JSON object `train --json` prints when a run stops before its last step: what stopped
    it, the exit code, the one line on stderr and where to go on from (a CI script reads this
    instead of an empty stdout)."""
    if isinstance(exc, WriteError):
        code, details = EXIT_WRITE_FAILED, {"stopped": "write_failed", "path": exc.path, "last_good": exc.last_good}
    elif isinstance(exc, Interrupted):
        code, details = exc.exit_code, exc.details
    else:
        code, details = EXIT_CHECK_FAILED, {"stopped": "failed", **exc.details}
    return {"completed": False, **details, "exit_code": code, "error": str(exc)}


def say(text: str) -> None:
    """One line on stderr, as it is (no markup, no highlighting, no wrapping)."""
    stderr.print(text, markup=False, highlight=False, soft_wrap=True)


def interactive() -> bool:
    """Whether stderr is a terminal: tables and colour then, plain tab-separated lines otherwise."""
    return stderr.is_terminal


def table(title: str, columns: list[str], rows: list[list[Any]], left: tuple[int, ...] = (0,)) -> None:
    """A rich table on stderr. Text is shown as it is (a metric named fid[random-conv] keeps its
    brackets); a cell made by `emphasis` is the one styled. The columns numbered in `left` are
    left-aligned, the rest right-aligned."""

    shown = Table(title=escape(title))
    for i, name in enumerate(columns):
        shown.add_column(escape(name), justify="left" if i in left else "right")
    for row in rows:
        shown.add_row(*(escape(cell) if isinstance(cell, str) else cell for cell in row))
    stderr.print(shown)


def emphasis(text: str) -> Any:
    """A table cell shown in bold green (a best value)."""

    return Text(text, style="bold green")


def plain(rows: list[list[str]]) -> None:
    """Tab-separated lines on stderr (the piped form of a table)."""
    for row in rows:
        print("\t".join(row), file=sys.stderr)


def finish(result: Gate) -> None:
    """Print each broken threshold and exit 1 when there is one."""
    for line in result.broken:
        say(f"threshold broken: {line}")
    if result.broken:
        raise typer.Exit(EXIT_CHECK_FAILED)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


# Short labels for the live line, in display order.
_LIVE = (
    ("loss_d", "loss_D"),
    ("wasserstein", "W"),
    ("penalty", "pen"),
    ("grad_norm", "|grad|"),
    ("eval/modes", "modes"),
    ("eval/modes_hit", "hit"),
    ("eval/hq_share", "hq"),
    ("eval/valid_share", "valid"),
    ("eval/w1", "W1"),
    ("eval/gradnorm_mean", "|grad x_hat|"),
    ("eval/violation_share", "viol"),
    ("eval/nearer_seen[pixels]", "copying"),  # --holdout: samples nearer a training image than an unseen one
    ("eval/critic_seen", "D(seen)"),
    ("eval/critic_held", "D(held)"),
    ("eval/critic_fake", "D(fake)"),
    ("amp_skipped", "amp_skip"),
    ("augment_p", "p"),  # ADA's augmentation probability, where the run augments
)


# Image metrics, whatever feature space they were measured in: eval/fid[random-conv] -> fid[random-conv].
_LIVE_IMAGE = ("eval/fid[", "eval/kid[", "eval/is[", "eval/precision[", "eval/recall[")


_FINAL_IMAGE = tuple(prefix[len("eval/") :] for prefix in _LIVE_IMAGE)  # fid[, precision[, ... in a summary


def metrics_line(record: dict[str, Any]) -> str:
    parts = [f"{label}={_fmt(record[key])}" for key, label in _LIVE if key in record]
    if "critic_gap" in record and "wasserstein" not in record:  # not a W1 estimate under this loss
        parts.insert(1, f"gap={_fmt(record['critic_gap'])}")
    parts += [f"{key[5:]}={_fmt(value)}" for key, value in record.items() if key.startswith(_LIVE_IMAGE)]
    return "  ".join(parts)


def _fixed() -> Column:
    """A progress column that keeps its full width: never wrapped, never cut."""
    return Column(no_wrap=True, overflow="ignore")


def _counters() -> tuple[Any, ...]:
    """The bar, the step count and the elapsed time: these always show, whatever the width."""
    return (
        BarColumn(bar_width=16, table_column=_fixed()),
        MofNCompleteColumn(table_column=_fixed()),
        TimeElapsedColumn(table_column=_fixed()),
    )


def _metrics_column() -> TextColumn:
    """The live metrics take the width that is left, cut with an ellipsis."""
    return TextColumn("{task.fields[metrics]}", table_column=Column(no_wrap=True, overflow="ellipsis", ratio=1))


class _Display:
    """What the progress displays share: a rich Progress once one is drawn (on a terminal),
    stopped on leaving; messages printed above it, or plainly to stderr when piped."""

    progress: Progress | None = None

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.progress is not None:
            self.progress.stop()

    def message(self, text: str) -> None:
        if self.progress is not None:
            self.progress.console.print(text, markup=False, highlight=False)
        else:
            print(text, file=sys.stderr, flush=True)


class TrainProgress(_Display):
    """A rich progress bar with live metrics on a terminal; plain periodic lines otherwise."""

    def __init__(self) -> None:
        self.total = 0  # set from the resolved config when the run starts
        self.live = stderr.is_terminal
        self.progress: Progress | None = None
        self.last: dict[str, Any] = {}

    def _start(self, step: int) -> None:
        """The bar, once the run has started: settings or data refused before then leave only
        their one line, not an empty bar above it."""
        self.progress = Progress(
            TextColumn("[bold]train", table_column=_fixed()),
            *_counters(),
            TextColumn("eta", table_column=_fixed()),
            TimeRemainingColumn(table_column=_fixed()),
            _metrics_column(),
            console=stderr,
            transient=False,
            expand=True,
        )
        self.progress.start()
        self.task = self.progress.add_task("train", total=self.total, completed=step, metrics="")

    def __call__(self, event: Event) -> None:
        if isinstance(event, Started):
            self.total = event.steps
            where = f"resuming at step {event.step}" if event.step else "starting"
            self.message(f"{where} on {event.device} -> {event.out}")
            if not event.exact_resume:
                self.message(
                    "note: the checkpoint's random stream came from another device type; the run continues but is "
                    "not bitwise identical to an uninterrupted one"
                )
            if self.live and self.progress is None:
                self._start(event.step)
        elif isinstance(event, Stepped) and self.progress is not None:
            self.progress.update(self.task, completed=event.step)
        elif isinstance(event, Logged):
            self.last.update(event.record)
            if self.progress is not None:
                self.progress.update(self.task, metrics=metrics_line(self.last))
            else:
                self.message(f"step {event.step}/{self.total}  {metrics_line(event.record)}")
        elif isinstance(event, Warned):
            self.message(f"warning: {event.message}")
        elif isinstance(event, Saved) and self.progress is None:
            self.message(f"checkpoint {event.path}")


def job_line(event: JobStarted) -> str:
    what = {"done": "finished, skipped", "resume": "resuming", "new": "training"}[event.state]
    return f"[{event.index + 1}/{event.total}] {event.label}: {what} ({event.run_dir})"


class JobsProgress(_Display):
    """Several jobs at once: on a terminal one bar per running job with its live metrics, and a
    line as each one starts and ends; when piped, every line prefixed with its job."""

    def __init__(self) -> None:
        self.live = stderr.is_terminal
        self.progress: Progress | None = None
        self.tasks: dict[int | None, Any] = {}
        self.labels: dict[int | None, str] = {}
        self.totals: dict[int | None, int] = {}

    def __enter__(self) -> JobsProgress:
        if self.live:
            self.progress = Progress(
                TextColumn("{task.description}", table_column=_fixed()),
                *_counters(),
                _metrics_column(),
                console=stderr,
                expand=True,
            )
            self.progress.start()
        return self

    def __call__(self, event: Event) -> None:
        index = event.job
        task = self.tasks.get(index) if self.progress is not None else None
        if isinstance(event, JobStarted):
            self.labels[index] = event.label
            self.message(job_line(event))
            if self.progress is not None and event.state != "done":
                self.tasks[index] = self.progress.add_task(event.label, total=None, metrics="")
            return
        label = self.labels.get(index, "?")
        if isinstance(event, Started):
            self.totals[index] = event.steps
            if task is not None:
                self.progress.update(task, total=event.steps, completed=event.step)
        elif isinstance(event, Stepped) and task is not None:
            self.progress.update(task, completed=event.step)
        elif isinstance(event, Logged):
            if task is not None:
                self.progress.update(task, metrics=metrics_line(event.record))
            else:
                self.message(f"[{label}] step {event.step}/{self.totals.get(index, '?')}  {metrics_line(event.record)}")
        elif isinstance(event, Warned):
            self.message(f"[{label}] warning: {event.message}")
        elif isinstance(event, Ended):
            if task is not None:
                self.progress.remove_task(self.tasks.pop(index))
            self.message(f"[{label}] done: {event.summary.steps_trained} steps in {event.summary.wall_s:.1f} s")


class Phases(_Display):
    """What a measuring command shows while it works, from the library's progress reports
    (`ganctl.progress`): on a terminal a bar for each phase still running after a second; when
    piped, a line for such a phase every few seconds and one when it ends. A phase over within a
    second shows nothing."""

    DELAY = 1.0  # seconds a phase runs before it is shown
    EVERY = 5.0  # seconds between the lines of one phase when piped

    def __init__(self, clock: Callable[[], float] = time.monotonic, live: bool | None = None) -> None:
        self.clock = clock
        self.live = stderr.is_terminal if live is None else live
        self.progress: Progress | None = None
        self.started: dict[str, float] = {}
        self.shown: dict[str, float] = {}  # when each phase's last line was printed (piped)
        self.tasks: dict[str, Any] = {}

    def __call__(self, what: str, done: int, total: int) -> None:
        now = self.clock()
        if done == 0 or what not in self.started:
            self.started[what] = now
            self.shown.pop(what, None)
        ran, finished = now - self.started[what], done >= total
        if self.live:
            self._bar(what, done, total, finished)
        elif (ran >= self.DELAY and now - self.shown.get(what, -math.inf) >= self.EVERY) or (
            finished and what in self.shown
        ):
            self.shown[what] = now
            say(f"{what}: {done:,}/{total:,} ({ran:.0f} s)")
        if finished:
            self.started.pop(what, None)

    def _bar(self, what: str, done: int, total: int, finished: bool) -> None:
        """A task per phase from its first report; `_Delayed` draws it once it has run a second."""
        if what not in self.tasks and not finished:
            if self.progress is None:
                self.progress = _Delayed(
                    TextColumn("{task.description}", table_column=_fixed()),
                    *_counters(),
                    TextColumn("eta", table_column=_fixed()),
                    TimeRemainingColumn(table_column=_fixed()),
                    console=stderr,
                    transient=True,
                    get_time=self.clock,
                )
                self.progress.start()
            self.tasks[what] = self.progress.add_task(what, total=total)
        if what in self.tasks:
            self.progress.update(self.tasks[what], completed=done, total=total)
            if finished:
                self.progress.remove_task(self.tasks.pop(what))


class _Delayed(Progress):
    """A progress display that draws a task only once it has run for `Phases.DELAY` seconds (its
    own refresh thread reveals it then, even when no report comes in between)."""

    def get_renderables(self) -> Any:
        yield self.make_tasks_table([t for t in self.tasks if (t.elapsed or 0.0) >= Phases.DELAY])


def print_summary(summary: Summary) -> None:
    final = summary.final
    parts = [f"done: {summary.steps_trained} steps in {summary.wall_s:.1f} s"]
    if summary.restarts:
        n = summary.restarts
        parts[0] += f" after {n} restart{'s' * (n != 1)} of the group"
    if "modes" in final:
        parts.append(f"modes {final['modes']}/{final['modes_total']} (hit {final['modes_hit']})")
    if "hq_share" in final:
        parts.append(f"high-quality {final['hq_share']:.1%}")
    if "valid_share" in final:
        parts.append(f"valid {final['valid_share']:.1%}")
    if "w1" in final:
        parts.append(
            f"W1 {final['w1']:.4f} (a perfect generator's: {final['w1_floor']:.4f} ± {final['w1_floor_sd']:.4f})"
        )
    # The image metrics of the final evaluation, each named with its feature space.
    parts += [f"{key} {_fmt(value)}" for key, value in final.items() if key.startswith(_FINAL_IMAGE)]
    if "augment_p" in final and final.get("augment_p") is not None:
        parts.append(f"augmentation p {final['augment_p']:.3g}")
    for line in (", ".join(parts), f"checkpoint {summary.checkpoint}", f"picture    {summary.picture}"):
        stderr.print(line, markup=False, highlight=False, soft_wrap=True)
