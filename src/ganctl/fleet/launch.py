"""`ganctl train --nproc N [--max-restarts K]`: the same command under torchrun, in this process.

torchrun's own launcher (`torch.distributed.run`) starts N workers and, with `--max-restarts K`,
restarts the whole group up to K times when one of them fails; each restarted worker resumes
from the run folder's newest readable checkpoint (`ganctl.training.loop.restart_checkpoint`). When
the group fails for good, torchrun's report (a traceback and a table per failed rank) becomes
one line: which rank failed and how, at which step, the newest checkpoint and the command that
resumes. For that, every worker records why it stopped in torchrun's error file
(`TORCHELASTIC_ERROR_FILE`, written by torch's `ErrorHandler`) as a small JSON object, and a
worker started from here prints nothing itself.

Nothing here imports torch until a launch: `ganctl --help` stays fast.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ganctl.errors import CheckpointError
from ganctl.fileio import write_text_atomic

LAUNCHED_BY_GANCTL = "GANCTL_LAUNCHED"  # set for workers of `ganctl train --nproc`
PEER_LOST_CODE = 75  # `ganctl.errors.RankFailed.exit_code`
_TAG = "ganctl-failure:"


class _Recorded(Exception):
    """What a worker records: its one line and exit code, as JSON after a tag."""

    def __init__(self, message: str, code: int, details: dict[str, Any] | None):
        super().__init__(_TAG + json.dumps({"message": message, "code": code, **(details or {})}))


def record_failure(message: str, code: int, details: dict[str, Any] | None = None) -> None:
    """In a torchrun worker: record why it stops, for whoever launched the group, in the JSON
    layout of torch's `ErrorHandler.record_exception`, but written atomically: torch writes it
    in place, and its agent, stopping the group after another rank died, can kill this worker
    mid-write and then fail on the empty file it reads back (seen in the restart test)."""

    error = _Recorded(message, code, details)
    record = {
        "message": {"message": f"{type(error).__name__}: {error}", "extraInfo": {"timestamp": str(int(time.time()))}}
    }
    write_text_atomic(Path(os.environ["TORCHELASTIC_ERROR_FILE"]), json.dumps(record))


def _recorded(message: Any) -> dict[str, Any] | None:
    if isinstance(message, dict):  # the error file's structured form
        message = message.get("message", "")
    message = str(message)
    at = message.find(_TAG)
    if at < 0:
        return None
    try:
        return json.loads(message[at + len(_TAG) :])
    except json.JSONDecodeError:
        return None


@dataclass(frozen=True)
class Outcome:
    code: int
    message: str | None  # None on success


def launch(args: list[str], nproc: int, max_restarts: int, run_dir: Path | None) -> Outcome:
    """Run `ganctl ARGS` on `nproc` local workers under torchrun's launcher, restarting the
    group up to `max_restarts` times; the group's exit code and, on failure, its one line."""
    # torch's launcher, when a launch happens: `ganctl --help` imports this module, so no torch at its top.
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    os.environ[LAUNCHED_BY_GANCTL] = "1"
    torchrun = ["--standalone", f"--nproc-per-node={nproc}", f"--max-restarts={max_restarts}"]
    parsed = get_args_parser().parse_args([*torchrun, "-m", "ganctl", *args])
    # torchrun's own logging (its notes, its per-rank failure report) becomes our one line.
    loggers = [logging.getLogger(name) for name in list(logging.root.manager.loggerDict) if name.startswith("torch.")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        run(parsed)
    except ChildFailedError as err:
        return describe(err.failures, nproc, max_restarts, run_dir)
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
        os.environ.pop(LAUNCHED_BY_GANCTL, None)
    return Outcome(0, None)


def describe(failures: dict[int, Any], nproc: int, max_restarts: int, run_dir: Path | None) -> Outcome:
    """The one line for a failed group, from torchrun's `ProcessFailure`s (by global rank)."""
    records = {rank: _recorded(f.message) for rank, f in failures.items()}
    own = [rank for rank, r in records.items() if r is not None and r["code"] != PEER_LOST_CODE]
    if own:  # a worker stopped for a reason of its own (bad input, a NaN, a full disk): its line
        record = records[min(own)]
        return Outcome(record["code"], record["message"])
    timed_out = sorted(rank for rank, r in records.items() if r is not None and r.get("timed_out"))
    crashed = [rank for rank, r in records.items() if r is None]
    if timed_out:  # a collective timed out: the hung rank is one that did not time out itself
        first = min(timed_out, key=lambda r: (failures[r].timestamp, r))
        survivor, suspects = records[first], [rank for rank in failures if rank not in timed_out]
        if not suspects:  # every rank timed out: the hung one did last, once it ran again
            suspects = [r for r in timed_out if failures[r].timestamp > failures[first].timestamp]
        if not suspects:
            return Outcome(PEER_LOST_CODE, survivor["message"])
        rank, how = min(suspects), "stopped answering (a collective timed out)"
    elif crashed:  # the rank torchrun's agent did not stop itself (it sends SIGTERM to the others)
        survivor = next((r for r in records.values() if r is not None), None)
        rank = min(crashed, key=lambda r: (failures[r].exitcode == -signal.SIGTERM, failures[r].timestamp, r))
        failure = failures[rank]
        how = (
            f"was killed by {failure.signal_name()}"
            if failure.exitcode < 0
            else f"exited with status {failure.exitcode}"
        )
    else:  # only lost peers: nobody crashed that torchrun saw (a peer on another node)
        return Outcome(PEER_LOST_CODE, next(r for r in records.values() if r is not None)["message"])
    after = f" after {max_restarts} restart{'s' * (max_restarts != 1)}" if max_restarts else ""
    if survivor is not None:
        where = f"at step {survivor['step']}; " + (
            f"newest checkpoint {survivor['checkpoint']}"
            if survivor["checkpoint"]
            else "no checkpoint had been written"
        )
        resume = survivor["resume"]
    else:
        where, resume = _newest(run_dir, nproc)
    return Outcome(PEER_LOST_CODE, f"rank {rank} of {nproc} {how}{after} {where}; resume with: {resume}")


def _newest(run_dir: Path | None, nproc: int) -> tuple[str, str]:
    """Where the run stands when no worker could say (every one of them crashed)."""
    from ganctl.nets import checkpoint  # torch: here, not at the top, which `ganctl --help` imports

    if run_dir is None:
        return "(no survivor said at which step)", "ganctl train --resume RUN_FOLDER"
    try:
        path, _, step = checkpoint.peek_newest(run_dir)
    except CheckpointError:
        return "before any checkpoint was written", "start the run again"
    return f"after step {step}, its newest checkpoint {path}", f"ganctl train --resume {run_dir} --nproc {nproc}"
