"""How the critic is kept Lipschitz: one small strategy per method, and a registry.

This is the only module that knows method names. The engine asks a strategy three things:
which points to penalise (`penalty_at`), the penalty from the input gradients there
(`penalty`), and what to do to the critic when it is built and after each optimizer step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from ganctl import penalties
from ganctl.config import TrainConfig, flag_of
from ganctl.errors import ConfigError

_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
_WEIGHT_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d)


# Settings that belong to some methods only; a method refuses the ones it does not own.
METHOD_SETTINGS = ("clip", "penalty_weight", "gp_target", "one_sided", "penalty_at")


@dataclass(frozen=True)
class Recipe:
    """A method's published training recipe: what `None` in a `TrainConfig` resolves to."""

    loss: str
    optimizer: str
    lr_g: float
    lr_d: float
    beta1: float | None  # None for RMSprop
    beta2: float | None
    n_critic: int
    source: str
    penalty_weight: float | None = None


_REGISTRY: dict[str, type[Lipschitz]] = {}


def register(cls: type[Lipschitz]) -> type[Lipschitz]:
    _REGISTRY[cls.name] = cls
    return cls


def available_methods() -> list[str]:
    return list(_REGISTRY)


def get_strategy_class(name: str) -> type[Lipschitz]:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(
            f"--lipschitz {name!r} is not one of: {', '.join(available_methods())}"
        ) from None


def build_strategy(cfg: TrainConfig) -> Lipschitz:
    return get_strategy_class(cfg.lipschitz)(cfg)


class Lipschitz:
    """No constraint. Also the base class: every hook is a no-op."""

    name: ClassVar[str] = "none"
    recipe: ClassVar[Recipe] = Recipe(
        "ns", "adam", 2e-4, 2e-4, 0.5, 0.999, 1, "DCGAN (Radford et al. 2016)"
    )
    # The recipe on the 2-D toy sets where it differs from the paper's main (image) recipe.
    points_recipe: ClassVar[Recipe | None] = None
    # Settings that only this method may set; any other method refuses them.
    own_settings: ClassVar[tuple[str, ...]] = ()

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg

    @classmethod
    def resolve(cls, cfg: TrainConfig) -> TrainConfig:
        for name in METHOD_SETTINGS:
            if name not in cls.own_settings and getattr(cfg, name) is not None:
                raise ConfigError(
                    f"{flag_of(name)} does not apply to --lipschitz {cls.name}"
                    f" (it applies to: {', '.join(_methods_owning(name))})"
                )
        if cfg.reg_every != 1 and "penalty_weight" not in cls.own_settings:
            raise ConfigError(
                f"--reg-every {cfg.reg_every}: lazy regularisation needs a penalty, and"
                f" --lipschitz {cls.name} has none"
            )
        recipe = cls.recipe_for(cfg.data)
        changes = {
            k: getattr(recipe, k)
            for k in ("loss", "optimizer", "lr_g", "lr_d", "n_critic", "penalty_weight")
            if getattr(cfg, k) is None
        }
        if (cfg.optimizer or recipe.optimizer) == "rmsprop":
            if cfg.beta1 is not None or cfg.beta2 is not None:
                raise ConfigError("--beta1 and --beta2 apply to --optimizer adam only")
        else:  # Adam: the recipe's betas, or WGAN-GP's (0.5, 0.9) where the recipe used RMSprop
            if cfg.beta1 is None:
                changes["beta1"] = 0.5 if recipe.beta1 is None else recipe.beta1
            if cfg.beta2 is None:
                changes["beta2"] = 0.9 if recipe.beta2 is None else recipe.beta2
        return cfg.replace(**changes)

    @classmethod
    def recipe_for(cls, data: str) -> Recipe:
        from ganctl.data import data_kind

        if cls.points_recipe is not None and data_kind(data) == "points":
            return cls.points_recipe
        return cls.recipe

    @property
    def penalty_at(self) -> str | None:
        """Where the penalty takes input gradients: interp | real | fake | real+fake | None."""
        return None

    def penalty(self, grads: list[Tensor]) -> Tensor:
        raise NotImplementedError(f"--lipschitz {self.name} has no penalty")

    def prepare_critic(self, critic: nn.Module) -> nn.Module:
        return critic

    def after_critic_step(self, critic: nn.Module) -> None:
        pass


