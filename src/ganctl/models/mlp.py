"""Fully connected generator and critic for flat data (the WGAN-GP toy networks: ReLU
layers of equal width; here width and depth are settings)."""

from __future__ import annotations

import math

from torch import nn

from ganctl.config import TrainConfig
from ganctl.errors import ConfigError
from ganctl.models import activations

_NORMS = {"none": None, "layer": nn.LayerNorm, "batch": nn.BatchNorm1d}


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


def build_mlp(cfg: TrainConfig, sample_shape: tuple[int, ...]) -> tuple[nn.Module, nn.Module]:
    if len(sample_shape) != 1:
        raise ConfigError(f"--arch mlp takes flat samples; this data has samples of shape {sample_shape}")
    d = math.prod(sample_shape)
    generator = mlp(cfg.z_dim, d, cfg.width, cfg.depth)
    critic = mlp(d, 1, cfg.width, cfg.depth, cfg.critic_norm, activations.ReLU)
    return generator, critic
