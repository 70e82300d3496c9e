"""Data-parallel training over processes started by torchrun, without DistributedDataParallel.

DDP's gradient hooks do not support double backward (`autograd.grad(..., create_graph=True)`),
which every gradient penalty needs. So each rank keeps a plain local replica: penalties are
computed through `autograd.grad` on it, exactly as on one device, and after each backward the
gradients are averaged over ranks with one all-reduce of a flat buffer, before the optimizer
step. Replicas start identical (initialised from the seed alone, then broadcast from rank 0)
and stay identical because every rank applies the same averaged gradients; spectral norm's
power iteration, weight clipping and the EMA are functions of the weights alone.

Each rank draws its own data, latents and interpolation coefficients from a stream seeded by
(seed, rank); rank 0's stream is the single-process one. `--batch-size` is per rank: the
global batch is batch_size x world size.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

RANK_SEED_STRIDE = 104_729  # rank r's stream: seed + r * stride


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.size > 1


def requested() -> bool:
    """True inside a torchrun process of a group of more than one."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def current() -> World:
    """The world this process belongs to (one process when none was started)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return World()
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def init(device: torch.device) -> World:
    """Join the process group torchrun set up: NCCL on CUDA, gloo otherwise."""
    import torch.distributed as dist

    if not requested():
        return World()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return current()


def shutdown() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()  # leave together: a rank tearing down while another still talks aborts
        dist.destroy_process_group()


def rank_seed(seed: int, rank: int) -> int:
    return seed + RANK_SEED_STRIDE * rank


def _comm_device(params: list[Tensor]) -> torch.device:
    return params[0].device if params else torch.device("cpu")


def average_gradients(module: nn.Module, world: World) -> None:
    """Replace every parameter's gradient by its mean over ranks (missing gradients count as
    zero, so every rank contributes a buffer of the same layout)."""
    if not world.active:  # checked first: this runs after every backward
        return
    import torch.distributed as dist

    params = [p for p in module.parameters() if p.requires_grad]
    if not params:
        return
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params])
    dist.all_reduce(flat)
    flat /= world.size
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset : offset + n].view_as(p).clone()
        offset += n


def broadcast_modules(modules: Iterable[nn.Module], world: World) -> None:
    """Rank 0's parameters and buffers everywhere."""
    import torch.distributed as dist

    if not world.active:
        return
    for module in modules:
        for tensor in [*module.parameters(), *module.buffers()]:
            dist.broadcast(tensor.data, src=0)


def fingerprint(modules: Iterable[nn.Module]) -> Tensor:
    """Sum and sum of squares of every parameter and buffer, in float64: equal across ranks
    when the replicas are equal (and, in practice, only then)."""
    values = [t.detach().double() for m in modules for t in [*m.parameters(), *m.buffers()] if t.is_floating_point()]
    return torch.stack([torch.stack([v.sum(), v.pow(2).sum()]) for v in values]).reshape(-1).cpu()


def in_sync(modules: list[nn.Module], world: World) -> bool:
    """Whether every rank holds the same replicas as rank 0 (a collective: call on every rank)."""
    import torch.distributed as dist

    if not world.active:
        return True
    mine = fingerprint(modules)
    device = _comm_device([p for m in modules for p in m.parameters()])
    gathered = [torch.empty_like(mine, device=device) for _ in range(world.size)]
    dist.all_gather(gathered, mine.to(device))
    return all(torch.equal(g.cpu(), gathered[0].cpu()) for g in gathered)


def gather_states(state: Tensor, world: World, device: torch.device) -> list[Tensor]:
    """Every rank's random-generator state (uint8), on every rank (a collective)."""
    import torch.distributed as dist

    if not world.active:
        return [state]
    comm = device if device.type == "cuda" else torch.device("cpu")
    gathered = [torch.empty_like(state, device=comm) for _ in range(world.size)]
    dist.all_gather(gathered, state.to(comm))
    return [g.cpu() for g in gathered]


def all_ok(ok: bool, world: World) -> bool:
    """Whether every rank reports success (a collective), so that one rank's failure to set up
    stops all of them instead of leaving the others waiting in an all-reduce."""
    import torch.distributed as dist

    if not world.active:
        return ok
    flag = torch.tensor([1 if ok else 0], dtype=torch.int64)
    if dist.get_backend() == "nccl":
        flag = flag.cuda()
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())
