"""The one registry of Lipschitz methods (`METHODS`), and `resolve`, which fills a config from a
method's recipe.

Pure data and no torch, so the command line's help shows these defaults without importing it.
Everything about a method is written here once, under its name: its summary, its published
recipe (and its 2-D one), the settings only it may set, where its penalty may look, its search
space for equal-budget tuning, and the name of its strategy class in `ganctl.methods.strategies`, which
holds the maths.

Precedence: a setting given (flag or --config file) > the method's recipe for this kind of
data > `TrainConfig`'s default. `resolve` makes every filled value explicit, so a checkpoint
never depends on a default that may change later.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from ganctl.config import (
    IMAGE_ARCH,
    IMAGE_DEPTH,
    IMAGE_GEN_NORM,
    IMAGE_WIDTH,
    IMAGE_Z_DIM,
    POINTS_MODEL,
    SHAPES_IMAGE_SIZE,
    ResolvedConfig,
    TrainConfig,
    data_kind,
    default,
    flag_of,
    validate,
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


@dataclass(frozen=True)
class Method:
    name: str
    summary: str
    recipe: Recipe  # the published (image) recipe
    strategy: str  # its class in `ganctl.methods.strategies` (the maths)
    search: dict[str, Dim]  # its space for `ganctl compare --tune`
    points: Recipe | None = None  # on the 2-D sets, where it differs
    by_arch: dict[str, Recipe] = field(default_factory=dict)  # on images, for an architecture whose source differs
    owns: tuple[str, ...] = ()  # METHOD_SETTINGS only this method may set
    penalty_at: tuple[str, ...] = ()  # where its penalty may look; the first is the default
    fixed: dict[str, Any] = field(default_factory=dict)  # defaults of its own settings
    compared: bool = True  # in `ganctl compare`'s default set of methods

    def recipe_for(self, data: str, arch: str | None = None) -> Recipe:
        if data_kind(data) == "points":
            return self.points if self.points is not None else self.recipe
        return self.by_arch.get(arch or "", self.recipe)


# The image recipes are the released code of each method's paper, read for what it applies
# (docs/results.md, "Recipes and their sources", says what was checked in each).
_MESCHEDER = Recipe(
    "ns",
    "rmsprop",
    1e-4,
    1e-4,
    None,
    None,
    1,
    "Mescheder et al. 2018, GAN_stability configs/default.yaml: RMSprop 1e-4, d_steps 1, batch 64, and"
    " reg_param 10 on E||grad D||^2 with no 1/2 (train.py compute_grad2), which is gamma 20 here",
    penalty_weight=20.0,
)
_WGAN_GP = Recipe(
    "wasserstein",
    "adam",
    1e-4,
    1e-4,
    0.5,
    0.9,
    5,
    "WGAN-GP's released DCGAN-style models (gan_cifar.py, gan_mnist.py): Adam 1e-4, betas (0.5, 0.9),"
    " n_critic 5, lambda 10, batch 64",
    penalty_weight=10.0,
)
_WGAN_GP_RESNET = Recipe(
    "wasserstein",
    "adam",
    2e-4,
    2e-4,
    0.0,
    0.9,
    5,
    "WGAN-GP's CIFAR-10 ResNet (gan_cifar_resnet.py): Adam 2e-4, betas (0, 0.9), n_critic 5, lambda 10,"
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
            "wasserstein",
            "rmsprop",
            5e-5,
            5e-5,
            None,
            None,
            5,
            "WGAN, Arjovsky et al. 2017, Alg. 1: RMSprop 5e-5, c 0.01, n_critic 5, batch 64 (the released code's"
            " 100 critic steps for the first 25 and every 500th generator step are not in Alg. 1, nor here)",
        ),
        "WeightClip",
        {**_COMMON, "lr": _log(1e-5, 1e-3), "clip": _log(0.001, 0.1)},
        points=Recipe(
            "wasserstein",
            "rmsprop",
            2.8e-4,
            2.8e-4,
            None,
            None,
            1,
            _TUNED_2D.format(trial=5),
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
        "GradientPenalty",
        {**_COMMON, **_ADAM, **_PENALTY},
        # Not the tuning's winner (trial 3: lambda 0.012, lr 1.8e-3, n_critic 1, linear decay),
        # which lost every mode of 8gaussians on one report seed in three: lambda 0.1 as the
        # paper's toy code (gan_toy.py), lr 1e-3 from a hand sweep (docs/results.md).
        points=Recipe(
            "wasserstein",
            "adam",
            1e-3,
            1e-3,
            0.5,
            0.9,
            5,
            "WGAN-GP toy code (gan_toy.py) lambda 0.1; lr 1e-3 hand-swept (the tuned winner was unstable)",
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
        "ZeroCentredPenalty",
        {**_COMMON, **_ADAM, **_PENALTY},
        points=Recipe(
            "wasserstein",
            "adam",
            7.7e-4,
            7.7e-4,
            0.0,
            0.9,
            5,
            _TUNED_2D.format(trial=1),
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
        "R1",
        {**_COMMON, **_PENALTY},
        points=Recipe(
            "ns",
            "rmsprop",
            7.7e-4,
            7.7e-4,
            None,
            None,
            5,
            _TUNED_2D.format(trial=1),
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
        "R2",
        {**_COMMON, **_PENALTY},
        points=replace(_MESCHEDER, batch_size=256),
        owns=("penalty_weight", "penalty_at"),
        penalty_at=("fake",),
        compared=False,
    ),  # R1's mirror, rarely used alone
    Method(
        "sn",
        "SN-GAN: every critic weight divided by its top singular value",
        Recipe(
            "hinge",
            "adam",
            2e-4,
            2e-4,
            0.0,
            0.9,
            5,
            "SN-GAN's CIFAR-10 setting (sngan_projection sn_cifar10_unconditional.yml, train.py): hinge, Adam 2e-4,"
            " betas (0, 0.9), n_dis 5, batch 64, lr linearly to 0 (its generator batch of 128 is not reproduced)",
            lr_decay="linear",
        ),
        "SpectralNorm",
        {**_COMMON, **_ADAM},
        points=Recipe(
            "hinge", "adam", 1.8e-3, 1.8e-3, 0.0, 0.9, 1, _TUNED_2D.format(trial=3), lr_decay="linear", batch_size=256
        ),
    ),
    Method(
        "gn",
        "GN: the critic's output divided by its input-gradient norm plus its magnitude",
        Recipe(
            "ns",
            "adam",
            2e-4,
            2e-4,
            0.0,
            0.9,
            1,
            "GN-GAN (Wu et al. 2021), GNGAN-PyTorch config/GN-GAN_CIFAR10_CNN.txt: non-saturating (bce) loss on"
            " the normalised output, Adam 2e-4, betas (0, 0.9), n_dis 1, batch 64 (its generator batch of 128 is"
            " not reproduced)",
        ),
        "GradientNormalization",
        {**_COMMON, **_ADAM},
        points=Recipe(
            "hinge", "adam", 7.7e-4, 7.7e-4, 0.0, 0.9, 5, _TUNED_2D.format(trial=1), lr_decay="linear", batch_size=256
        ),
        by_arch={
            "resnet": Recipe(
                "hinge",
                "adam",
                2e-4,
                4e-4,
                0.0,
                0.9,
                5,
                "GN-GAN, config/GN-GAN_CIFAR10_RES.txt: hinge loss, Adam lr_G 2e-4, lr_D 4e-4, betas (0, 0.9),"
                " n_dis 5, lr linearly to 0 (lr_decay_start 0), batch 64",
                lr_decay="linear",
            )
        },
    ),
    Method(
        "bjorck",
        "Björck-orthonormal GroupSort MLP critic: 1-Lipschitz and gradient-norm preserving by construction",
        Recipe(
            "wasserstein",
            "adam",
            2e-4,
            2e-3,
            0.5,
            0.999,
            5,
            "Anil et al. 2019, LNets tasks/gan (LWGAN): Wasserstein loss, Adam lr_G 2e-4, lr_D 2e-3, betas (0.5,"
            " 0.999), n_critic 5, batch 64; Björck beta 0.5, order 1, MaxMin; iterated to convergence, where"
            " its 12 iterations after a sqrt(mn) scaling leave the layers far from orthonormal (docs/results.md)",
        ),
        "Orthonormal",
        {**_COMMON, **_ADAM, "lr": _log(1e-4, 1e-2)},
        points=Recipe(
            "wasserstein",
            "adam",
            1.6e-3,
            1.6e-3,
            0.0,
            0.9,
            5,
            _TUNED_2D.format(trial=1),
            lr_decay="linear",
            batch_size=256,
        ),
    ),
    Method(
        "none",
        "no constraint (an unconstrained baseline)",
        Recipe(
            "ns",
            "adam",
            2e-4,
            2e-4,
            0.5,
            0.999,
            1,
            "DCGAN (Radford et al. 2016): Adam 2e-4, beta1 0.5, batch 128",
            batch_size=128,
        ),
        "Lipschitz",
        {**_COMMON, **_ADAM},
        points=Recipe("ns", "adam", 2e-4, 2e-4, 0.5, 0.999, 1, "DCGAN's optimiser at the 2-D batch", batch_size=256),
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


# --- resolving a config --------------------------------------------------------------------
def resolve(cfg: TrainConfig) -> ResolvedConfig:
    """Validate, then fill every ``None`` from the data and the method's recipe. Called once,
    where a run enters ganctl (`ganctl.train`, `ganctl.resume`, `ganctl.load`, a comparison's
    plan); everything after carries the `ResolvedConfig`."""
    validate(cfg)
    if data_kind(cfg.data) == "points":
        cfg = _fill(cfg, **POINTS_MODEL)
    else:
        arch = cfg.arch or IMAGE_ARCH
        width = IMAGE_WIDTH.get(arch, IMAGE_WIDTH[IMAGE_ARCH])
        cfg = _fill(cfg, arch=arch, width=width, depth=IMAGE_DEPTH, z_dim=IMAGE_Z_DIM, gen_norm=IMAGE_GEN_NORM)
    cfg = _resolve_method(cfg, get_method(cfg.lipschitz))
    cfg = _resolve_conditioning(cfg)
    if cfg.lr_decay != "none" and cfg.decay_steps is None:
        # Fixed once, so resuming with a longer --steps does not change the schedule behind it.
        cfg = cfg.replace(decay_steps=cfg.steps)
    return ResolvedConfig(**cfg.to_dict())


def _resolve_method(cfg: TrainConfig, method: Method) -> TrainConfig:
    for name in METHOD_SETTINGS:
        if name not in method.owns and getattr(cfg, name) is not None:
            raise ConfigError(
                f"{flag_of(name)} does not apply to --lipschitz {method.name}"
                f" (it applies to: {', '.join(owners(name))})"
            )
    if cfg.reg_every != 1 and not method.penalty_at:
        raise ConfigError(
            f"--reg-every {cfg.reg_every}: lazy regularisation needs a penalty, and --lipschitz {method.name} has none"
        )
    if method.penalty_at:
        at = cfg.penalty_at or method.penalty_at[0]
        if at not in method.penalty_at:
            raise ConfigError(
                f"--penalty-at {at} is not available for --lipschitz {method.name}"
                f" (allowed: {', '.join(method.penalty_at)})"
            )
        cfg = cfg.replace(penalty_at=at)
    recipe = method.recipe_for(cfg.data, cfg.arch)
    changes: dict[str, Any] = {k: getattr(recipe, k) for k in RECIPE_FIELDS if getattr(cfg, k) is None}
    if (cfg.optimizer or recipe.optimizer) == "rmsprop":
        if cfg.beta1 is not None or cfg.beta2 is not None:
            raise ConfigError("--beta1 and --beta2 apply to --optimizer adam only")
    else:  # Adam: the recipe's betas, or WGAN-GP's where the recipe used RMSprop
        for i, name in enumerate(("beta1", "beta2")):
            if getattr(cfg, name) is None:
                changes[name] = ADAM_BETAS[i] if getattr(recipe, name) is None else getattr(recipe, name)
    # The method's own settings: the recipe's value where it sets one (clip's c on 2-D data),
    # else the method's fixed default.
    own = {k: v if getattr(recipe, k, None) is None else getattr(recipe, k) for k, v in method.fixed.items()}
    changes.update({k: v for k, v in own.items() if getattr(cfg, k) is None})
    return cfg.replace(**changes)


ACGAN_SCALES = (1.0, 0.1)  # WGAN-GP's gan_cifar_resnet.py: ACGAN_SCALE (critic), ACGAN_SCALE_G (generator)


def default_cond(cfg: TrainConfig) -> str:
    """The critic's conditioning when --cond is not given: a label embedding concatenated to the
    input for an MLP critic; SN-GAN's projection with spectral norm or the hinge loss (its
    conditional recipe); otherwise WGAN-GP's conditional recipe, AC-GAN."""
    if cfg.arch == "mlp":
        return "concat"
    return "projection" if cfg.lipschitz == "sn" or cfg.loss == "hinge" else "acgan"


