"""R3GAN's modernised ResNet (Huang et al. 2024, "The GAN is dead; long live the GAN!"), read
from brownvc/R3GAN's `R3GAN/Networks.py`, `FusedOperators.py`, `Resamplers.py` and `train.py`.

Every stage has the same `width` channels (R3GAN's presets: 768 for CIFAR-10, 2 blocks per
stage) and `depth` residual blocks. A block is x + conv1x1(act(gconv3x3(act(conv1x1(x))))):
expansion 2, grouped 3 x 3 convolutions of 16 channels per group (the presets' cardinality 96
over 1536 channels), convolutions without bias, each activation a learned bias then
LeakyReLU(0.2), and no normalisation anywhere. Fix-up initialisation: He-normal weights at gain
sqrt(2 / (1 + 0.2^2)) * L^(-1/4) (L = the blocks of the whole network, m = 3 layers per block),
and the last convolution of each block at zero, so that every block starts as the identity.

Generator: z -> a learned 4 x 4 basis per channel scaled by a linear map of z, blocks, then
per stage 2x up-sampling with the [1, 2, 1] interpolation filter (a transposed depthwise
convolution with its [1, 3, 3, 1] low-pass kernel) and blocks, and a 1 x 1 convolution to C
channels, with no tanh (as R3GAN). Critic: a 1 x 1 convolution from C channels, per stage blocks
and 2x down-sampling with the same filter, then at 4 x 4 blocks, a depthwise 4 x 4 convolution
and a linear map to one value. Sizes: 4 x 2^k pixels (8, 16, 32, 64, ...).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ganctl.config import TrainConfig
from ganctl.models.dcgan import check_image_shape

SLOPE = 0.2
GAIN = math.sqrt(2 / (1 + SLOPE**2))  # He's gain for LeakyReLU(0.2)
GROUP_CHANNELS = 16  # channels per group of the grouped 3 x 3 convolutions
EXPANSION = 2


def _he(layer: nn.Module, gain: float = 1.0) -> nn.Module:
    """R3GAN's MSRInitializer: normal(0, gain / sqrt(fan_in)), biases zero."""
    fan_in = layer.weight[0].numel()
    nn.init.normal_(layer.weight, 0.0, gain / math.sqrt(fan_in))
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)
    return layer


