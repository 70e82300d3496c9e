"""The one registry of Lipschitz methods (`METHODS`): pure data and no torch, so the command
line's help shows these defaults without importing it.

Everything about a method is written here once, under its name: its summary, its published
recipe (and its 2-D one), the settings only it may set, where its penalty may look, its search
space for equal-budget tuning and the critic conditioning of its conditional recipe. Its maths
is a strategy class in `ganctl.methods.strategies`, registered under the same name;
`ganctl.methods.resolve` fills a config from the recipe, `ganctl.methods.help` says the
defaults in words.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from ganctl.config import (
    data_kind,
)
from ganctl.errors import ConfigError

# Settings that belong to some methods only; a method refuses the ones it does not own.
METHOD_SETTINGS = ("clip", "penalty_weight", "gp_target", "one_sided", "penalty_at")
RECIPE_FIELDS = ("loss", "optimizer", "lr_g", "lr_d", "n_critic", "penalty_weight", "lr_decay", "batch_size")
ADAM_BETAS = (0.5, 0.9)  # WGAN-GP's, for a method whose recipe used RMSprop when --optimizer adam is asked


# --- search spaces for equal-budget tuning (`ganctl compare --tune K`) --------------------------
@dataclass(frozen=True)
class Dim:
    """One dimension of a search space: log-uniform between two bounds, or one of some values."""

    kind: str  # "log" | "choice"
    values: tuple[Any, ...]

    def pick(self, u: float) -> Any:
        """The value at u in [0, 1)."""
        if self.kind == "log":
            lo, hi = self.values
            return float(lo * (hi / lo) ** u)
        return self.values[min(int(u * len(self.values)), len(self.values) - 1)]


def _log(lo: float, hi: float) -> Dim:
    return Dim("log", (lo, hi))


def _choice(*values: Any) -> Dim:
    return Dim("choice", values)


# Ranges from the literature, narrowed to what a small budget can explore. "lr" sets lr_g and
# lr_d together. Learning rates: 1e-4 (WGAN-GP, its toy code), 2e-4 (DCGAN, SN-GAN), 1e-3
# (measured on 2-D); Lucic et al. 2018 searched [1e-5, 1e-2]. Penalty weights: lambda 0.1 (the
# WGAN-GP toy code) to 10 (the paper), gamma 0.1 to 10 (Mescheder et al. 2018); Lucic et al.
# searched [0.1, 100]. Clipping: c = 0.01 (Arjovsky et al. 2017), a decade either side. Adam's
# betas as the papers used them; n_critic 1 (SN-GAN's, R1's) or 5 (WGAN's); a linear decay of
# the learning rate to 0 at the last step (WGAN-GP's CIFAR code) or none.
_COMMON = {"lr": _log(1e-4, 3e-3), "n_critic": _choice(1, 5), "lr_decay": _choice("none", "linear")}
_ADAM = {"beta1": _choice(0.0, 0.5), "beta2": _choice(0.9, 0.999)}
_PENALTY = {"penalty_weight": _log(0.01, 10.0)}


@dataclass(frozen=True)
class Recipe:
    """A training recipe: what `None` in a `TrainConfig` resolves to for one method."""

    loss: str
    optimizer: str
    lr_g: float
    lr_d: float
    beta1: float | None  # None for RMSprop
    beta2: float | None
    n_critic: int
    source: str
    penalty_weight: float | None = None  # as ganctl applies it: see the method's penalty formula
    lr_decay: str = "none"  # none | linear (to 0 at the last step)
    clip: float | None = None  # clip's c where it differs from the method's own default
    batch_size: int = 64  # the papers' image batch (2-D recipes: 256, as the WGAN-GP toy code)
    # Decays (`ganctl.training.schedule`) as (field, value) pairs, filled where not given, and
    # their horizon in images (decay_steps = decay_images / batch) where the source counts so.
    schedules: tuple[tuple[str, Any], ...] = ()
    decay_images: int | None = None


@dataclass(frozen=True)
class Method:
    name: str
    summary: str
    recipe: Recipe  # the published (image) recipe
    search: dict[str, Dim]  # its space for `ganctl compare --tune`
    points: Recipe | None = None  # on the 2-D sets, where it differs
    by_arch: dict[str, Recipe] = field(default_factory=dict)  # on images, for an architecture whose source differs
    owns: tuple[str, ...] = ()  # METHOD_SETTINGS only this method may set
    penalty_at: tuple[str, ...] = ()  # where its penalty may look; the first is the default
    fixed: dict[str, Any] = field(default_factory=dict)  # defaults of its own settings
    compared: bool = True  # in `ganctl compare`'s default set of methods
    # The critic's conditioning in its own conditional recipe (SN-GAN's projection; otherwise
    # WGAN-GP's AC-GAN); `ganctl.methods.resolve.default_cond` reads it.
    cond: str = "acgan"
    by_size: dict[int, Recipe] = field(default_factory=dict)  # on images of this side, where the source differs

    def recipe_for(self, data: str, arch: str | None = None, size: int | None = None) -> Recipe:
        if data_kind(data) == "points":
            return self.points if self.points is not None else self.recipe
        if size is not None and self.by_size:
            return self.by_size[min(self.by_size, key=lambda s: (abs(s - size), s))]
        return self.by_arch.get(arch or "", self.recipe)


# LNets' LWGAN recipe (Anil et al. 2019), the one published for a critic 1-Lipschitz by
# construction: `bjorck`'s, and `aoc`'s with its orthogonal convolutions.
_LWGAN = Recipe(
    loss="wasserstein",
    optimizer="adam",
    lr_g=2e-4,
    lr_d=2e-3,
    beta1=0.5,
    beta2=0.999,
    n_critic=5,
    source="Anil et al. 2019, LNets tasks/gan (LWGAN)",
)
_ORTHOGONAL_SEARCH = {**_COMMON, **_ADAM, "lr": _log(1e-4, 1e-2)}  # LNets' critic runs at 2e-3

# The image recipes are the released code of each method's paper, read for what it applies
# (docs/results.md, "Recipes and their sources", says what was checked in each).
_MESCHEDER = Recipe(
    loss="ns",
    optimizer="rmsprop",
    lr_g=1e-4,
    lr_d=1e-4,
    beta1=None,
    beta2=None,
    n_critic=1,
    source="Mescheder et al. 2018, GAN_stability configs/default.yaml: RMSprop 1e-4, d_steps 1, batch 64, and"
    " reg_param 10 on E||grad D||^2 with no 1/2 (train.py compute_grad2), which is gamma 20 here",
    penalty_weight=20.0,
)
_WGAN_GP = Recipe(
    loss="wasserstein",
    optimizer="adam",
    lr_g=1e-4,
    lr_d=1e-4,
    beta1=0.5,
    beta2=0.9,
    n_critic=5,
    source="WGAN-GP's released DCGAN-style models (gan_cifar.py, gan_mnist.py): Adam 1e-4, betas (0.5, 0.9),"
    " n_critic 5, lambda 10, batch 64",
    penalty_weight=10.0,
)
_WGAN_GP_RESNET = Recipe(
    loss="wasserstein",
    optimizer="adam",
    lr_g=2e-4,
    lr_d=2e-4,
    beta1=0.0,
    beta2=0.9,
    n_critic=5,
    source="WGAN-GP's CIFAR-10 ResNet (gan_cifar_resnet.py): Adam 2e-4, betas (0, 0.9), n_critic 5, lambda 10,"
    " batch 64, lr linearly to 0 over the run (its generator batch of 128 is not reproduced)",
    penalty_weight=10.0,
    lr_decay="linear",
)
# Flattened images through MLPs (--arch mlp): WGAN-GP's image recipe with n_critic 2, the best
# of a lever study on real 16 px digits at equal CPU time (docs/results.md, "Real digits").
_WGAN_GP_MLP = replace(
    _WGAN_GP,
    n_critic=2,
    source="WGAN-GP's image recipe (gan_cifar.py: Adam 1e-4, betas (0.5, 0.9), lambda 10, batch 64; gan_mnist.py's"
    " batch is 50) with n_critic 2, measured best on real 16 px digits at equal CPU time (benchmarks/real_digits.py)",
)

# R3GAN (Huang et al. 2024), brownvc/R3GAN train.py's presets and training_loop.py: Adam with
# betas (0, beta2), one D and one G phase per iteration, gamma/2 (R1 + R2), and every value
# cosine-decayed (`cosine_decay_with_warmup`, no warm-up) over decay_nimg = 2e7 images; the EMA's
# half-life rises from 0, and ADA's pipeline probability from 0 (not reproduced: `--augment`).
_R3GAN_COMMON = (("lr_final", 0.25), ("beta2_decay", "cosine"), ("beta2_final", 0.99))
_R3GAN_CIFAR = Recipe(
    loss="rpgan",
    optimizer="adam",
    lr_g=2e-4,
    lr_d=2e-4,
    beta1=0.0,
    beta2=0.9,
    n_critic=1,
    source="R3GAN (brownvc/R3GAN train.py preset CIFAR10, R3GAN/Trainer.py, training/training_loop.py): relativistic"
    " pairing loss, gamma/2 (R1 + R2) with gamma 0.05 -> 0.005, Adam betas (0, 0.9 -> 0.99), lr 2e-4 -> 5e-5, EMA"
    " half-life 0 -> 5000 kimg, all cosine over 2e7 images, batch 512, one D step per G step (its augmentation:"
    " ADA's pipeline at p 0 -> 0.55, not reproduced)",
    penalty_weight=0.05,
    lr_decay="cosine",
    batch_size=512,
    schedules=(*_R3GAN_COMMON, ("gamma_decay", "cosine"), ("gamma_final", 0.005), ("ema_kimg", 5000.0),
               ("ema_decay_shape", "cosine")),
    decay_images=20_000_000,
)  # fmt: skip
_R3GAN_FFHQ64 = replace(
    _R3GAN_CIFAR,
    source="R3GAN (brownvc/R3GAN train.py preset FFHQ-64): as CIFAR10's but gamma 2 -> 0.2, EMA half-life 0 -> 500"
    " kimg, batch 256 (ADA's pipeline at p 0 -> 0.3, not reproduced)",
    penalty_weight=2.0,
    batch_size=256,
    schedules=(*_R3GAN_COMMON, ("gamma_decay", "cosine"), ("gamma_final", 0.2), ("ema_kimg", 500.0),
               ("ema_decay_shape", "cosine")),
)  # fmt: skip

# The 2-D recipes are the winners of `ganctl compare --tune 6` on 8gaussians and 25gaussians
# (equal budget: 6 trials per method, tuning seeds 1000+), the trial with the lowest mean W1 /
# floor over both sets (examples/pick_recipes.py), rounded to two significant figures, except
# gp's (below); the published recipes stay the image defaults (docs/results.md, "Tuned
# against tuned").
_TUNED_2D = "ganctl compare --tune 6 on 8/25gaussians, trial {trial} (docs/results.md)"

_METHODS = (
    Method(
        "clip",
        "WGAN: clamp every critic weight to [-c, c] after each critic step",
        Recipe(
            loss="wasserstein",
            optimizer="rmsprop",
            lr_g=5e-5,
            lr_d=5e-5,
            beta1=None,
            beta2=None,
            n_critic=5,
            source="WGAN, Arjovsky et al. 2017, Alg. 1: RMSprop 5e-5, c 0.01, n_critic 5, batch 64 (the released code's"
            " 100 critic steps for the first 25 and every 500th generator step are not in Alg. 1, nor here)",
        ),
        {**_COMMON, "lr": _log(1e-5, 1e-3), "clip": _log(0.001, 0.1)},
        points=Recipe(
            loss="wasserstein",
            optimizer="rmsprop",
            lr_g=2.8e-4,
            lr_d=2.8e-4,
            beta1=None,
            beta2=None,
            n_critic=1,
            source=_TUNED_2D.format(trial=5),
            clip=0.0045,
            batch_size=256,
        ),
        owns=("clip",),
        fixed={"clip": 0.01},
    ),  # c, Arjovsky et al. 2017, Alg. 1
    Method(
        "gp",
        "WGAN-GP: lambda E[(||grad D(x_hat)|| - k)^2] at interpolates",
        _WGAN_GP,
        {**_COMMON, **_ADAM, **_PENALTY},
        # Not the tuning's winner (trial 3: lambda 0.012, lr 1.8e-3, n_critic 1, linear decay),
        # which lost every mode of 8gaussians on one report seed in three: lambda 0.1 as the
        # paper's toy code (gan_toy.py), lr 1e-3 from a hand sweep (docs/results.md).
        points=Recipe(
            loss="wasserstein",
            optimizer="adam",
            lr_g=1e-3,
            lr_d=1e-3,
            beta1=0.5,
            beta2=0.9,
            n_critic=5,
            source="WGAN-GP toy code (gan_toy.py) lambda 0.1; lr 1e-3 hand-swept (the tuned winner was unstable)",
            penalty_weight=0.1,
            batch_size=256,
        ),
        by_arch={"resnet": _WGAN_GP_RESNET, "mlp": _WGAN_GP_MLP},
        owns=("penalty_weight", "gp_target", "one_sided", "penalty_at"),
        penalty_at=("interp",),
        fixed={"gp_target": 1.0, "one_sided": False},
    ),  # k = 1 (Gulrajani et al. 2017)
    Method(
        "zgp",
        "0-GP: lambda E[||grad D(x)||^2] at interpolates, real or fake points",
        replace(
            _WGAN_GP, source="WGAN-GP's recipe (gan_cifar.py) with the zero-centred target of Thanh-Tung et al. 2019"
        ),
        {**_COMMON, **_ADAM, **_PENALTY},
        points=Recipe(
            loss="wasserstein",
            optimizer="adam",
            lr_g=7.7e-4,
            lr_d=7.7e-4,
            beta1=0.0,
            beta2=0.9,
            n_critic=5,
            source=_TUNED_2D.format(trial=1),
            penalty_weight=0.059,
            lr_decay="linear",
            batch_size=256,
        ),
        by_arch={
            "resnet": replace(
                _WGAN_GP_RESNET, source="WGAN-GP's ResNet recipe with the zero-centred target of Thanh-Tung et al. 2019"
            )
        },
        owns=("penalty_weight", "penalty_at"),
        penalty_at=("interp", "real", "fake", "real+fake"),
    ),
    Method(
        "r1",
        "R1: gamma/2 E_real[||grad D(x)||^2]",
        _MESCHEDER,
        {**_COMMON, **_PENALTY},
        points=Recipe(
            loss="ns",
            optimizer="rmsprop",
            lr_g=7.7e-4,
            lr_d=7.7e-4,
            beta1=None,
            beta2=None,
            n_critic=5,
            source=_TUNED_2D.format(trial=1),
            penalty_weight=0.26,
            lr_decay="linear",
            batch_size=256,
        ),
        owns=("penalty_weight", "penalty_at"),
        penalty_at=("real",),
    ),
    Method(
        "r2",
        "R2: gamma/2 E_fake[||grad D(x)||^2]",
        _MESCHEDER,
        {**_COMMON, **_PENALTY},
        points=replace(_MESCHEDER, batch_size=256),
        owns=("penalty_weight", "penalty_at"),
        penalty_at=("fake",),
        compared=False,
    ),  # R1's mirror, rarely used alone
    Method(
        "r3gan",
        "R3GAN: gamma/2 (E_real + E_fake)[||grad D(x)||^2] with the relativistic pairing loss",
        _R3GAN_CIFAR,
        {**_COMMON, **_PENALTY, "n_critic": _choice(1, 2)},
        owns=("penalty_weight", "penalty_at"),
        penalty_at=("real+fake",),
        by_size={32: _R3GAN_CIFAR, 64: _R3GAN_FFHQ64},
        compared=False,
    ),
    Method(
        "sn",
        "SN-GAN: every critic weight divided by its top singular value",
        Recipe(
            loss="hinge",
            optimizer="adam",
            lr_g=2e-4,
            lr_d=2e-4,
            beta1=0.0,
            beta2=0.9,
            n_critic=5,
            source="SN-GAN's CIFAR-10 setting (sngan_projection sn_cifar10_unconditional.yml, train.py): hinge,"
            " Adam 2e-4, betas (0, 0.9), n_dis 5, batch 64, lr linearly to 0 (its generator batch of 128 is not"
            " reproduced)",
            lr_decay="linear",
        ),
        {**_COMMON, **_ADAM},
        points=Recipe(
            loss="hinge",
            optimizer="adam",
            lr_g=1.8e-3,
            lr_d=1.8e-3,
            beta1=0.0,
            beta2=0.9,
            n_critic=1,
            source=_TUNED_2D.format(trial=3),
            lr_decay="linear",
            batch_size=256,
        ),
        cond="projection",  # SN-GAN's conditional recipe: the projection discriminator
    ),
    Method(
        "gn",
        "GN: the critic's output divided by its input-gradient norm plus its magnitude",
        Recipe(
            loss="ns",
            optimizer="adam",
            lr_g=2e-4,
            lr_d=2e-4,
            beta1=0.0,
            beta2=0.9,
            n_critic=1,
            source="GN-GAN (Wu et al. 2021), GNGAN-PyTorch config/GN-GAN_CIFAR10_CNN.txt: non-saturating (bce) loss on"
            " the normalised output, Adam 2e-4, betas (0, 0.9), n_dis 1, batch 64 (its generator batch of 128 is"
            " not reproduced)",
        ),
        {**_COMMON, **_ADAM},
        points=Recipe(
            loss="hinge",
            optimizer="adam",
            lr_g=7.7e-4,
            lr_d=7.7e-4,
            beta1=0.0,
            beta2=0.9,
            n_critic=5,
            source=_TUNED_2D.format(trial=1),
            lr_decay="linear",
            batch_size=256,
        ),
        by_arch={
            "resnet": Recipe(
                loss="hinge",
                optimizer="adam",
                lr_g=2e-4,
                lr_d=4e-4,
                beta1=0.0,
                beta2=0.9,
                n_critic=5,
                source="GN-GAN, config/GN-GAN_CIFAR10_RES.txt: hinge loss, Adam lr_G 2e-4, lr_D 4e-4, betas (0, 0.9),"
                " n_dis 5, lr linearly to 0 (lr_decay_start 0), batch 64",
                lr_decay="linear",
            )
        },
    ),
    Method(
        "bjorck",
        "Björck-orthonormal GroupSort MLP critic: 1-Lipschitz and gradient-norm preserving by construction",
        replace(
            _LWGAN,
            source="Anil et al. 2019, LNets tasks/gan (LWGAN): Wasserstein loss, Adam lr_G 2e-4, lr_D 2e-3, betas (0.5,"
            " 0.999), n_critic 5, batch 64; Björck beta 0.5, order 1, MaxMin; iterated to convergence, where"
            " its 12 iterations after a sqrt(mn) scaling leave the layers far from orthonormal (docs/results.md)",
        ),
        _ORTHOGONAL_SEARCH,
        points=Recipe(
            loss="wasserstein",
            optimizer="adam",
            lr_g=1.6e-3,
            lr_d=1.6e-3,
            beta1=0.0,
            beta2=0.9,
            n_critic=5,
            source=_TUNED_2D.format(trial=1),
            lr_decay="linear",
            batch_size=256,
        ),
    ),
    Method(
        "aoc",
        "orthogonal-convolution (AOC) GroupSort critic: 1-Lipschitz by construction on images, its bound certified",
        replace(
            _LWGAN,
            source="the critic of Boissin et al. 2025 (AOC, orthogonium's AdaptiveOrthoConv2d, MaxMin, OrthoLinear) in"
            " place of --arch's layers; trained as Anil et al. 2019 trained theirs, LNets tasks/gan (LWGAN):"
            " Wasserstein loss, Adam lr_G 2e-4, lr_D 2e-3, betas (0.5, 0.999), n_critic 5, batch 64",
        ),
        _ORTHOGONAL_SEARCH,
        compared=False,
    ),
    Method(
        "none",
        "no constraint (an unconstrained baseline)",
        Recipe(
            loss="ns",
            optimizer="adam",
            lr_g=2e-4,
            lr_d=2e-4,
            beta1=0.5,
            beta2=0.999,
            n_critic=1,
            source="DCGAN (Radford et al. 2016): Adam 2e-4, beta1 0.5, batch 128",
            batch_size=128,
        ),
        {**_COMMON, **_ADAM},
        points=Recipe(
            loss="ns",
            optimizer="adam",
            lr_g=2e-4,
            lr_d=2e-4,
            beta1=0.5,
            beta2=0.999,
            n_critic=1,
            source="DCGAN's optimiser at the 2-D batch",
            batch_size=256,
        ),
        compared=False,
    ),
)
METHODS: dict[str, Method] = {m.name: m for m in _METHODS}


def available_methods() -> list[str]:
    return list(METHODS)


def compared_methods() -> list[str]:
    """The methods `ganctl compare` trains when --methods is not given."""
    return [m.name for m in _METHODS if m.compared]


def get_method(name: str) -> Method:
    try:
        return METHODS[name]
    except KeyError:
        raise ConfigError(f"--lipschitz {name!r} is not one of: {', '.join(METHODS)}") from None


def owners(setting: str) -> list[str]:
    return [m.name for m in _METHODS if setting in m.owns]


def search_space(method: str) -> dict[str, Dim]:
    return get_method(method).search


def setting_values(setting: dict[str, Any]) -> dict[str, Any]:
    """A sampled setting as config values ("lr" sets both learning rates)."""
    values = {k: v for k, v in setting.items() if k != "lr"}
    if "lr" in setting:
        values.update(lr_g=setting["lr"], lr_d=setting["lr"])
    return values
