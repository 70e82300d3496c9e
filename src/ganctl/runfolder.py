"""A run on disk: the one module that knows the run folder's layout.

    RUN/config.json          the resolved config
    RUN/metrics.jsonl        one JSON object per logged or evaluated step
    RUN/summary.json         the run's summary, written by `compare` when it finishes a run
    RUN/checkpoints/         step-NNNNNNN.safetensors
    RUN/samples/             step-NNNNNNN.png and final.png
    RUN/tensorboard/         TensorBoard events, with --tensorboard

Everything here is paths and JSON: no torch.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import os
import re
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from ganctl.errors import CheckpointError, ConfigError, DataError, WriteError
from ganctl.fileio import check_writable, dumps, write_error, write_text_atomic

CHECKPOINT_SUFFIX = ".safetensors"
_CHECKPOINT_NAME = re.compile(r"step-(\d+)\.safetensors$")


class MetricsLog:
    """Append-only JSONL. On resume, records past the resumed step are dropped, and the final
    evaluation of the invocation that stopped there (a record marked final), so the log reads
    as one uninterrupted run; a fresh run starts an empty log."""

    def __init__(self, path: Path, resume_step: int | None):
        self.path = path
        if resume_step is not None and path.exists():
            lines = path.read_text(encoding="utf-8").splitlines()
            kept = [line for line in lines if _step_of(line) <= resume_step and not _final(line)]
            write_text_atomic(path, "".join(line + "\n" for line in kept))
        elif resume_step is None:
            path.write_text("", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        """Append one record. A write that fails (a full disk) leaves at most a cut-short last
        line, which readers skip, and raises `WriteError`."""
        try:
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(dumps(record) + "\n")
        except OSError as exc:
            raise write_error(self.path, exc) from exc


def _final(line: str) -> bool:
    try:
        return bool(json.loads(line).get("final"))
    except (ValueError, AttributeError):
        return False


def _step_of(line: str) -> int:
    try:
        return int(json.loads(line).get("step", 0))
    except (ValueError, AttributeError):
        return 0


HOLDOUT_FORMAT = "ganctl.holdout/1"


class RunFolder:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def summary_path(self) -> Path:
        return self.path / "summary.json"

    @property
    def samples(self) -> Path:
        return self.path / "samples"

    @property
    def tensorboard(self) -> Path:
        return self.path / "tensorboard"

    @property
    def torchrun_id(self) -> Path:
        """The torchrun job that writes the folder (its run id): a restart of the same job resumes it."""
        return self.path / ".torchrun-id"

    def written_by(self) -> str | None:
        """The torchrun run id that wrote the folder, or None."""
        try:
            return self.torchrun_id.read_text(encoding="utf-8").strip()
        except OSError:
            return None

    def checkpoint_path(self, step: int) -> Path:
        return self.path / "checkpoints" / f"step-{step:07d}{CHECKPOINT_SUFFIX}"

    def sample_path(self, step: int | None) -> Path:
        """The picture at `step`, or the final one (None)."""
        return self.samples / ("final.png" if step is None else f"step-{step:07d}.png")

    def checkpoints(self) -> list[Path]:
        """The run's checkpoints in step order."""
        found = [
            (int(m.group(1)), p)
            for p in (self.path / "checkpoints").glob(f"step-*{CHECKPOINT_SUFFIX}")
            if (m := _CHECKPOINT_NAME.search(p.name))
        ]
        return [p for _, p in sorted(found)]

    def prepare(self, resuming: bool, overwrite: bool) -> None:
        """Create the folder, refuse to train over an earlier run's checkpoints, and check it
        is writable before any work starts. With `overwrite`, a fresh run first removes the
        earlier run's checkpoints and log."""
        out = self.path
        if out.exists() and not out.is_dir():
            raise ConfigError(f"--out {out}: exists and is not a folder")
        if not resuming and self.checkpoints() and not overwrite:
            raise ConfigError(
                f"--out {out}: already holds a run's checkpoints; resume it with --resume {out},"
                " choose another --out, or pass --overwrite to start over"
            )
        check_writable(out, "--out", folder=True)
        if overwrite and not resuming:
            for path in self.checkpoints():
                path.unlink()
            self.metrics_path.unlink(missing_ok=True)
        if not resuming:
            self.holdout_path.unlink(missing_ok=True)  # a fresh run's split is its own
        self.samples.mkdir(exist_ok=True)

    def prune(self, keep: int, readable: Any) -> list[Path]:
        """Delete all but the `keep` newest checkpoints (0 keeps all), once the newest is on disk
        and `readable(newest)` succeeds: a crash between a write and a deletion leaves the newest
        whole checkpoint and perhaps some older ones. Returns what was deleted."""
        found = self.checkpoints()
        if keep <= 0 or len(found) <= keep:
            return []
        readable(found[-1])  # raises if the newest cannot be read: then nothing is deleted
        removed = []
        for path in found[:-keep]:
            path.unlink(missing_ok=True)
            removed.append(path)
        return removed

    def write_config(self, values: dict[str, Any]) -> None:
        write_text_atomic(self.config_path, json.dumps(values, indent=2, sort_keys=True) + "\n")

    def metrics_log(self, resume_step: int | None) -> MetricsLog:
        return MetricsLog(self.metrics_path, resume_step)

    def read_metrics(self) -> list[dict[str, Any]]:
        """Every record of the log; a line cut short by a kill is skipped, the rest counts."""
        if not self.metrics_path.is_file():
            return []
        records = []
        for line in self.metrics_path.read_text(encoding="utf-8").splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
        return records

    def write_summary(self, summary: dict[str, Any]) -> None:
        write_text_atomic(self.summary_path, dumps(summary, indent=2, sort_keys=True) + "\n")

    @property
    def holdout_path(self) -> Path:
        return self.path / "holdout.json"

    def record_holdout(self, data: str, whole: str, total: int, held: tuple[int, ...], resuming: bool) -> None:
        """Write which images --holdout set aside (indices into the data as loaded, with the whole
        set's fingerprint). A resumed run checks the folder's record instead, and refuses another
        split: its held-out images must stay the ones it never trained on."""
        if resuming and self.check_holdout(whole, held):
            return
        record = {"format": HOLDOUT_FORMAT, "data": data, "fingerprint": whole, "images": total, "held_out": list(held)}
        write_text_atomic(self.holdout_path, json.dumps(record) + "\n")

    def check_holdout(self, whole: str, held: tuple[int, ...]) -> bool:
        """Whether the folder records a split (False: none), refusing one other than `held` of the
        data whose fingerprint is `whole`."""
        known = self.read_holdout()
        if known is None:
            return False
        if known.get("fingerprint") != whole or known.get("held_out") != list(held):
            raise DataError(
                f"{self.holdout_path}: records other held-out images than --holdout selects from the data now (were"
                " the data's images changed since the run began?); they must stay the ones the run never trained on"
            )
        return True

    def read_holdout(self) -> dict[str, Any] | None:
        try:
            record = json.loads(self.holdout_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise DataError(f"{self.holdout_path}: unreadable ({exc})") from None
        if not isinstance(record, dict) or record.get("format") != HOLDOUT_FORMAT:
            raise DataError(f"{self.holdout_path}: not a ganctl holdout record ({HOLDOUT_FORMAT})")
        return record


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """A run folder's checkpoints in step order."""
    return RunFolder(run_dir).checkpoints()


T = TypeVar("T")


def find_checkpoint(path: str | Path) -> Path:
    """A checkpoint file as given, or the latest checkpoint of a run folder."""
    path = Path(path)
    if path.is_dir():
        found = list_checkpoints(path)
        if not found:
            raise CheckpointError(
                f"{path}: a folder with no checkpoints (expected checkpoints/step-*{CHECKPOINT_SUFFIX})"
            )
        return found[-1]
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint file or run directory")
    return path


def newest_readable(path: str | Path, read: Callable[[Path], T]) -> tuple[Path, T, list[str]]:
    """`read` of a checkpoint file, strictly; of a run folder, `read` of its newest checkpoint
    that reads (a damaged newest one is skipped, as resuming the folder skips it), with why
    each newer one was skipped."""
    path = Path(path)
    if not path.is_dir():
        found = find_checkpoint(path)
        return found, read(found), []
    candidates = list_checkpoints(path)
    if not candidates:
        find_checkpoint(path)  # the folder's own clear error
    skipped = []
    for candidate in reversed(candidates):
        try:
            return candidate, read(candidate), skipped
        except CheckpointError as exc:
            skipped.append(str(exc))
    raise CheckpointError(f"{path}: none of its {len(candidates)} checkpoints can be read; newest: {skipped[0]}")


def run_dir_of(path: str | Path) -> Path:
    """The run folder a checkpoint file belongs to (RUN/checkpoints/step-N.safetensors)."""
    path = Path(path)
    if path.is_dir():
        return path
    return path.parent.parent if path.parent.name == "checkpoints" else path.parent


# --- one writer at a time -------------------------------------------------------------------
LOCK_NAME = ".ganctl.lock"


class RunLock:
    """An exclusive advisory lock (flock) on a folder that a process writes: a run folder
    (`train`, `--resume`) or a comparison's --out. A second writer fails at once with who holds
    it; readers (`sample`, `gradnorm`, `eval`) take no lock and never wait. The operating system
    drops the lock when its process dies however it dies, so a crashed run never blocks the next;
    the holder's details left in the file are then reported as taken over (`note`).

    On network filesystems flock is as good as the filesystem's locking: NFSv4 and most NFSv3
    setups lock across hosts; where locking is unsupported (ENOLCK, EOPNOTSUPP) the run goes on
    unlocked and `note` says so."""

    def __init__(self, folder: str | Path, flag: str = "--out"):
        self.folder, self.flag = Path(folder), flag
        self.note: str | None = None
        self._fd: int | None = None
        self._made: list[Path] = []  # the folders the lock made, removed again if it leaves them empty

    def __enter__(self) -> RunLock:
        if self.folder.exists() and not self.folder.is_dir():
            raise ConfigError(f"{self.flag} {self.folder}: exists and is not a folder")
        try:
            self._made = [p for p in (self.folder, *self.folder.parents) if not p.exists()]
            self.folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise WriteError(self.folder, exc.errno, exc.strerror or str(exc), self.flag) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe(_read_holder(fd))
            os.close(fd)
            raise ConfigError(
                f"{self.flag} {self.folder}: another ganctl process is writing there ({holder}); wait for"
                f" it to finish, or choose another {self.flag}"
            ) from None
        except OSError as exc:
            if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                os.close(fd)
                raise
            self.note = (
                f"{self.folder}: this filesystem does not support locking ({exc.strerror}); a second writer"
                " into the same folder would not be stopped"
            )
        previous = _read_holder(fd)
        if previous and not _alive(previous):
            self.note = f"took over {self.folder}'s lock from a writer that is gone ({_describe(previous)})"
        _write_holder(fd)
        self._fd = fd
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._fd is None:
            return
        os.ftruncate(self._fd, 0)  # a clean exit leaves no holder to report
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None
        self._tidy()

    def _tidy(self) -> None:
        """A writer refused before it wrote anything leaves nothing behind: the lock file and the
        folders the lock itself made, when nothing else is in them."""

        if not self._made or any(p.name != LOCK_NAME for p in self.folder.iterdir()):
            return
        with contextlib.suppress(OSError):
            (self.folder / LOCK_NAME).unlink()
            for folder in self._made:  # innermost first
                folder.rmdir()


def _read_holder(fd: int) -> dict[str, Any]:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        return json.loads(os.read(fd, 4096).decode("utf-8") or "{}")
    except (OSError, ValueError):
        return {}


def _write_holder(fd: int) -> None:
    info = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "since": datetime.datetime.now().isoformat(timespec="seconds"),
        "command": " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv))[:300],
    }
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, json.dumps(info).encode("utf-8"))


def _describe(holder: dict[str, Any]) -> str:
    if not holder:
        return "no details recorded"
    return f"pid {holder.get('pid')} on {holder.get('host')} since {holder.get('since')}: {holder.get('command', '')}"


def _alive(holder: dict[str, Any]) -> bool:
    """Whether the recorded holder still runs (only knowable on this host)."""

    if holder.get("host") != socket.gethostname():
        return True
    try:
        os.kill(int(holder.get("pid", 0)), 0)
    except (ProcessLookupError, ValueError):
        return False
    except PermissionError:
        return True
    return True
