"""Exact transport: the assignment against brute force, W1 against closed forms, and the W1 floor
of a perfect generator with its cache."""

import itertools

import numpy as np
import pytest
import torch

from ganctl.data import get_dataset
from ganctl.lipschitz.transport import linear_assignment, w1_floor, wasserstein1


@pytest.mark.parametrize("n", [1, 2, 3, 5, 7])
def test_assignment_matches_brute_force(n):
    rng = np.random.default_rng(n)
    for _ in range(10):
        cost = rng.random((n, n))
        best = min(sum(cost[i, p[i]] for i in range(n)) for p in itertools.permutations(range(n)))
        cols = linear_assignment(cost)
        assert sorted(cols) == list(range(n))
        assert cost[np.arange(n), cols].sum() == pytest.approx(best)


def test_w1_in_one_dimension_is_the_sorted_matching():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(200, 1, generator=g)
    b = torch.rand(200, 1, generator=g) * 3
    expected = (a.double().sort(dim=0).values - b.double().sort(dim=0).values).abs().mean()
    assert wasserstein1(a, b) == pytest.approx(float(expected), rel=1e-9)


def test_w1_of_a_translation_is_its_length():
    a = torch.randn(100, 2, generator=torch.Generator().manual_seed(1)) * 0.01
    assert wasserstein1(a, a + torch.tensor([3.0, 4.0])) == pytest.approx(5.0, abs=0.02)


def test_the_w1_floor_is_a_mean_and_spread_over_draws():
    ds = get_dataset("8gaussians")
    g = torch.Generator().manual_seed(0)
    mean, sd = w1_floor(lambda n: ds.sample(n, g, "cpu"), 256, draws=6)
    direct = [wasserstein1(ds.sample(256, g, "cpu"), ds.sample(256, g, "cpu")) for _ in range(30)]
    assert sd > 0 and abs(mean - float(np.mean(direct))) < 3 * float(np.std(direct)) / 6**0.5 + 1e-9
    # more points, a lower floor: W1 of two samples of one distribution shrinks with n
    assert w1_floor(lambda n: ds.sample(n, g, "cpu"), 2048, draws=3)[0] < mean


def test_the_w1_floor_is_computed_once_and_read_back_from_the_cache(tmp_path, monkeypatch):
    from ganctl.data import get_dataset
    from ganctl.lipschitz import transport

    monkeypatch.setenv("GANCTL_CACHE", str(tmp_path))
    monkeypatch.setattr(transport, "_FLOORS", {})
    data = get_dataset("8gaussians")
    first = transport.floor_of(data, 64, seed=5)
    (cached,) = tmp_path.glob("w1floor-*.json")
    monkeypatch.setattr(transport, "_FLOORS", {})  # a new process: only the file is left

    def no_solves(*args, **kwargs):
        raise AssertionError("the floor was computed again")

    monkeypatch.setattr(transport, "w1_floor", no_solves)
    assert transport.floor_of(data, 64, seed=5) == first
    cached.write_text("{not json")  # a damaged entry is computed again, to the same numbers
    monkeypatch.undo()
    monkeypatch.setenv("GANCTL_CACHE", str(tmp_path))
    monkeypatch.setattr(transport, "_FLOORS", {})
    assert transport.floor_of(data, 64, seed=5) == first
    assert transport.floor_of(data, 64, seed=6) != first  # the seed's own draws
