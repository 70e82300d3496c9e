"""A certified lower bound on W1 between real data and any generator's samples
(`ganctl eval --w1-bound`).

By Kantorovich-Rubinstein duality, W1(P, Q) = sup over 1-Lipschitz f of E_P f - E_Q f, so any
critic f with a certified Lipschitz constant L gives W1(P, Q) >= (E_P f - E_Q f) / L. The
protocol (`Protocol`, written into the report):

1. Split each side at random (seeded) into a training part and a held-out part (20 %).
2. Train a certified critic (`ganctl.models.certified`: the DCGAN critic's layout at the data's
   size with orthogonal convolutions and MaxMin, or on 2-D points an orthonormal MLP) to
   maximise the gap E_real f - E_fake f on the training parts: `steps` Adam steps on batches of
   `batch` from each side, from the protocol's seed.
3. Measure its Lipschitz constant L layer by layer (`ganctl.lipschitz.bounds.upper_bound`:
   exact or certified per layer, 1 within float32 rounding) and the gap on the held-out parts.

The held-out gap / L is an unbiased estimate of E_P f - E_Q f for a critic chosen without
those samples, so of a quantity no larger than W1(P, Q): it can understate how far the
generator is from the data (a critic trained briefly finds less), never overstate it beyond
its standard error, which the report gives. The training parts' gap is beside it: on finite
samples it is biased upwards (two samples of one distribution are apart), which is why the
held-out one is the score.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from ganctl import progress
from ganctl.config import TrainConfig
from ganctl.errors import ConfigError, DataError
from ganctl.lipschitz.bounds import certified, upper_bound, w1_lower_bound
from ganctl.models.certified import NEEDS, orthogonal_convolutional
from ganctl.models.dcgan import DCGAN_SIZES, build_dcgan
from ganctl.models.mlp import build_mlp
from ganctl.nets.networks import eval_mode

HELD_OUT = 0.2


@dataclass(frozen=True)
class Protocol:
    """How the critic behind the bound is trained: fixed, so that two generators' bounds are
    measured alike (the defaults are the ones `docs/eval.md` reports)."""

    steps: int = 1000
    batch: int = 64
    lr: float = 1e-3
    betas: tuple[float, float] = (0.5, 0.9)
    width: int = 32  # the critic's channels at full resolution (DCGAN's w), or the MLP's width on points
    held_out: float = HELD_OUT
    seed: int = 0

    def check(self) -> None:
        if self.steps < 1:
            raise ConfigError(f"--w1-steps must be at least 1, got {self.steps}")


def critic_for(shape: tuple[int, ...], width: int) -> nn.Module:
    """The certified critic of the protocol for samples of `shape`."""
    if len(shape) == 1:
        cfg = TrainConfig(arch="mlp", width=width, depth=3, z_dim=2, gen_norm="none", critic_norm="none")
        critic = build_mlp(cfg, shape)[1]
    else:
        if len(shape) != 3 or shape[1] != shape[2] or shape[1] not in DCGAN_SIZES:
            sizes = ", ".join(map(str, DCGAN_SIZES))
            raise DataError(f"--w1-bound: its critic takes square images of side {sizes}; these are {shape}")
        critic = build_dcgan(
            TrainConfig(arch="dcgan", width=width, z_dim=8, gen_norm="none", critic_norm="none"), shape
        )[1]
    try:
        return orthogonal_convolutional(critic)
    except ImportError:
        raise ConfigError(NEEDS.replace("--lipschitz aoc", "--w1-bound")) from None


def _split(x: Tensor, share: float, g: torch.Generator) -> tuple[Tensor, Tensor]:
    order = torch.randperm(len(x), generator=g)
    held = max(1, round(share * len(x)))
    return x[order[held:]], x[order[:held]]


def _batches(x: Tensor, batch: int, steps: int, g: torch.Generator) -> Iterator[Tensor]:
    for _ in range(steps):
        yield x[torch.randint(len(x), (min(batch, len(x)),), generator=g)]


def certified_w1(real: Tensor, fake: Tensor, protocol: Protocol, device: torch.device | str = "cpu") -> dict[str, Any]:
    """The certified W1 lower bound between the samples' distributions (module docstring), with
    the protocol, the critic's bound and both parts' values."""
    protocol.check()
    if tuple(real.shape[1:]) != tuple(fake.shape[1:]):
        raise DataError(
            f"--w1-bound: real samples have shape {tuple(real.shape[1:])}, generated {tuple(fake.shape[1:])}"
        )
    if min(len(real), len(fake)) < 10:
        raise DataError(
            f"--w1-bound needs at least 10 samples a side (a held-out part of each); got {len(real)} and {len(fake)}"
        )
    started = time.perf_counter()
    device = torch.device(device)
    g = torch.Generator().manual_seed(protocol.seed)
    real_train, real_held = _split(real.float().cpu(), protocol.held_out, g)
    fake_train, fake_held = _split(fake.float().cpu(), protocol.held_out, g)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(protocol.seed)  # the critic's start
        critic = critic_for(tuple(real.shape[1:]), protocol.width).to(device)
    opt = torch.optim.Adam([p for p in critic.parameters() if p.requires_grad], lr=protocol.lr, betas=protocol.betas)
    pairs = zip(
        _batches(real_train, protocol.batch, protocol.steps, g), _batches(fake_train, protocol.batch, protocol.steps, g)
    )
    for r, f in progress.counted(pairs, "certified critic steps", protocol.steps, lambda _: 1):
        with parametrize.cached():
            loss = critic(f.to(device)).mean() - critic(r.to(device)).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
        opt.step()
    progress.report("the critic's bound and its held-out gap", 0, 1)
    with eval_mode(critic), parametrize.cached():
        lipschitz, table = upper_bound(critic, tuple(real.shape[1:]), device)
        if not certified(table) or not math.isfinite(lipschitz):  # orthogonium changed under us: say so, claim nothing
            loose = ", ".join(e.name for e in table if e.certainty not in ("exact", "certified")) or "its product"
            raise ConfigError(
                f"--w1-bound: the critic's bound is not certified ({loose}) with the installed orthogonium (ganctl"
                " supports 0.0.4 to 0.0.x: pip install 'ganctl[certified]'); no lower bound is claimed"
            )
        held = w1_lower_bound(critic, real_held, fake_held, lipschitz)
        k = min(len(real_train), len(fake_train), len(real_held) * 4)
        train = w1_lower_bound(critic, real_train[:k], fake_train[:k], lipschitz)
    progress.report("the critic's bound and its held-out gap", 1, 1)
    return {
        "value": held["value"],
        "se": held["se"],
        "train_value": train["value"],
        "lipschitz": lipschitz,
        "n_train": [len(real_train), len(fake_train)],
        "n_held": [len(real_held), len(fake_held)],
        "protocol": asdict(protocol),
        "seconds": round(time.perf_counter() - started, 3),
    }
