"""Fully connected generators and critics.

On flat data (the 2-D sets) they are the WGAN-GP toy networks: `depth` ReLU layers of `width`
units. On images they work on the flattened pixels, as the WGAN-GP toy code and the MLP GANs of
PyTorch-GAN do: the generator's hidden layers double up to `width` (1024 with depth 4: 128,
256, 512, 1024, PyTorch-GAN's), each but the first normalised by `gen_norm`, with LeakyReLU(0.2)
and a tanh output reshaped to the image; the critic flattens the image and halves from
`width` / 2 over `depth` // 2 LeakyReLU(0.2) layers (512, 256) to one value. The critic stays a
plain Linear / activation chain, so the hand-written penalised step (`ganctl.training.fused_mlp`) covers
it.
"""

from __future__ import annotations

import math

from torch import Tensor, nn

from ganctl.config import TrainConfig
from ganctl.models import activations

_NORMS = {"none": None, "layer": nn.LayerNorm, "batch": nn.BatchNorm1d}
LEAK = 0.2  # PyTorch-GAN's and DCGAN's LeakyReLU slope


def mlp(
    d_in: int, d_out: int, width: int, depth: int, norm: str = "none", relu: type[nn.Module] = nn.ReLU
) -> nn.Sequential:
    """depth hidden layers of `width` units: Linear -> [norm] -> ReLU, then a linear output."""
    layers: list[nn.Module] = []
    d = d_in
    for _ in range(depth):
        layers.append(nn.Linear(d, width))
        if _NORMS[norm] is not None:
            layers.append(_NORMS[norm](width))
        layers.append(relu())
        d = width
    layers.append(nn.Linear(d, d_out))
    return nn.Sequential(*layers)


class ImageGenerator(nn.Module):
    """z -> hidden layers doubling up to `width` -> tanh pixels, reshaped to `shape`."""

    def __init__(self, z_dim: int, width: int, depth: int, shape: tuple[int, ...], norm: str):
        super().__init__()
        self.shape = shape
        layers: list[nn.Module] = []
        d = z_dim
        for i in range(depth):
            w = max(1, width // 2 ** (depth - 1 - i))
            layers.append(nn.Linear(d, w))
            if i > 0 and _NORMS[norm] is not None:  # not the first layer, as PyTorch-GAN and DCGAN
                layers.append(_NORMS[norm](w))
            layers.append(nn.LeakyReLU(LEAK))
            d = w
        layers += [nn.Linear(d, math.prod(shape)), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z).reshape(len(z), *self.shape)


def image_critic(shape: tuple[int, ...], width: int, depth: int, norm: str) -> nn.Sequential:
    """Flatten, then depth // 2 (at least 1) LeakyReLU layers halving from width / 2, then one value."""
    layers: list[nn.Module] = [nn.Flatten()]
    d = math.prod(shape)
    for i in range(max(1, depth // 2)):
        w = max(1, width // 2 ** (i + 1))
        layers.append(nn.Linear(d, w))
        if _NORMS[norm] is not None:
            layers.append(_NORMS[norm](w))
        layers.append(activations.LeakyReLU(LEAK))
        d = w
    layers.append(nn.Linear(d, 1))
    return nn.Sequential(*layers)


def build_mlp(cfg: TrainConfig, sample_shape: tuple[int, ...]) -> tuple[nn.Module, nn.Module]:
    # --cond concat: the critic reads the flattened sample and a label embedding of num_classes.
    extra = cfg.num_classes if cfg.conditional and cfg.cond == "concat" else 0
    if len(sample_shape) == 1:
        d = sample_shape[0]
        generator = mlp(cfg.z_dim, d, cfg.width, cfg.depth, cfg.gen_norm)
        return generator, mlp(d + extra, 1, cfg.width, cfg.depth, cfg.critic_norm, activations.ReLU)
    generator = ImageGenerator(cfg.z_dim, cfg.width, cfg.depth, tuple(sample_shape), cfg.gen_norm)
    critic_shape = (math.prod(sample_shape) + extra,) if extra else tuple(sample_shape)
    return generator, image_critic(critic_shape, cfg.width, cfg.depth, cfg.critic_norm)
