import math

import pytest
import torch

from ganctl.data import available_datasets, get_dataset
from ganctl.errors import DataError


def draw(name: str, n: int = 20000, seed: int = 0) -> torch.Tensor:
    return get_dataset(name).sample(n, torch.Generator().manual_seed(seed), "cpu")


def test_registry():
    assert available_datasets() == ["8gaussians", "25gaussians", "swissroll", "ring", "checkerboard"]
    with pytest.raises(DataError, match="8gaussians, 25gaussians"):
        get_dataset("mnist")


def test_eight_gaussians_matches_released_code():
    ds = get_dataset("8gaussians")
    centres = ds.mixture.centres_tensor()
    assert centres.shape == (8, 2)
    assert torch.allclose(centres.norm(dim=1), torch.full((8,), 2 / 1.414))
    assert ds.mixture.std == pytest.approx(0.02 / 1.414)
    x = draw("8gaussians")
    d, idx = torch.cdist(x, centres).min(dim=1)
    # each coordinate's deviation from its centre has std 0.02 / 1.414
    dev = x - centres[idx]
    assert float(dev.std()) == pytest.approx(0.02 / 1.414, rel=0.03)
    counts = torch.bincount(idx, minlength=8).float()
    assert float(counts.min()) > 0.9 * len(x) / 8  # uniform over components


def test_twenty_five_gaussians_matches_released_code():
    ds = get_dataset("25gaussians")
    centres = ds.mixture.centres_tensor()
    assert centres.shape == (25, 2)
    assert float(centres.max()) == pytest.approx(4 / 2.828)
    spacing = torch.cdist(centres, centres).add(torch.eye(25) * 9).min()
    assert float(spacing) == pytest.approx(2 / 2.828)
    x = draw("25gaussians")
    dev = x - centres[torch.cdist(x, centres).argmin(dim=1)]
    assert float(dev.std()) == pytest.approx(0.05 / 2.828, rel=0.03)


def test_swissroll_radius_follows_its_parameter():
    # t = 1.5 pi (1 + 2u) is the point's distance from the origin before noise and scaling.
    x = draw("swissroll") * 7.5
    r = x.norm(dim=1)
    assert 1.5 * math.pi - 1.5 < float(r.min()) and float(r.max()) < 4.5 * math.pi + 1.5
    assert float(r.mean()) == pytest.approx(3 * math.pi, rel=0.03)


def test_ring_and_checkerboard_supports():
    r = draw("ring").norm(dim=1)
    assert float(r.mean()) == pytest.approx(1.0, abs=0.01) and float(r.std()) == pytest.approx(0.05, rel=0.05)
    x = draw("checkerboard")
    assert float(x.abs().max()) <= 2.0
    cell = (torch.floor(x[:, 0]) + torch.floor(x[:, 1])).remainder(2)
    assert bool((cell == 0).all())  # only dark squares


@pytest.mark.parametrize("name", ["8gaussians", "25gaussians", "swissroll", "ring", "checkerboard"])
def test_sampling_is_a_function_of_the_generator(name):
    assert torch.equal(draw(name, 100, 3), draw(name, 100, 3))
    assert not torch.equal(draw(name, 100, 3), draw(name, 100, 4))
