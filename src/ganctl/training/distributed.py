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

Failures. Every collective of a training step runs under `--dist-timeout` (a hung peer ends
the job instead of hanging it), and a collective that fails (a peer died: gloo's "connection
reset", NCCL's abort; or it timed out) raises `PeerLost` rather than the backend's traceback.
While rank 0 works alone (setting up, evaluating, drawing, writing a checkpoint), the others
wait for it in gloo's monitored barrier, whose timeout is its own (`SOLO_TIMEOUT`), so a short
--dist-timeout does not end a run whose rank 0 is computing an FID. (On NCCL that barrier is the
group's own, under --dist-timeout. A second gloo group would do, but a group made with
`new_group` cannot connect after a torchrun restart: its store keys outlive the attempt.)
Under torchrun's restarts (`--max-restarts`), `restart_count` says which attempt this is.
"""

from __future__ import annotations

import datetime
import functools
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor, nn

RANK_SEED_STRIDE = 104_729  # rank r's stream: seed + r * stride
SOLO_TIMEOUT = 6 * 3600.0  # seconds the other ranks wait while rank 0 evaluates or writes alone

F = TypeVar("F", bound=Callable[..., Any])


class PeerLost(RuntimeError):
    """A collective failed: another process of the group died, or did not answer in time."""

    def __init__(self, rank: int, detail: str, timed_out: bool):
        super().__init__(detail)
        self.rank, self.detail, self.timed_out = rank, detail, timed_out


def _collective(fn: F) -> F:
    """The backend's failure of a collective as `PeerLost`, with its first line as detail."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except PeerLost:
            raise
        except RuntimeError as exc:  # gloo and NCCL raise RuntimeError (or a DistError subclass)
            if not (dist.is_available() and dist.is_initialized()):
                raise
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            text = text.split("] ", 1)[-1].split(". ", 1)[0]  # the first sentence, without the C++ source location
            timed_out = "timed out" in text.lower() or "timeout" in text.lower()
            raise PeerLost(dist.get_rank(), text, timed_out) from None

    return wrapper  # type: ignore[return-value]


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

    if not (dist.is_available() and dist.is_initialized()):
        return World()
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def restart_count() -> int:
    """Which of torchrun's attempts this is (0: the first; `--max-restarts` allows more)."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)


def run_id() -> str | None:
    """The id torchrun gave this job (the same on every node and every restart)."""
    return os.environ.get("TORCHELASTIC_RUN_ID") or None


def init(device: torch.device, timeout: float | None = None) -> World:
    """Join the process group torchrun set up: NCCL on CUDA, gloo otherwise, its collectives
    under `timeout` seconds."""

    if not requested():
        return World()
    if not dist.is_initialized():
        limit = datetime.timedelta(seconds=timeout) if timeout else None
        backend = "nccl" if device.type == "cuda" else "gloo"
        store = _attempt_store()
        if store is None:
            dist.init_process_group(backend, timeout=limit)
        else:
            rank, size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
            dist.init_process_group(backend, store=store, rank=rank, world_size=size, timeout=limit)
    return current()


def _attempt_store() -> Any:
    """torchrun's store under a prefix of this attempt's own, or None outside torchrun's agent.
    The agent's store outlives a restart, and the group's keys (each rank's address) with it:
    without a prefix a restarted rank can read a dead one's address and fail to connect."""

    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return None
    store = dist.TCPStore(
        os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), int(os.environ["WORLD_SIZE"]), is_master=False
    )
    return dist.PrefixStore(f"ganctl/attempt-{restart_count()}", store)


@_collective
def wait_for_main(world: World) -> None:
    """Every rank waits here for rank 0 to finish what it does alone (on gloo a barrier with a
    timeout of its own, `SOLO_TIMEOUT`)."""

    if not world.active:
        return
    if dist.get_backend() == "gloo":
        dist.monitored_barrier(timeout=datetime.timedelta(seconds=SOLO_TIMEOUT), wait_all_ranks=True)
    else:
        dist.barrier()


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        wait_for_main(current())  # leave together: a rank tearing down while another still talks aborts
        dist.destroy_process_group()


def rank_seed(seed: int, rank: int) -> int:
    return seed + RANK_SEED_STRIDE * rank


def _comm_device(params: list[Tensor]) -> torch.device:
    return params[0].device if params else torch.device("cpu")


@_collective
def average_gradients(module: nn.Module, world: World) -> None:
    """Replace every parameter's gradient by its mean over ranks (missing gradients count as
    zero, so every rank contributes a buffer of the same layout)."""
    if not world.active:  # checked first: this runs after every backward
        return

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


@_collective
def broadcast_modules(modules: Iterable[nn.Module], world: World) -> None:
    """Rank 0's parameters and buffers everywhere."""

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


@_collective
def in_sync(modules: list[nn.Module], world: World) -> bool:
    """Whether every rank holds the same replicas as rank 0 (a collective: call on every rank)."""

    if not world.active:
        return True
    mine = fingerprint(modules)
    device = _comm_device([p for m in modules for p in m.parameters()])
    gathered = [torch.empty_like(mine, device=device) for _ in range(world.size)]
    dist.all_gather(gathered, mine.to(device))
    return all(torch.equal(g.cpu(), gathered[0].cpu()) for g in gathered)


@_collective
def gather_states(state: Tensor, world: World, device: torch.device) -> list[Tensor]:
    """Every rank's random-generator state (uint8), on every rank (a collective)."""

    if not world.active:
        return [state]
    comm = device if device.type == "cuda" else torch.device("cpu")
    gathered = [torch.empty_like(state, device=comm) for _ in range(world.size)]
    dist.all_gather(gathered, state.to(comm))
    return [g.cpu() for g in gathered]


@_collective
def sum_over_ranks(values: list[float], world: World) -> list[float]:
    """Each value summed over the ranks (float64; the values themselves on one process)."""
    if not world.active:
        return values

    total = torch.tensor(values, dtype=torch.float64)
    if dist.get_backend() == "nccl":
        total = total.cuda()
    dist.all_reduce(total)
    return total.tolist()


@_collective
def all_ok(ok: bool, world: World) -> bool:
    """Whether every rank reports success (a collective), so that one rank's failure to set up
    stops all of them instead of leaving the others waiting in an all-reduce."""

    if not world.active:
        return ok
    flag = torch.tensor([1 if ok else 0], dtype=torch.int64)
    if dist.get_backend() == "nccl":
        flag = flag.cuda()
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())
