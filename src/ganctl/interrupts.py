"""Stopping a run cleanly on SIGINT (Ctrl-C) or SIGTERM (a scheduler's pre-emption).

The first signal only sets a flag: the training loop finishes the step it is in, writes a
checkpoint at that step and stops (exit 130 or 143). A second signal is not waited on: it
raises KeyboardInterrupt at once, and the last checkpoint on disk stays intact because every
checkpoint is written to a temporary file and renamed.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Guard:
    def __init__(self) -> None:
        self.signum: int | None = None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else ""

    def _first(self, signum: int, frame: Any) -> None:
        self.signum = signum
        for s in SIGNALS:  # the next one stops at once
            signal.signal(s, self._second)

    @staticmethod
    def _second(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt


@contextlib.contextmanager
def guard() -> Iterator[Guard]:
    """Catch SIGINT and SIGTERM for the duration (in the main thread only; elsewhere signals
    cannot be caught and the guard never fires)."""
    g = Guard()
    if threading.current_thread() is not threading.main_thread():
        yield g
        return
    previous = {s: signal.getsignal(s) for s in SIGNALS}
    for s in SIGNALS:
        signal.signal(s, g._first)
    try:
        yield g
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
