"""DCGAN generator and critic (Radford et al. 2016) for square images of 2^k pixels, and at
28 px WGAN-GP's MNIST model (improved_wgan_training's gan_mnist.py).

Generator: z -> 4 x 4 feature map (a transposed convolution), then stride-2 transposed
convolutions that halve the channels and double the size, `gen_norm` (batch norm by default)
and ReLU after each, and a final transposed convolution to C channels with tanh. Critic: the
mirror image, stride-2 4 x 4 convolutions with LeakyReLU(0.2), no normalisation on the first
layer, then `critic_norm` (none, layer, or batch, which a penalty refuses) and a final 4 x 4
convolution to one value. `width` is the channel count next to the image; it doubles at each
halving. For 32 px: 4w -> 2w -> w channels in the generator; for 64 px: 8w -> 4w -> 2w -> w.

At 28 px (MNIST), gan_mnist.py's layout: the generator maps z linearly to 4w x 4 x 4, then
5 x 5 stride-2 transposed convolutions to 8 x 8 (cropped to 7 x 7), 14 x 14 and 28 x 28 with 2w,
w and C channels; the critic, 5 x 5 stride-2 convolutions 28 -> 14 -> 7 -> 4 with w, 2w and 4w
channels and LeakyReLU(0.2), then a linear layer to one value (the code's DIM, 64, is `width`).
"""

from __future__ import annotations

import math

from torch import Tensor, nn

from ganctl.config import TrainConfig
from ganctl.errors import ConfigError
from ganctl.models import activations

MIN_SIZE, MAX_SIZE = 16, 256


MNIST_SIZE = 28


def _norm2d(kind: str, channels: int) -> nn.Module:
    if kind == "layer":
        return nn.GroupNorm(1, channels)  # layer norm over (C, H, W), per sample
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    return nn.Identity()


class Flatten(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x.reshape(len(x), -1)


class Unflatten(nn.Module):
    """(B, n) -> (B, n / side^2, side, side)."""

    def __init__(self, side: int = 1):
        super().__init__()
        self.side = side

    def forward(self, z: Tensor) -> Tensor:
        return z.reshape(len(z), -1, self.side, self.side)


class Crop(nn.Module):
    """Keep the top-left `side` x `side` pixels (gan_mnist.py's output[:, :, :7, :7])."""

    def __init__(self, side: int):
        super().__init__()
        self.side = side

    def forward(self, x: Tensor) -> Tensor:
        return x[..., : self.side, : self.side]


def check_image_shape(arch: str, shape: tuple[int, ...], sizes: tuple[int, ...] | None = None) -> tuple[int, int]:
    if len(shape) != 3:
        raise ConfigError(f"--arch {arch} takes images; this data has samples of shape {shape} (use --arch mlp)")
    c, h, w = shape
    if h != w:
        raise ConfigError(f"--arch {arch} takes square images, got {h} x {w}")
    allowed = sizes or tuple(2**k for k in range(4, 9))
    if h not in allowed:
        raise ConfigError(f"--arch {arch} supports --image-size {', '.join(map(str, allowed))}; got {h}")
    return c, h


def _gen_norm(kind: str, channels: int) -> nn.Module:
    return nn.BatchNorm2d(channels) if kind == "batch" else _norm2d(kind, channels)


DCGAN_SIZES = (MNIST_SIZE, *(2**k for k in range(4, 9)))


def build_dcgan(cfg: TrainConfig, sample_shape: tuple[int, ...]) -> tuple[nn.Module, nn.Module]:
    c, size = check_image_shape("dcgan", sample_shape, DCGAN_SIZES)
    if size == MNIST_SIZE:
        return _mnist(cfg, c)
    halvings = int(math.log2(size)) - 2  # 4 px -> size
    w = cfg.width
    chans = [w * 2 ** (halvings - 1 - i) for i in range(halvings)]  # e.g. 32 px: [4w, 2w, w]
    bias = cfg.gen_norm == "none"  # a norm's shift replaces the bias

    g: list[nn.Module] = [Unflatten(), nn.ConvTranspose2d(cfg.z_dim, chans[0], 4, 1, 0, bias=bias)]
    g += [_gen_norm(cfg.gen_norm, chans[0]), nn.ReLU(True)]
    for a, b in zip(chans, chans[1:]):
        g += [nn.ConvTranspose2d(a, b, 4, 2, 1, bias=bias), _gen_norm(cfg.gen_norm, b), nn.ReLU(True)]
    g += [nn.ConvTranspose2d(chans[-1], c, 4, 2, 1), nn.Tanh()]

    rev = chans[::-1]  # e.g. 32 px: [w, 2w, 4w]
    d: list[nn.Module] = [nn.Conv2d(c, rev[0], 4, 2, 1), activations.LeakyReLU(0.2)]
    for a, b in zip(rev, rev[1:]):
        d += [nn.Conv2d(a, b, 4, 2, 1, bias=cfg.critic_norm == "none"), _norm2d(cfg.critic_norm, b)]
        d += [activations.LeakyReLU(0.2)]
    d += [nn.Conv2d(rev[-1], 1, 4, 1, 0), Flatten()]
    return nn.Sequential(*g), nn.Sequential(*d)


def _mnist(cfg: TrainConfig, c: int) -> tuple[nn.Module, nn.Module]:
    """WGAN-GP's MNIST generator and critic (gan_mnist.py), with 28 x 28 x `c` images."""
    w, norm = cfg.width, cfg.gen_norm

    def up(a: int, b: int) -> nn.ConvTranspose2d:  # TensorFlow's 'SAME' stride-2 deconvolution: doubles the side
        return nn.ConvTranspose2d(a, b, 5, 2, 2, output_padding=1)

    g: list[nn.Module] = [nn.Linear(cfg.z_dim, 4 * 4 * 4 * w), Unflatten(4), _gen_norm(norm, 4 * w), nn.ReLU(True)]
    g += [up(4 * w, 2 * w), _gen_norm(norm, 2 * w), nn.ReLU(True), Crop(7)]
    g += [up(2 * w, w), _gen_norm(norm, w), nn.ReLU(True), up(w, c), nn.Tanh()]
    d: list[nn.Module] = [nn.Conv2d(c, w, 5, 2, 2), activations.LeakyReLU(0.2)]
    d += [nn.Conv2d(w, 2 * w, 5, 2, 2), _norm2d(cfg.critic_norm, 2 * w), activations.LeakyReLU(0.2)]
    d += [nn.Conv2d(2 * w, 4 * w, 5, 2, 2), _norm2d(cfg.critic_norm, 4 * w), activations.LeakyReLU(0.2)]
    d += [Flatten(), nn.Linear(4 * 4 * 4 * w, 1)]
    return nn.Sequential(*g), nn.Sequential(*d)
