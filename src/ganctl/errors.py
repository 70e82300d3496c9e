"""Errors a user can act on. The CLI prints their message (no traceback) and exits with 2."""

import errno as errnos


class GanctlError(Exception):
    """Bad usage or input: the message names the flag, file or value and what is accepted."""


class ConfigError(GanctlError):
    pass


class DataError(GanctlError):
    pass


class CheckpointError(GanctlError):
    pass


class WriteError(OSError):
    """A file could not be written: a full disk (ENOSPC), a quota (EDQUOT), a failing or
    read-only filesystem (EIO, EROFS), no permission (EACCES). Exit 74 (EX_IOERR). The training
    loop fills in the last good checkpoint, from which the run resumes."""

    exit_code = 74

    def __init__(self, path: object, errno: int | None, reason: str, flag: str | None = None):
        super().__init__(errno, reason, str(path))
        self.path, self.reason = str(path), reason
        self.flag = flag  # the option that named the path, when it was refused before any work
        self.last_good: str | None = None  # set by the training loop
        self.resumable = False  # whether a training run was under way

    def __str__(self) -> str:
        code = errnos.errorcode.get(self.errno or 0)
        why = self.reason + (f" ({code})" if code else "")
        if self.flag is not None:
            return f"{self.flag} {self.path}: cannot write there: {why}"
        text = f"cannot write {self.path}: {why}"
        if self.resumable and self.last_good:
            text += f"; last good checkpoint {self.last_good}; continue with: ganctl train --resume {self.last_good}"
        elif self.resumable:
            text += "; no checkpoint had been written yet: free some space and start the run again"
        return text


class Interrupted(Exception):
    """Training stopped by SIGINT or SIGTERM after writing a checkpoint; exit 128 + signal.
    `details` says so for a machine: the step and the checkpoint to resume from."""

    def __init__(self, message: str, signum: int, details: dict | None = None):
        super().__init__(message)
        self.exit_code = 128 + signum
        self.details = {"stopped": "signal", "signal": signum, **(details or {})}


class NonFinite(Exception):
    """A NaN or Inf appeared in training (exit 1: a check failed)."""

    def __init__(self, step: int, quantity: str):
        super().__init__(f"step {step}: {quantity} is not finite")
        self.step, self.quantity = step, quantity


class TrainingFailed(Exception):
    """Training could not go on (for example a NaN with --on-nonfinite stop): exit 1.
    `details` says what stopped it, for a machine (`--json`)."""

    def __init__(self, message: str, details: dict | None = None):
        super().__init__(message)
        self.details = details or {}


class RankFailed(Exception):
    """A process of a multi-process run died or stopped answering: exit 75 (sysexits'
    EX_TEMPFAIL, try again), with the step, the newest checkpoint and the command that resumes."""

    exit_code = 75


class JobFailed(Exception):
    """A job of a comparison run elsewhere (a worker process, a Ray task) failed: its one line,
    naming the job, and the exit code it would have had on its own."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code
