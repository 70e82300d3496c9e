"""Progress of long library work, told to whoever listens: the CLI draws it as a bar on a
terminal and as lines when piped; a library caller hears nothing unless it listens.

The measuring code reports (what, done, total) as it goes, for example ("real features", 1500,
10000), without knowing who listens or whether anyone does: a listener is set for a block of
work with `listening`, and `report` reaches the innermost one. A phase starts when its `done`
is 0 and ends when `done` reaches `total`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from typing import TypeVar

Listener = Callable[[str, int, int], None]  # (what, done, total)
T = TypeVar("T")

_LISTENER: ContextVar[Listener | None] = ContextVar("ganctl_progress", default=None)


@contextlib.contextmanager
def listening(listener: Listener | None) -> Iterator[None]:
    """Send every `report` made inside this block to `listener` (None: to no one)."""
    token = _LISTENER.set(listener)
    try:
        yield
    finally:
        _LISTENER.reset(token)


def report(what: str, done: int, total: int) -> None:
    """`done` of `total` units of `what` are done (0 starts the phase, `total` ends it)."""
    listener = _LISTENER.get()
    if listener is not None:
        listener(what, done, total)


def counted(items: Iterable[T], what: str, total: int, size: Callable[[T], int] = len) -> Iterator[T]:
    """The items, reporting after each one has been used how many of `total` units are done
    (`size` of each item: its length, for chunks of samples)."""
    done = 0
    report(what, 0, total)
    for item in items:
        yield item
        done += size(item)
        report(what, min(done, total), total)
    if done < total:  # fewer than announced (a smaller set): the phase has ended all the same
        report(what, total, total)
