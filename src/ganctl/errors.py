"""Errors a user can act on. The CLI prints their message (no traceback) and exits with 2."""


class GanctlError(Exception):
    """Bad usage or input: the message names the flag, file or value and what is accepted."""


class ConfigError(GanctlError):
    pass


class DataError(GanctlError):
    pass


class CheckpointError(GanctlError):
    pass


class Interrupted(Exception):
    """Training stopped by SIGINT or SIGTERM after writing a checkpoint; exit 128 + signal."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum


class NonFinite(Exception):
    """A NaN or Inf appeared in training (exit 1: a check failed)."""

    def __init__(self, step: int, quantity: str):
        super().__init__(f"step {step}: {quantity} is not finite")
        self.step, self.quantity = step, quantity


class TrainingFailed(Exception):
    """Training could not go on (for example a NaN with --on-nonfinite stop): exit 1."""