def _methods_owning(setting: str) -> list[str]:
    return [n for n, c in _REGISTRY.items() if setting in c.own_settings]


register(Lipschitz)


@register
class WeightClip(Lipschitz):
    """WGAN: clamp every critic parameter to [-c, c] after each critic step (Arjovsky 2017)."""

    name = "clip"
    recipe = Recipe(
        "wasserstein", "rmsprop", 5e-5, 5e-5, None, None, 5, "WGAN (Arjovsky et al. 2017, Alg. 1)"
    )
    own_settings = ("clip",)
    default_clip: ClassVar[float] = 0.01  # c, Arjovsky et al. 2017, Alg. 1

    @classmethod
    def resolve(cls, cfg: TrainConfig) -> TrainConfig:
        cfg = super().resolve(cfg)
        return cfg if cfg.clip is not None else cfg.replace(clip=cls.default_clip)

    def prepare_critic(self, critic: nn.Module) -> nn.Module:
        self.after_critic_step(critic)  # the critic is inside the box from its first forward
        return critic

    @torch.no_grad()
    def after_critic_step(self, critic: nn.Module) -> None:
        for p in critic.parameters():
            p.clamp_(-self.cfg.clip, self.cfg.clip)


class _Penalised(Lipschitz):
    """Shared by every gradient penalty: a weight, an optional lazy interval, no batch norm."""

    own_settings = ("penalty_weight",)
    allowed_at: ClassVar[tuple[str, ...]] = ("interp",)
    # The factor in front of the expectation: 1 for lambda * E[.], 1/2 for gamma/2 * E[.].
    weight_factor: ClassVar[float] = 1.0

    @classmethod
    def resolve(cls, cfg: TrainConfig) -> TrainConfig:
        at = cfg.penalty_at or cls.allowed_at[0]
        if at not in cls.allowed_at:
            raise ConfigError(
                f"--penalty-at {at} is not available for --lipschitz {cls.name}"
                f" (allowed: {', '.join(cls.allowed_at)})"
            )
        return super().resolve(cfg).replace(penalty_at=at)

    @property
    def penalty_at(self) -> str | None:
        return self.cfg.penalty_at

    def prepare_critic(self, critic: nn.Module) -> nn.Module:
        for module in critic.modules():
            if isinstance(module, _BATCH_NORMS):
                raise ConfigError(
                    f"--lipschitz {self.name} penalises per-sample input gradients, which batch"
                    " normalisation couples across the batch; use --critic-norm layer or none"
                )
        return critic

    def penalty(self, grads: list[Tensor]) -> Tensor:
        per_set = [self.penalty_of(g) for g in grads]
        return self.weight_factor * self.cfg.penalty_weight * torch.stack(per_set).sum()

    def penalty_of(self, grads: Tensor) -> Tensor:
        """The unweighted penalty from the input gradients at one point set."""
        raise NotImplementedError

    def penalty_grads(self, grads: list[Tensor]) -> list[Tensor]:
        """d penalty / d g for each set's input gradients g, in closed form."""
        weight = self.weight_factor * self.cfg.penalty_weight
        return [weight * self.penalty_grad_of(g) for g in grads]

    def penalty_grad_of(self, grads: Tensor) -> Tensor:
        raise NotImplementedError