def _resolve_conditioning(cfg: TrainConfig) -> TrainConfig:
    own = ("cond", "acgan_scale", "acgan_scale_g")
    if not cfg.conditional:
        given = [flag_of(k) for k in own if getattr(cfg, k) is not None]
        if given:
            raise ConfigError(f"{', '.join(given)} apply to class-conditional training: add --conditional")
        return cfg
    cond = cfg.cond or default_cond(cfg)
    if cond == "concat" and cfg.arch != "mlp":
        raise ConfigError(
            f"--cond concat concatenates a label embedding to an MLP's input; --arch {cfg.arch}"
            " takes projection or acgan"
        )
    if cond != "acgan" and (cfg.acgan_scale is not None or cfg.acgan_scale_g is not None):
        raise ConfigError(f"--acgan-scale and --acgan-scale-g apply to --cond acgan, not {cond}")
    scales = {}
    if cond == "acgan":
        scales = {"acgan_scale": ACGAN_SCALES[0], "acgan_scale_g": ACGAN_SCALES[1]}
    return _fill(cfg.replace(cond=cond), **scales)


def _fill(cfg: TrainConfig, **defaults: Any) -> TrainConfig:
    """Replace the fields that are None with `defaults`."""
    return cfg.replace(**{k: v for k, v in defaults.items() if getattr(cfg, k) is None})