def _conv(a: int, b: int, k: int, groups: int = 1, gain: float = 1.0) -> nn.Conv2d:
    return _he(nn.Conv2d(a, b, k, padding=(k - 1) // 2, groups=groups, bias=False), gain)  # type: ignore[return-value]


class BiasedLeakyReLU(nn.Module):
    """A learned per-channel bias, then LeakyReLU(0.2): R3GAN's BiasedActivation (1-Lipschitz)."""

    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        return F.leaky_relu(x + self.bias.view(1, -1, *[1] * (x.dim() - 2)), SLOPE)


class Block(nn.Module):
    """x + conv1x1(act(gconv3x3(act(conv1x1(x))))), the last convolution initialised to zero."""

    def __init__(self, w: int, blocks: int):
        super().__init__()
        wide = w * EXPANSION
        gain = GAIN * blocks ** (-1 / (2 * 3 - 2))  # R3GAN's variance scaling over L blocks, 3 layers each
        self.conv1 = _conv(w, wide, 1, gain=gain)
        self.act1 = BiasedLeakyReLU(wide)
        self.conv2 = _conv(wide, wide, 3, groups=max(1, wide // GROUP_CHANNELS), gain=gain)
        self.act2 = BiasedLeakyReLU(wide)
        self.conv3 = _conv(wide, w, 1, gain=0.0)

    def lipschitz_branches(self) -> list[list[tuple[str, nn.Module | float]]]:
        """The identity and the main path (each biased LeakyReLU: 1)."""
        return [[("identity", 1.0)], [("conv1", self.conv1), ("conv2", self.conv2), ("conv3", self.conv3)]]

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv3(self.act2(self.conv2(self.act1(self.conv1(x)))))


def _up1d(x: Tensor, dim: int) -> Tensor:
    """2x up-sampling along `dim` with R3GAN's [1, 2, 1] filter (its transposed convolution with
    the [1, 3, 3, 1] / 4 kernel, stride 2, padding 1): y[2m] = (3 x[m] + x[m-1]) / 4,
    y[2m+1] = (3 x[m] + x[m+1]) / 4, zeros outside."""
    n = x.shape[dim]
    prev = F.pad(x.narrow(dim, 0, n - 1), _pad(x.dim(), dim, 1, 0))
    nxt = F.pad(x.narrow(dim, 1, n - 1), _pad(x.dim(), dim, 0, 1))
    even, odd = 0.75 * x + 0.25 * prev, 0.75 * x + 0.25 * nxt
    shape = list(x.shape)
    shape[dim] = 2 * n
    return torch.stack([even, odd], dim=dim + 1).reshape(shape)


def _down1d(x: Tensor, dim: int) -> Tensor:
    """2x down-sampling along `dim` with the [1, 3, 3, 1] / 8 kernel, stride 2, padding 1:
    y[m] = (x[2m-1] + 3 x[2m] + 3 x[2m+1] + x[2m+2]) / 8, zeros outside."""
    n = x.shape[dim]
    even, odd = x.unflatten(dim, (n // 2, 2)).unbind(dim + 1)
    before = F.pad(odd.narrow(dim, 0, n // 2 - 1), _pad(x.dim(), dim, 1, 0))  # x[2m-1]
    after = F.pad(even.narrow(dim, 1, n // 2 - 1), _pad(x.dim(), dim, 0, 1))  # x[2m+2]
    return (before + 3 * even + 3 * odd + after) / 8


def _pad(ndim: int, dim: int, before: int, after: int) -> list[int]:
    """F.pad's list (last dimension first) that pads dimension `dim` of an ndim tensor."""
    return [0, 0] * (ndim - 1 - dim) + [before, after]


class Up(nn.Module):
    """2x interpolative up-sampling (R3GAN's InterpolativeUpsampler with the [1, 2, 1] filter),
    separable and written with slices: the depthwise transposed convolution R3GAN's reference
    code runs is many times slower on a CPU, above all in a penalty's double backward."""

    def forward(self, x: Tensor) -> Tensor:
        return _up1d(_up1d(x, 2), 3)


class Down(nn.Module):
    """2x interpolative down-sampling (R3GAN's InterpolativeDownsampler), separable, with slices.
    Its operator norm is at most 1/2 (Schur's test: rows sum to at most 1, columns to 1/4)."""

    def lipschitz_branches(self) -> list[list[tuple[str, nn.Module | float]]]:
        return [[("low-pass stride 2", 0.5)]]

    def forward(self, x: Tensor) -> Tensor:
        return _down1d(_down1d(x, 2), 3)


class Basis(nn.Module):
    """The generator's first stage: a learned 4 x 4 pattern per channel, scaled by a linear map of z."""

    def __init__(self, z_dim: int, w: int):
        super().__init__()
        self.basis = nn.Parameter(torch.randn(w, 4, 4))
        self.linear = _he(nn.Linear(z_dim, w, bias=False))

    def forward(self, z: Tensor) -> Tensor:
        return self.basis.unsqueeze(0) * self.linear(z).view(len(z), -1, 1, 1)


def _stages(size: int) -> int:
    """Resolution stages from 4 x 4 to `size` (4 x 2^(k-1))."""
    k = int(round(math.log2(size / 4))) + 1
    if k < 2 or 4 * 2 ** (k - 1) != size:
        raise ValueError(f"r3gan builds 4 x 2^k pixel images (8, 16, 32, 64, ...), not {size}")
    return k


class Generator(nn.Module):
    def __init__(self, z_dim: int, w: int, c: int, size: int, depth: int):
        super().__init__()
        stages = _stages(size)
        total = stages * depth
        layers: list[nn.Module] = [Basis(z_dim, w)]
        for s in range(stages):
            if s:
                layers.append(Up())
            layers += [Block(w, total) for _ in range(depth)]
        self.net = nn.Sequential(*layers)
        self.out = _conv(w, c, 1)

    def forward(self, z: Tensor) -> Tensor:
        return self.out(self.net(z))


class Critic(nn.Module):
    def __init__(self, w: int, c: int, size: int, depth: int):
        super().__init__()
        stages = _stages(size)
        total = stages * depth
        layers: list[nn.Module] = [_conv(c, w, 1)]
        for s in range(stages):
            layers += [Block(w, total) for _ in range(depth)]
            if s < stages - 1:
                layers.append(Down())
        layers.append(_he(nn.Conv2d(w, w, 4, groups=w, bias=False)))  # R3GAN's DiscriminativeBasis, 4 x 4 -> 1
        self.body = nn.Sequential(*layers)
        self.linear = _he(nn.Linear(w, 1, bias=False))

    def features(self, x: Tensor) -> Tensor:
        return self.body(x).flatten(1)

    def feature_branches(self) -> list[list[tuple[str, nn.Module | float]]]:
        return [[("body", self.body)]]

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(self.features(x))


def build_r3gan(cfg: TrainConfig, sample_shape: tuple[int, ...]) -> tuple[nn.Module, nn.Module]:
    c, size = check_image_shape("r3gan", sample_shape, sizes=R3GAN_SIZES)
    return Generator(cfg.z_dim, cfg.width, c, size, cfg.depth), Critic(cfg.width, c, size, cfg.depth)


R3GAN_SIZES = (8, 16, 32, 64, 128, 256)
