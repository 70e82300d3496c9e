"""Generators and critics, built from a config. The checkpoint carries that config, so
loading rebuilds exactly these modules and then loads the tensors strictly."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ganctl.config import TrainConfig
from ganctl.errors import ConfigError
from ganctl.models import conditional
from ganctl.models.dcgan import build_dcgan
from ganctl.models.mlp import build_mlp
from ganctl.models.r3gan import build_r3gan
from ganctl.models.resnet import build_resnet

Builder = Callable[[TrainConfig, tuple[int, ...]], tuple[nn.Module, nn.Module]]

_ARCHS: dict[str, Builder] = {"mlp": build_mlp, "dcgan": build_dcgan, "resnet": build_resnet, "r3gan": build_r3gan}


def available_archs() -> list[str]:
    return list(_ARCHS)


def build_models(cfg: TrainConfig, sample_shape: tuple[int, ...]) -> tuple[nn.Module, nn.Module]:
    """Return (generator, critic) for samples of `sample_shape`; the critic is unconstrained
    (the Lipschitz strategy prepares it). A conditional config gets G(z, y) and D(x, y)
    (`ganctl.models.conditional`)."""
    try:
        builder = _ARCHS[cfg.arch]
    except KeyError:
        raise ConfigError(f"--arch {cfg.arch!r} is not one of: {', '.join(available_archs())}") from None
    if not cfg.conditional:
        return builder(cfg, sample_shape)
    k = cfg.num_classes
    if not k:
        raise ConfigError("--conditional: the class count is not known (it is read from the data)")
    norms = cfg.arch in ("dcgan", "resnet") and cfg.gen_norm == "batch"  # conditional batch norm
    generator, _ = builder(cfg if norms else cfg.replace(z_dim=cfg.z_dim + k), sample_shape)
    generator = (
        conditional.NormConditionedGenerator(generator, k) if norms else conditional.ConcatGenerator(generator, k)
    )
    _, critic = builder(cfg, sample_shape)
    return generator, conditional.conditional_critic(critic, cfg.cond, k, sample_shape)
