from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import torch
from torch import nn

from ganctl.config import TrainConfig


class Linear(nn.Module):
    """D(x) = <w, x> + b over all of x's non-batch axes: gradient w everywhere."""

    def __init__(self, w: torch.Tensor, b: float = 0.0):
        super().__init__()
        self.w = nn.Parameter(w.clone())
        self.b = nn.Parameter(torch.tensor(b))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * self.w).flatten(1).sum(dim=1, keepdim=True) + self.b


def fused_and_autograd_stats(cfg: TrainConfig, steps: int = 4) -> list[tuple[dict, dict]]:
    """Per step, the logged stats of a trainer on the hand-written MLP step and of one on
    autograd's, built from the same config and seed."""
    from ganctl.methods.registry import resolve
    from ganctl.training.engine import Trainer

    fused, plain = Trainer(resolve(cfg)), Trainer(resolve(cfg), fused=False)
    assert fused.uses_fused_step and not plain.uses_fused_step
    pairs = []
    for _ in range(steps):
        fused.train_step()
        plain.train_step()
        pairs.append((fused.pop_stats(), plain.pop_stats()))
    return pairs


def small(**changes) -> TrainConfig:
    """A tiny, fast CPU config for tests."""
    base = dict(
        data="8gaussians",
        width=32,
        depth=2,
        batch_size=64,
        steps=6,
        device="cpu",
        log_every=2,
        eval_every=0,
        sample_every=0,
        ckpt_every=0,
        eval_samples=200,
    )
    base.update(changes)
    return TrainConfig(**base)


@pytest.fixture(autouse=True)
def _deterministic_threads():
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


def central_difference(fn, tensor: torch.Tensor, index: tuple[int, ...], h: float) -> float:
    """(fn() at tensor[index] + h  -  fn() at tensor[index] - h) / 2h, restoring the entry."""
    with torch.no_grad():
        tensor[index] += h
        up = float(fn())
        tensor[index] -= 2 * h
        down = float(fn())
        tensor[index] += h
    return (up - down) / (2 * h)


# A long 2-D run for tests of real processes (signals, locks); the caller adds --ckpt-every and --out.
LONG_RUN = (
    "train --data 8gaussians --lipschitz gp --steps 100000 --batch-size 32 --width 16 --depth 2 --device cpu"
    " --log-every 5 --eval-every 0 --sample-every 0"
).split()


def start_training(out, *extra: str) -> subprocess.Popen:
    """`python -m ganctl train` on LONG_RUN as a real process, one thread, stderr piped."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "ganctl", *LONG_RUN, *extra, "--out", str(out)]
    return subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)


def wait_for(proc: subprocess.Popen, text: str, timeout: float = 120) -> list[str]:
    """Read stderr until a line containing `text` (the run is then well under way)."""
    deadline = time.monotonic() + timeout
    lines = []
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        lines.append(line)
        if text in line:
            return lines
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise AssertionError("".join(lines))
