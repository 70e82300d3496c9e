from __future__ import annotations

import json
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
    from ganctl.methods.resolve import resolve
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


# --- the command line, as tests drive it -------------------------------------------------------
# A tiny 2-D CPU run's settings as flags; `cli_args` lays them out, with a test's own on top.
TINY_FLAGS = {
    "data": "8gaussians",
    "width": 16,
    "depth": 2,
    "batch_size": 32,
    "device": "cpu",
    "eval_samples": 100,
    "eval_every": 0,
    "sample_every": 0,
}


def cli_args(**flags) -> list[str]:
    """`--flag value` words of TINY_FLAGS updated with `flags` (a value of None drops the flag)."""
    words = []
    for name, value in {**TINY_FLAGS, **flags}.items():
        if value is not None:
            words += ["--" + name.replace("_", "-"), str(value)]
    return words


def invoke(*args):
    """`ganctl ARGS...` in this process (typer's CliRunner: stdout and stderr apart)."""
    from typer.testing import CliRunner

    from ganctl.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def parse_json(output: str) -> dict:
    """The JSON object a command printed with --json, read strictly (no NaN or Infinity)."""

    def refuse(name: str) -> None:
        raise ValueError(f"not strict JSON: {name}")

    return json.loads(output[output.index("{") : output.rindex("}") + 1], parse_constant=refuse)


def run_ganctl(*args, cwd=None, env=None, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
    """`python -m ganctl ARGS...` as a real process with one torch thread, its output captured;
    with `check`, its exit code must be 0."""
    env = {**(env or os.environ), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "ganctl", *map(str, args)]
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


# A long 2-D run for tests of real processes (signals, locks); the caller adds --ckpt-every and --out.
LONG_RUN = ["train", *cli_args(lipschitz="gp", steps=100000, log_every=5)]


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


def bumps(n: int, seed: int = 0):
    """n 16 px grey images (uint8, N x 16 x 16) of a wide bright bump at a random place: a 2-D
    manifold whose nearest neighbours are by place, as a data set's are by content."""
    import torch

    g = torch.Generator().manual_seed(seed)
    centre = torch.rand(n, 2, 1, 1, generator=g, dtype=torch.float64) * 10 + 3
    rows, cols = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    bump = torch.exp(-((rows - centre[:, 0]) ** 2 + (cols - centre[:, 1]) ** 2) / 18)
    return (255 * bump).round().to(torch.uint8)


def write_images(folder, images) -> None:
    """Grey uint8 images (N x H x W, a tensor or array) as numbered PNG files in a new folder."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True)
    for i, image in enumerate(np.asarray(images)):
        Image.fromarray(image).save(folder / f"{i:04d}.png")


def straight_and_resumed(make, steps: int, at: int, path):
    """A trainer run `steps` steps straight, and one run `at` steps, saved to `path`, resumed from
    it and run to `steps`: (straight, first, resumed) for a test of an exact resume."""
    import ganctl
    from ganctl.nets import checkpoint
    from ganctl.training.state import capture

    straight, first = make(), make()
    for _ in range(steps):
        straight.train_step()
    for _ in range(at):
        first.train_step()
    checkpoint.save(capture(first), path)
    resumed = ganctl.resume(path)
    for _ in range(steps - at):
        resumed.train_step()
    return straight, first, resumed
