"""How the critic is kept Lipschitz: one small strategy class per method.

The engine never branches on a method name; it asks a strategy three things: which points to
penalise (`penalty_at`), the penalty from the input gradients there (`penalty`), and what to do
to the critic when it is built and after each optimizer step. Each class is registered under
its method's name (`register`); the method's recipe, owned settings and search space are its
entry in `ganctl.methods.registry.METHODS`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import ClassVar

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm

from ganctl.config import TrainConfig
from ganctl.errors import ConfigError
from ganctl.methods import penalties
from ganctl.methods.registry import get_method
from ganctl.models.certified import NEEDS, orthogonal_conditional, orthogonal_convolutional
from ganctl.models.conditional import ConditionalCritic
from ganctl.models.constrained import GradientNormalized, orthonormal_groupsort, reproject

_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
# Embeddings too: a conditional critic's projection V (SN-GAN's SNEmbedID) and label embedding.
_WEIGHT_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.Embedding)


STRATEGIES: dict[str, type[Lipschitz]] = {}


def register(name: str) -> Callable[[type[Lipschitz]], type[Lipschitz]]:
    """Register a strategy class under its method's name (a `METHODS` entry), as
    stylegan2-ada's `register_metric` does for metrics."""
    get_method(name)  # an unknown name: the registry's error, which lists the methods

    def add(cls: type[Lipschitz]) -> type[Lipschitz]:
        if name in STRATEGIES:
            raise ValueError(f"a strategy is already registered for {name!r}: {STRATEGIES[name].__name__}")
        STRATEGIES[name] = cls
        return cls

    return add


def strategy_class(name: str) -> type[Lipschitz]:
    """The strategy registered for method `name` (an unknown name: the registry's error, which
    lists the methods)."""
    get_method(name)
    return STRATEGIES[name]


def build_strategy(cfg: TrainConfig) -> Lipschitz:
    """The strategy of a resolved config."""
    return strategy_class(cfg.lipschitz)(cfg)


@register("none")
class Lipschitz:
    """No constraint. Also the base class: every hook is a no-op."""

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        # The penalty's weight now (lambda or gamma): the trainer moves it under --gamma-decay.
        self.weight: float | None = cfg.penalty_weight

    @property
    def penalty_at(self) -> str | None:
        """Where the penalty takes input gradients: interp | real | fake | real+fake | None."""
        return None

    @property
    def name(self) -> str:
        return self.cfg.lipschitz

    def penalty(self, grads: list[Tensor]) -> Tensor:
        raise NotImplementedError(f"--lipschitz {self.name} has no penalty")

    def prepare_critic(self, critic: nn.Module) -> nn.Module:
        return critic

    def after_critic_step(self, critic: nn.Module) -> None:
        pass

    # Whether the critic's forward may be compiled (not when it takes a gradient inside itself).
    compilable: ClassVar[bool] = True
    # Whether the critic's stored weights may be laid out channels-last (not where a
    # parametrization reshapes them with `view`, as orthogonium's do).
    channels_last: ClassVar[bool] = True

    def step_context(self) -> contextlib.AbstractContextManager:
        """What a training step runs inside (Björck: its orthonormal weights computed once)."""
        return contextlib.nullcontext()


def _refuse_batch_norm(critic: nn.Module, method: str, why: str) -> None:
    for module in critic.modules():
        if isinstance(module, _BATCH_NORMS):
            raise ConfigError(
                f"--lipschitz {method} {why}, which batch normalisation couples across the batch;"
                " use --critic-norm layer or none"
            )


@register("clip")
class WeightClip(Lipschitz):
    """WGAN: clamp every critic parameter to [-c, c] after each critic step (Arjovsky 2017)."""

    def prepare_critic(self, critic: nn.Module) -> nn.Module:
        self.after_critic_step(critic)  # the critic is inside the box from its first forward
        return critic

    @torch.no_grad()
    def after_critic_step(self, critic: nn.Module) -> None:
        for p in critic.parameters():
            p.clamp_(-self.cfg.clip, self.cfg.clip)


class _Penalised(Lipschitz):
    """Shared by every gradient penalty: a weight, an optional lazy interval, no batch norm."""

    # The factor in front of the expectation: 1 for lambda * E[.], 1/2 for gamma/2 * E[.].
    weight_factor: ClassVar[float] = 1.0

    @property
    def penalty_at(self) -> str | None:
        return self.cfg.penalty_at

    def prepare_critic(self, critic: nn.Module) -> nn.Module:
        _refuse_batch_norm(critic, self.name, "penalises per-sample input gradients")
        return critic

    def penalty(self, grads: list[Tensor]) -> Tensor:
        per_set = [self.penalty_of(g) for g in grads]
        return self.weight_factor * self.weight * torch.stack(per_set).sum()

    def penalty_of(self, grads: Tensor) -> Tensor:
        """The unweighted penalty from the input gradients at one point set."""
        raise NotImplementedError

    def penalty_grads(self, grads: list[Tensor]) -> list[Tensor]:
        """d penalty / d g for each set's input gradients g, in closed form."""
        weight = self.weight_factor * self.weight
        return [weight * self.penalty_grad_of(g) for g in grads]

    def penalty_grad_of(self, grads: Tensor) -> Tensor:
        raise NotImplementedError


