"""DCGAN generator and critic (Radford et al. 2016) for square images of 2^k pixels.

Generator: z -> 4 x 4 feature map (a transposed convolution), then stride-2 transposed
convolutions that halve the channels and double the size, batch norm and ReLU after each,
and a final transposed convolution to C channels with tanh. Critic: the mirror image, stride-2
4 x 4 convolutions with LeakyReLU(0.2), no normalisation on the first layer, then
`critic_norm` (none, layer, or batch, which a penalty refuses) and a final 4 x 4 convolution
to one value. `width` is the channel count next to the image; it doubles at each halving.
For 32 px: 4w -> 2w -> w channels in the generator; for 64 px: 8w -> 4w -> 2w -> w.
"""

from __future__ import annotations

import math

from torch import Tensor, nn

from ganctl.config import TrainConfig
from ganctl.errors import ConfigError
from ganctl.models import activations

MIN_SIZE, MAX_SIZE = 16, 256


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
    def forward(self, z: Tensor) -> Tensor:
        return z.reshape(len(z), -1, 1, 1)


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


def build_dcgan(cfg: TrainConfig, sample_shape: tuple[int, ...]) -> tuple[nn.Module, nn.Module]:
    c, size = check_image_shape("dcgan", sample_shape)
    halvings = int(math.log2(size)) - 2  # 4 px -> size
    w = cfg.width
    chans = [w * 2 ** (halvings - 1 - i) for i in range(halvings)]  # e.g. 32 px: [4w, 2w, w]

    g: list[nn.Module] = [Unflatten(), nn.ConvTranspose2d(cfg.z_dim, chans[0], 4, 1, 0, bias=False)]
    g += [nn.BatchNorm2d(chans[0]), nn.ReLU(True)]
    for a, b in zip(chans, chans[1:]):
        g += [nn.ConvTranspose2d(a, b, 4, 2, 1, bias=False), nn.BatchNorm2d(b), nn.ReLU(True)]
    g += [nn.ConvTranspose2d(chans[-1], c, 4, 2, 1), nn.Tanh()]

    rev = chans[::-1]  # e.g. 32 px: [w, 2w, 4w]
    d: list[nn.Module] = [nn.Conv2d(c, rev[0], 4, 2, 1), activations.LeakyReLU(0.2)]
    for a, b in zip(rev, rev[1:]):
        d += [nn.Conv2d(a, b, 4, 2, 1, bias=cfg.critic_norm == "none"), _norm2d(cfg.critic_norm, b)]
        d += [activations.LeakyReLU(0.2)]
    d += [nn.Conv2d(rev[-1], 1, 4, 1, 0), Flatten()]
    return nn.Sequential(*g), nn.Sequential(*d)
