"""Sizes refused before anything is allocated: an estimate from the shapes, against what the
device has, in one line naming the flag, the memory it would need and what there is.

The estimates count the tensors a job must hold at once (data, weights and their optimizer
state, a batch's activations, samples, features); they are lower bounds, so a size that
passes can still fail on a busy machine, and that failure is one line too
(`ganctl.cli.output.handle_errors`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import math
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import torch

from ganctl.errors import ConfigError

FLOAT = 4  # bytes of a float32
USABLE_SHARE = 0.9  # of the memory free now: the rest is the process's own and the system's


def text(n: float) -> str:
    """A byte count for people: 1.8 TB, 512 MB."""
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            return f"{n:.3g} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    raise AssertionError  # pragma: no cover


def available(device: str = "cpu") -> int:
    """Bytes free on `device` now: a CUDA device's free memory, else the machine's available
    memory (Linux's MemAvailable; elsewhere the free pages)."""
    if str(device).startswith("cuda"):
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - no way to know: do not refuse
        return 1 << 62


def require(need: float, what: str, device: str = "cpu") -> None:
    """Refuse `what` (a flag and its value, and what it makes) when it needs more than the
    device can give."""
    free = available(device)
    if not math.isfinite(need) or need > USABLE_SHARE * free:
        where = "this machine" if not str(device).startswith("cuda") else str(device)
        raise ConfigError(f"{what} need {text(need)} of memory; {where} has {text(free)} free")


def require_disk(need: float, what: str, folder: Path) -> None:
    """Refuse a file of `need` bytes where the disk has less room."""
    probe = next((p for p in (folder, *folder.parents) if p.exists()), Path("."))
    free = shutil.disk_usage(probe).free
    if need > free:
        raise ConfigError(f"{what} need {text(need)} of disk; {probe} has {text(free)} free")


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, where the C library is glibc; None elsewhere (macOS, musl)."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def release() -> None:
    """Give the C heap's free memory back to the system. Pairwise distances over tens of
    thousands of samples allocate and free blocks of tens of megabytes (cdist's padded copy of
    the other set each time); glibc then raises its mmap threshold and serves them from the
    heap, which fragments, and the resident size of `eval` on 26,000 stacks grew to 1.7 to 3.3 GB
    for 0.9 GB of live data. Trimming after each block keeps it to what is in use."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