@register
class GradientPenalty(_Penalised):
    """WGAN-GP: lambda * E[(||grad D(x_hat)|| - k)^2] on interpolates (Gulrajani et al. 2017)."""

    name = "gp"
    recipe = Recipe(
        "wasserstein", "adam", 1e-4, 1e-4, 0.5, 0.9, 5,
        "WGAN-GP (Gulrajani et al. 2017, Alg. 1)", penalty_weight=10.0,
    )
    # 2-D data: lambda 0.1 as the paper's released toy code (gan_toy.py), whose critic then
    # moves the generator fast enough; lr 1e-3 measured (README, "Quality on 2-D data").
    points_recipe = Recipe(
        "wasserstein", "adam", 1e-3, 1e-3, 0.5, 0.9, 5,
        "WGAN-GP toy code (gan_toy.py) lambda 0.1; lr 1e-3 measured", penalty_weight=0.1,
    )
    own_settings = ("penalty_weight", "gp_target", "one_sided", "penalty_at")

    @classmethod
    def resolve(cls, cfg: TrainConfig) -> TrainConfig:
        cfg = super().resolve(cfg)
        return cfg.replace(
            gp_target=1.0 if cfg.gp_target is None else cfg.gp_target,
            one_sided=bool(cfg.one_sided),
        )

    def penalty_of(self, grads: Tensor) -> Tensor:
        return penalties.two_sided_penalty(grads, self.cfg.gp_target, self.cfg.one_sided)

    def penalty_grad_of(self, grads: Tensor) -> Tensor:
        return penalties.two_sided_penalty_grad(grads, self.cfg.gp_target, self.cfg.one_sided)


@register
class ZeroCentredPenalty(_Penalised):
    """0-GP: lambda * E[||grad D(x)||^2] at interpolates, real or fake points (Thanh-Tung et
    al. 2019; Mescheder et al. 2018). With real+fake, the sum of both expectations."""

    name = "zgp"
    recipe = Recipe(
        "wasserstein", "adam", 1e-4, 1e-4, 0.5, 0.9, 5,
        "WGAN-GP's recipe with the zero-centred target of Thanh-Tung et al. 2019",
        penalty_weight=10.0,
    )
    own_settings = ("penalty_weight", "penalty_at")
    allowed_at = ("interp", "real", "fake", "real+fake")

    def penalty_of(self, grads: Tensor) -> Tensor:
        return penalties.zero_centred_penalty(grads)

    def penalty_grad_of(self, grads: Tensor) -> Tensor:
        return penalties.zero_centred_penalty_grad(grads)


_MESCHEDER = Recipe(
    "ns", "rmsprop", 1e-4, 1e-4, None, None, 1,
    "Mescheder et al. 2018 (GAN stability code: RMSprop 1e-4, gamma 10)", penalty_weight=10.0,
)


@register
class R1(ZeroCentredPenalty):
    """R1: gamma/2 * E_real[||grad D(x)||^2] (Mescheder et al. 2018, eq. 9)."""

    name = "r1"
    recipe = _MESCHEDER
    allowed_at = ("real",)
    weight_factor = 0.5


@register
class R2(ZeroCentredPenalty):
    """R2: gamma/2 * E_fake[||grad D(x)||^2] (Mescheder et al. 2018, eq. 10)."""

    name = "r2"
    recipe = _MESCHEDER
    allowed_at = ("fake",)
    weight_factor = 0.5


@register
class SpectralNorm(Lipschitz):
    """SN-GAN: every critic weight divided by its top singular value, estimated with one power
    iteration per training-mode forward and none in eval mode (Miyato et al. 2018)."""

    name = "sn"
    recipe = Recipe(
        "hinge", "adam", 2e-4, 2e-4, 0.0, 0.9, 5,
        "SN-GAN (Miyato et al. 2018, ResNet setting: hinge, Adam 2e-4, betas (0, 0.9), n_dis 5)",
    )

    def prepare_critic(self, critic: nn.Module) -> nn.Module:
        from torch.nn.utils.parametrizations import spectral_norm

        layers = [m for m in critic.modules() if isinstance(m, _WEIGHT_LAYERS)]
        for layer in layers:
            spectral_norm(layer, n_power_iterations=1)
        return critic
