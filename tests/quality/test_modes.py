"""The 2-D mode metrics: modes covered and the high-quality share, against real samples, collapsed and
scattered ones, and PacGAN's fifth-of-a-share rule."""

import math

import pytest
import torch

from ganctl.data import get_dataset
from ganctl.quality.modes import mixture_quality


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