@register("gp")
class GradientPenalty(_Penalised):
    """WGAN-GP: lambda * E[(||grad D(x_hat)|| - k)^2] on interpolates (Gulrajani et al. 2017)."""

    def penalty_of(self, grads: Tensor) -> Tensor:
        return penalties.two_sided_penalty(grads, self.cfg.gp_target, self.cfg.one_sided)

    def penalty_grad_of(self, grads: Tensor) -> Tensor:
        return penalties.two_sided_penalty_grad(grads, self.cfg.gp_target, self.cfg.one_sided)


@register("zgp")
class ZeroCentredPenalty(_Penalised):
    """0-GP: lambda * E[||grad D(x)||^2] at interpolates, real or fake points (Thanh-Tung et
    al. 2019; Mescheder et al. 2018). With real+fake, the sum of both expectations."""

    def penalty_of(self, grads: Tensor) -> Tensor:
        return penalties.zero_centred_penalty(grads)

    def penalty_grad_of(self, grads: Tensor) -> Tensor:
        return penalties.zero_centred_penalty_grad(grads)


@register("r1")
class R1(ZeroCentredPenalty):
    """R1: gamma/2 * E_real[||grad D(x)||^2] (Mescheder et al. 2018, eq. 9)."""

    weight_factor = 0.5


@register("r2")
class R2(ZeroCentredPenalty):
    """R2: gamma/2 * E_fake[||grad D(x)||^2] (Mescheder et al. 2018, eq. 10)."""

    weight_factor = 0.5


@register("r3gan")
class R1R2(ZeroCentredPenalty):
    """R3GAN's regulariser: gamma/2 (E_real[||grad D||^2] + E_fake[||grad D||^2]) (Huang et al.
    2024; R3GAN/Trainer.py), paired with the relativistic loss in its recipe."""

    weight_factor = 0.5


@register("sn")
class SpectralNorm(Lipschitz):
    """SN-GAN: every critic weight divided by its top singular value, estimated with one power
    iteration per training-mode forward and none in eval mode (Miyato et al. 2018)."""

    def prepare_critic(self, critic: nn.Module) -> nn.Module:
        layers = [m for m in critic.modules() if isinstance(m, _WEIGHT_LAYERS)]
        if any(not torch.any(layer.weight) for layer in layers):
            raise ConfigError(
                "--lipschitz sn divides each weight by its largest singular value, and this critic starts a layer at"
                " zero (--arch r3gan's fix-up start of each residual block): use --arch resnet or dcgan with sn, or"
                " another --lipschitz with r3gan"
            )
        for layer in layers:
            spectral_norm(layer, n_power_iterations=1)
        return critic


@register("gn")
class GradientNormalization(Lipschitz):
    """GN (Wu et al. 2021): D(x) = f(x) / (||grad f(x)|| + |f(x)|), no weight to tune; the
    normalised output goes into the loss (`ganctl.models.constrained.GradientNormalized`)."""

    compilable = False  # the forward takes grad f with create_graph: torch.compile has no double backward

    def prepare_critic(self, critic: nn.Module) -> nn.Module:
        _refuse_batch_norm(critic, self.name, "normalises each sample by its own input gradient")

        return GradientNormalized(critic)


@register("bjorck")
class Orthonormal(Lipschitz):
    """Björck-orthonormal GroupSort (Anil, Lucas and Grosse 2019): every linear weight
    orthonormalised in the forward, MaxMin activations: 1-Lipschitz and gradient-norm
    preserving by construction. MLP critics only."""

    def prepare_critic(self, critic: nn.Module) -> nn.Module:
        layers = {type(m).__name__ for m in critic.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d))}
        norms = {
            type(m).__name__ for m in critic.modules() if isinstance(m, (*_BATCH_NORMS, nn.LayerNorm, nn.GroupNorm))
        }
        if layers:
            raise ConfigError(
                "--lipschitz bjorck orthonormalises dense layers: use --arch mlp (its critic is an MLP);"
                " orthogonal convolutions, which the convolutional critics would need, are not implemented"
            )
        if norms:
            raise ConfigError(
                "--lipschitz bjorck: a normalisation layer breaks the critic's orthonormality; use --critic-norm none"
            )
        try:
            return orthonormal_groupsort(critic)
        except ValueError as exc:
            raise ConfigError(f"--lipschitz bjorck: {exc} (give an even --width)") from None

    def step_context(self) -> contextlib.AbstractContextManager:
        return parametrize.cached()

    def after_critic_step(self, critic: nn.Module) -> None:
        reproject(critic)  # keeps the next forward's iteration short; D itself is unchanged


@register("aoc")
class OrthogonalConvolutions(Lipschitz):
    """Orthogonal convolutions (AOC, Boissin et al. 2025, via orthogonium), orthonormal dense
    layers and MaxMin in place of the architecture's critic layers: 1-Lipschitz by construction,
    padding and strides included (`ganctl.models.certified`). Critics of convolutions and dense
    layers (--arch dcgan, mlp), conditional ones at every label."""

    compilable = False  # QR and the kernel's composition are rebuilt in every step
    channels_last = False  # its parametrizations `view` the stored factors

    def prepare_critic(self, critic: nn.Module) -> nn.Module:
        try:
            if isinstance(critic, ConditionalCritic):
                return orthogonal_conditional(critic)
            return orthogonal_convolutional(critic)
        except ImportError:
            raise ConfigError(NEEDS) from None
        except ValueError as exc:
            raise ConfigError(f"--lipschitz aoc: this critic cannot be made orthogonal layer by layer: {exc}") from None

    def step_context(self) -> contextlib.AbstractContextManager:
        return parametrize.cached()  # each kernel built once per step, not once per forward
