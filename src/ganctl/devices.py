"""Turning --device into a torch.device, with a clear message when it is not available, and
--threads into the process's CPU thread count."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

import torch

from ganctl.config import MAX_THREADS
from ganctl.errors import ConfigError


def resolve_device(spec: str) -> torch.device:
    """auto -> cuda if available, else mps if available, else cpu; cpu | cuda[:N] | mps."""
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if spec == "cpu":
        return torch.device("cpu")
    match = re.fullmatch(r"cuda(?::(\d+))?", spec)
    if match:
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {spec}: CUDA is not available on this machine")
        index = int(match.group(1) or 0)
        if index >= torch.cuda.device_count():
            raise ConfigError(f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s) here")
        return torch.device("cuda", index)
    if spec == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError("--device mps: MPS is not available on this machine")
        return torch.device("mps")
    raise ConfigError(f"--device {spec!r} is not one of: auto, cpu, cuda, cuda:N, mps")


@contextlib.contextmanager
def threads(count: int | None) -> Iterator[None]:
    """The CPU thread count for what runs inside (--threads; 0 or None: torch's own, which
    measured faster than one thread even for the 2-D MLP on 2 cores, docs/benchmarks.md),
    restored afterwards. Runs and measurements side by side want one thread each."""
    if count is not None and not 0 <= count <= MAX_THREADS:
        raise ConfigError(f"--threads {count}: give 0 (torch's own choice) to {MAX_THREADS}")
    previous = torch.get_num_threads()
    if count:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
