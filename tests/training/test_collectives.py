"""Every collective turns the backend's failure into `PeerLost`, in one process: the backend is
replaced by one whose collectives fail as gloo's do when a peer has died."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
from torch import nn

from ganctl.training import distributed

GLOO_ERROR = "[gloo/transport/tcp/pair.cc:534] Connection closed by peer [127.0.0.1]:13747. More"


@pytest.fixture
def dead_peer(monkeypatch):
    def fail(*args, **kwargs):
        raise RuntimeError(GLOO_ERROR)

    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_rank", lambda: 0)
    monkeypatch.setattr(dist, "get_backend", lambda *a: "gloo")
    for name in ("all_reduce", "all_gather", "broadcast", "barrier", "monitored_barrier"):
        monkeypatch.setattr(dist, name, fail)


WORLD = distributed.World(rank=0, size=2)
MODULE = nn.Linear(2, 1)
MODULE.weight.grad = torch.ones(1, 2)
COLLECTIVES = {
    "wait_for_main": lambda: distributed.wait_for_main(WORLD),
    "average_gradients": lambda: distributed.average_gradients(MODULE, WORLD),
    "broadcast_modules": lambda: distributed.broadcast_modules([MODULE], WORLD),
    "in_sync": lambda: distributed.in_sync([MODULE], WORLD),
    "gather_states": lambda: distributed.gather_states(torch.zeros(4, dtype=torch.uint8), WORLD, torch.device("cpu")),
    "sum_over_ranks": lambda: distributed.sum_over_ranks([1.0, 2.0], WORLD),
    "all_ok": lambda: distributed.all_ok(True, WORLD),
}


@pytest.mark.parametrize("name", COLLECTIVES)
def test_a_failed_collective_is_peer_lost_with_the_backend_s_first_sentence(dead_peer, name):
    with pytest.raises(distributed.PeerLost) as caught:
        COLLECTIVES[name]()
    assert caught.value.detail == "Connection closed by peer [127.0.0.1]:13747"
    assert caught.value.rank == 0 and not caught.value.timed_out


def test_every_collective_of_the_module_is_in_the_table():
    import inspect

    calls = ("dist.all_reduce", "dist.all_gather", "dist.broadcast", "dist.barrier", "dist.monitored_barrier")
    callers = {
        name
        for name, fn in vars(distributed).items()
        if inspect.isfunction(fn)
        and fn.__module__ == distributed.__name__
        and any(call in inspect.getsource(inspect.unwrap(fn)) for call in calls)
    }
    assert callers == set(COLLECTIVES)


def test_a_failed_run_s_tear_down_reports_the_error_in_hand_not_the_lost_peer(monkeypatch):
    from ganctl.training import loop

    def barrier_to_a_dead_peer():
        raise distributed.PeerLost(0, "Connection closed by peer", False)

    monkeypatch.setattr(distributed, "requested", lambda: True)
    monkeypatch.setattr(distributed, "current", lambda: distributed.World())
    monkeypatch.setattr(distributed, "init", lambda device, timeout: distributed.World(0, 2))
    monkeypatch.setattr(distributed, "shutdown", barrier_to_a_dead_peer)
    with pytest.raises(KeyboardInterrupt), loop._process_group("cpu", 5.0):
        raise KeyboardInterrupt  # a second Ctrl-C while the other rank is gone
    with pytest.raises(distributed.PeerLost), loop._process_group("cpu", 5.0):
        pass  # a run that ended well still fails loudly if its peer cannot leave with it