# --- what --help shows -----------------------------------------------------------------
def describe_default(name: str) -> str:
    """The default of a setting in words, read from what `resolve` applies: a plain value, or
    per method and kind of data where the recipe decides ("gp 10 (2-D data: 0.1), ...")."""
    special = {
        "arch": f"{POINTS_MODEL['arch']} on 2-D data, {IMAGE_ARCH} on images",
        "width": (
            f"{POINTS_MODEL['width']} for the 2-D MLP; on images "
            + ", ".join(f"{arch} {w}" for arch, w in IMAGE_WIDTH.items())
        ),
        "depth": f"{POINTS_MODEL['depth']} on 2-D data, {IMAGE_DEPTH} for an image MLP",
        "gen_norm": f"{POINTS_MODEL['gen_norm']} on 2-D data, {IMAGE_GEN_NORM} on images",
        "z_dim": f"{POINTS_MODEL['z_dim']} on 2-D data, {IMAGE_Z_DIM} on images",
        "image_size": f"{SHAPES_IMAGE_SIZE} for shapes; a folder's, an array's or CIFAR-10's own",
        "channels": "the source's",
        "decay_steps": "--steps",
        "inception": "$GANCTL_INCEPTION",
        "vgg": "none: the run's feature space",
        "cond": "with --conditional: concat for an MLP critic, projection with sn or the hinge loss, acgan otherwise",
        "acgan_scale": f"{ACGAN_SCALES[0]:g} with --cond acgan (WGAN-GP's)",
        "acgan_scale_g": f"{ACGAN_SCALES[1]:g} with --cond acgan (WGAN-GP's)",
        "num_classes": "the data's",
        "threads": "0: torch's own (one per core)",
        "one_sided": ", ".join(
            f"{m.name} {'one' if m.fixed['one_sided'] else 'two'}-sided" for m in _METHODS if "one_sided" in m.fixed
        ),
        "penalty_at": ", ".join(
            f"{m.name} {m.penalty_at[0]}" + (f" (or {', '.join(m.penalty_at[1:])})" if len(m.penalty_at) > 1 else "")
            for m in _METHODS
            if m.penalty_at
        ),
    }
    if name in special:
        return special[name]
    if name == "batch_size":
        return _batch_sizes()
    if name in RECIPE_FIELDS:
        return _by_method(name)
    if name in ("beta1", "beta2"):
        i = ("beta1", "beta2").index(name)
        return f"{_by_method(name)}; {_text(ADAM_BETAS[i])} for an RMSprop recipe run with --optimizer adam"
    fixed = [m for m in _METHODS if name in m.fixed]
    if fixed:
        return ", ".join(f"{m.name} {_text(m.fixed[name])}" + _points_note(m, name, m.fixed[name]) for m in fixed)
    return _text(default(name))


