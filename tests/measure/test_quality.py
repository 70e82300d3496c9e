import itertools
import math

import numpy as np
import pytest
import torch

from ganctl.data import get_dataset
from ganctl.measure.quality import linear_assignment, mixture_quality, w1_floor, wasserstein1


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


def test_real_samples_cover_every_mode_with_chi_square_share():
    ds = get_dataset("25gaussians")
    x = ds.sample(20000, torch.Generator().manual_seed(0), "cpu")
    q = mixture_quality(x, ds.mixture.centres_tensor(), ds.mixture.std)
    assert q["modes"] == q["modes_total"] == 25
    # within 3 std in 2-D: P(chi^2_2 <= 9) = 1 - exp(-4.5)
    assert q["hq_share"] == pytest.approx(1 - math.exp(-4.5), abs=0.005)


def test_collapsed_and_scattered_samples():
    ds = get_dataset("8gaussians")
    centres = ds.mixture.centres_tensor()
    collapsed = centres[0] + ds.mixture.std * torch.randn(1000, 2, generator=torch.Generator().manual_seed(0))
    q = mixture_quality(collapsed, centres, ds.mixture.std)
    assert q["modes"] == 1 and q["hq_share"] > 0.95
    between = (centres[0] + centres[1]) / 2 + torch.zeros(1000, 2)
    empty = {"modes": 0, "modes_hit": 0, "modes_total": 8, "hq_share": 0.0}
    assert mixture_quality(between, centres, ds.mixture.std) == empty


def test_a_mode_needs_a_fifth_of_its_expected_share():
    ds = get_dataset("8gaussians")
    centres = ds.mixture.centres_tensor()
    n = 800  # 100 expected per mode, so 20 are needed
    x = torch.cat([centres[0].expand(n - 19, 2), centres[1].expand(19, 2)])
    q = mixture_quality(x, centres, ds.mixture.std)
    assert (q["modes"], q["modes_hit"]) == (1, 2)
    x = torch.cat([centres[0].expand(n - 20, 2), centres[1].expand(20, 2)])
    assert mixture_quality(x, centres, ds.mixture.std)["modes"] == 2


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
    from ganctl.measure import evaluation

    monkeypatch.setenv("GANCTL_CACHE", str(tmp_path))
    monkeypatch.setattr(evaluation, "_FLOORS", {})
    data = get_dataset("8gaussians")
    first = evaluation.floor_of(data, 64, seed=5)
    (cached,) = tmp_path.glob("w1floor-*.json")
    monkeypatch.setattr(evaluation, "_FLOORS", {})  # a new process: only the file is left

    def no_solves(*args, **kwargs):
        raise AssertionError("the floor was computed again")

    monkeypatch.setattr(evaluation, "w1_floor", no_solves)
    assert evaluation.floor_of(data, 64, seed=5) == first
    cached.write_text("{not json")  # a damaged entry is computed again, to the same numbers
    monkeypatch.undo()
    monkeypatch.setenv("GANCTL_CACHE", str(tmp_path))
    monkeypatch.setattr(evaluation, "_FLOORS", {})
    assert evaluation.floor_of(data, 64, seed=5) == first
    assert evaluation.floor_of(data, 64, seed=6) != first  # the seed's own draws
