"""R3GAN's modernised ResNet: its resampling filters against R3GAN's reference convolutions, the
fix-up start (every block the identity), sizes, and a Lipschitz bound that holds."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from ganctl.config import TrainConfig
from ganctl.errors import ConfigError
from ganctl.lipschitz import bounds
from ganctl.methods.resolve import resolve
from ganctl.models import build_models, r3gan


def _reference_kernel() -> torch.Tensor:
    """R3GAN's CreateLowpassKernel([1, 2, 1], Inplace=False), written from its definition:
    numpy.convolve([1, 2, 1], [1, 1]) outer itself, over its sum."""
    k = torch.tensor([1.0, 3.0, 3.0, 1.0], dtype=torch.float64)
    k = torch.outer(k, k)
    return (k / k.sum()).view(1, 1, 4, 4)


@pytest.mark.parametrize("side", [4, 8, 16])
def test_resampling_equals_r3gan_s_depthwise_reference_convolutions(side):
    x = torch.randn(3, 5, side, side, dtype=torch.float64)
    flat = x.reshape(15, 1, side, side)
    down = F.conv2d(flat, _reference_kernel(), stride=2, padding=1).view(3, 5, side // 2, side // 2)
    up = F.conv_transpose2d(flat, 4 * _reference_kernel(), stride=2, padding=1).view(3, 5, 2 * side, 2 * side)
    torch.testing.assert_close(r3gan.Down()(x), down, rtol=0, atol=1e-12)
    torch.testing.assert_close(r3gan.Up()(x), up, rtol=0, atol=1e-12)


def test_down_sampling_s_operator_norm_is_at_most_its_stated_half():
    # The bound's constant for Down: power iteration on the linear map itself.
    v = torch.randn(1, 1, 16, 16, dtype=torch.float64)
    for _ in range(200):
        v = torch.autograd.functional.vjp(lambda x: r3gan.Down()(x), v, r3gan.Down()(v))[1]
        v = v / v.norm()
    sigma = float(r3gan.Down()(v).norm())
    assert 0.45 < sigma <= 0.5 + 1e-9


@pytest.mark.parametrize("size", [8, 16, 32])
def test_sizes_and_the_fix_up_start(size):
    cfg = resolve(TrainConfig(data="shapes", arch="r3gan", width=16, z_dim=8, depth=2))
    g, d = build_models(cfg, (1, size, size))
    z = torch.randn(4, 8)
    x = g(z)
    assert x.shape == (4, 1, size, size) and d(x).shape == (4, 1)
    blocks = [m for m in list(g.modules()) + list(d.modules()) if isinstance(m, r3gan.Block)]
    assert len(blocks) == 2 * 2 * (int(math.log2(size // 4)) + 1)  # depth 2 per stage, both networks
    h = torch.randn(2, 16, 4, 4)
    for block in blocks:  # the last convolution starts at zero: each block is the identity
        assert torch.count_nonzero(block.conv3.weight) == 0
        torch.testing.assert_close(block(h), h)
    groups = {m.groups for m in d.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)}
    assert groups == {2}  # 32 expanded channels in groups of 16, R3GAN's group width


def test_sizes_it_cannot_build_are_refused_naming_the_flag():
    cfg = resolve(TrainConfig(data="shapes", arch="r3gan", width=16, z_dim=8))
    with pytest.raises(ConfigError, match="--image-size 8, 16, 32"):
        build_models(cfg, (1, 28, 28))


def test_the_upper_bound_holds_for_a_critic_off_its_start():
    cfg = resolve(TrainConfig(data="shapes", arch="r3gan", width=16, z_dim=8))
    _, d = build_models(cfg, (1, 16, 16))
    torch.manual_seed(0)
    with torch.no_grad():  # away from the fix-up start, so the residual branches count
        for block in (m for m in d.modules() if isinstance(m, r3gan.Block)):
            block.conv3.weight.normal_(0, 0.3)
    x = torch.randn(64, 1, 16, 16, requires_grad=True)
    (grad,) = torch.autograd.grad(d(x).sum(), x)
    measured = float(grad.flatten(1).norm(dim=1).max())
    upper, table = bounds.upper_bound(d, (1, 16, 16))
    assert math.isfinite(upper) and upper >= measured > 0
    assert any(e.name.endswith("conv2") for e in table)  # the grouped convolutions are bounded as they are


def test_spectral_normalisation_of_its_zero_start_is_refused_before_it_divides_by_zero():
    from ganctl.training.engine import Trainer

    cfg = resolve(TrainConfig(data="shapes", image_size=16, arch="r3gan", width=16, z_dim=8, lipschitz="sn"))
    with pytest.raises(ConfigError, match="--lipschitz sn.*--arch r3gan"):
        Trainer(cfg)


@pytest.mark.parametrize("cond", ["projection", "acgan"])
def test_a_conditional_r3gan_critic_splits_into_features_and_head_and_keeps_a_finite_bound(cond):
    from ganctl.training.engine import Trainer

    cfg = TrainConfig(data="shapes", image_size=16, arch="r3gan", width=16, z_dim=8, lipschitz="gp", batch_size=8)
    trainer = Trainer(resolve(cfg.replace(conditional=True, cond=cond)))
    trainer.train_step()
    stats = trainer.pop_stats()
    assert math.isfinite(stats["loss_d"]) and math.isfinite(stats["loss_g"])
    assert trainer.critic.head is trainer.critic.phi.critic.linear  # the critic's own last map is the head
    upper, _ = bounds.upper_bound(trainer.critic, (3, 16, 16), conditional=True)
    assert math.isfinite(upper) and upper > 0