def _batch_sizes() -> str:
    """The recipes' batch sizes in a few words: the common image one with its exceptions, and
    the 2-D one."""
    image = [m.recipe.batch_size for m in _METHODS]
    common = max(set(image), key=image.count)
    odd = ", ".join(f"{m.name}: {m.recipe.batch_size}" for m in _METHODS if m.recipe.batch_size != common)
    points = sorted({(m.points or m.recipe).batch_size for m in _METHODS})
    return f"{common} on images" + (f" ({odd})" if odd else "") + f", {'/'.join(map(str, points))} on 2-D data"


def _points_note(method: Method, name: str, value: Any) -> str:
    override = getattr(method.points, name, None) if method.points is not None else None
    return f" (2-D data: {_text(override)})" if override is not None and override != value else ""


def _by_method(name: str) -> str:
    parts = []
    for m in _METHODS:
        if name == "penalty_weight" and not m.penalty_at:
            continue
        value = _recipe_value(m.recipe, name)
        if value is None:
            continue
        notes = [
            f"{where}: {_text(_recipe_value(other, name))}"
            for where, other in ([("2-D data", m.points)] if m.points else []) + list(m.by_arch.items())
            if _recipe_value(other, name) != value
        ]
        parts.append(f"{m.name} {_text(value)}" + (f" ({'; '.join(notes)})" if notes else ""))
    return ", ".join(parts)


def _recipe_value(recipe: Recipe, name: str) -> Any:
    if name in ("beta1", "beta2") and recipe.optimizer != "adam":
        return None
    return getattr(recipe, name)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float) and value != 0 and abs(value) < 0.01:
        mantissa, exponent = f"{value:e}".split("e")
        return f"{float(mantissa):g}e{int(exponent)}"  # 5e-5, not 5e-05 or 0.00005
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def search_space(method: str) -> dict[str, Dim]:
    return get_method(method).search


def setting_values(setting: dict[str, Any]) -> dict[str, Any]:
    """A sampled setting as config values ("lr" sets both learning rates)."""
    values = {k: v for k, v in setting.items() if k != "lr"}
    if "lr" in setting:
        values.update(lr_g=setting["lr"], lr_d=setting["lr"])
    return values
