"""Architectures: output shapes at every supported size and channel count, refusals, and the
penalty under mixed precision against the fp32 one."""

import pytest
import torch

from ganctl.config import TrainConfig
from ganctl.errors import ConfigError
from ganctl.methods import penalties
from ganctl.methods.resolve import resolve
from ganctl.methods.strategies import build_strategy
from ganctl.models import build_models


@pytest.mark.parametrize("size", [16, 32, 64, 128])
@pytest.mark.parametrize("channels", [1, 3])
def test_dcgan_shapes(size, channels):
    cfg = resolve(TrainConfig(data="shapes", arch="dcgan", width=4, z_dim=8))
    g, d = build_models(cfg, (channels, size, size))
    x = g(torch.randn(3, 8))
    assert x.shape == (3, channels, size, size) and x.abs().max() <= 1
    assert d(x).shape == (3, 1)


@pytest.mark.parametrize("channels", [1, 3])
def test_resnet_shapes(channels):
    cfg = resolve(TrainConfig(data="shapes", arch="resnet", width=8, z_dim=8))
    g, d = build_models(cfg, (channels, 32, 32))
    x = g(torch.randn(2, 8))
    assert x.shape == (2, channels, 32, 32) and d(x).shape == (2, 1)


def test_defaults_follow_the_data():
    points, images = resolve(TrainConfig(data="8gaussians")), resolve(TrainConfig(data="shapes"))
    assert (points.arch, points.z_dim) == ("mlp", 2)
    assert (images.arch, images.width, images.z_dim) == ("dcgan", 64, 128)
    assert resolve(TrainConfig(data="shapes", arch="resnet")).width == 128


@pytest.mark.parametrize(
    "arch, shape, message",
    [
        ("resnet", (3, 64, 64), "supports --image-size 16, 28, 32"),
        ("dcgan", (3, 48, 48), "supports --image-size 28, 16, 32, 64, 128, 256"),
        ("dcgan", (2,), "takes images"),
    ],
)
def test_wrong_shapes_are_refused(arch, shape, message):
    cfg = resolve(TrainConfig(data="shapes", arch=arch, width=4))
    with pytest.raises(ConfigError, match=message):
        build_models(cfg, shape)


def test_critic_has_no_batch_norm_unless_asked_and_layer_norm_is_per_sample():
    cfg = resolve(TrainConfig(data="shapes", width=4, critic_norm="layer"))
    _, d = build_models(cfg, (3, 32, 32))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in d.modules())
    x = torch.randn(4, 3, 32, 32)
    # Per-sample normalisation: a sample's output does not depend on the rest of the batch.
    assert torch.allclose(d(x)[:1], d(x[:1]), atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_gradient_penalty_under_autocast_matches_fp32(dtype):
    torch.manual_seed(0)
    cfg = resolve(TrainConfig(data="shapes", width=8, lipschitz="gp"))
    _, critic = build_models(cfg, (3, 32, 32))
    strategy = build_strategy(cfg)
    x = torch.randn(16, 3, 32, 32, requires_grad=True)

    (g32,) = torch.autograd.grad(critic(x).sum(), x, create_graph=True)
    reference = strategy.penalty([g32])

    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10, enabled=dtype == torch.float16)
    with torch.autocast("cpu", dtype=dtype):
        out = critic(x).float()
    (scaled,) = torch.autograd.grad(scaler.scale(out.sum()), x, create_graph=True)
    grads = scaled / scaler.get_scale()
    penalty = strategy.penalty([grads])
    assert grads.dtype == torch.float32
    assert penalty.item() == pytest.approx(reference.item(), rel=0.03)
    norms32, norms = penalties.grad_norm(g32), penalties.grad_norm(grads)
    assert torch.allclose(norms, norms32, rtol=0.05)
    # Its gradient reaches every critic weight (biases of the last layer do not affect
    # input gradients) and is finite.
    scaler.scale(penalty).backward()
    weights = [p for p in critic.parameters() if p.ndim > 1]
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in weights)


@pytest.mark.parametrize(
    "arch, size", [("dcgan", 16), ("dcgan", 28), ("dcgan", 32), ("resnet", 16), ("resnet", 28), ("mlp", 16)]
)
def test_small_image_architectures_make_images_of_their_size(arch, size):
    cfg = resolve(TrainConfig(data="shapes", arch=arch, width=8, z_dim=8))
    g, d = build_models(cfg, (1, size, size))
    x = g(torch.randn(3, 8))
    assert x.shape == (3, 1, size, size) and x.abs().max() <= 1 and d(x).shape == (3, 1)


def test_the_image_mlp_is_pytorch_gan_s_at_width_1024():
    cfg = resolve(TrainConfig(data="shapes", arch="mlp"))
    g, d = build_models(cfg, (1, 28, 28))
    widths = [m.out_features for m in g.modules() if isinstance(m, torch.nn.Linear)]
    assert (cfg.width, cfg.depth, widths) == (1024, 4, [128, 256, 512, 1024, 784])
    assert [m.out_features for m in d.modules() if isinstance(m, torch.nn.Linear)] == [512, 256, 1]
    norms = [m for m in g.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    assert len(norms) == 3  # not after the first layer
    none = resolve(TrainConfig(data="shapes", arch="mlp", gen_norm="none"))
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in build_models(none, (1, 28, 28))[0].modules())


def test_the_28_px_dcgan_is_wgan_gp_s_mnist_model():
    cfg = resolve(TrainConfig(data="shapes", arch="dcgan", width=64, z_dim=128))
    g, d = build_models(cfg, (1, 28, 28))
    convs = [m for m in d.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.stride) for c in convs] == [
        (1, 64, (5, 5), (2, 2)),
        (64, 128, (5, 5), (2, 2)),
        (128, 256, (5, 5), (2, 2)),
    ]
    assert [m.in_features for m in d.modules() if isinstance(m, torch.nn.Linear)] == [4 * 4 * 4 * 64]
