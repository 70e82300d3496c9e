"""Every training setting, once, with its unit or source: the ground floor of ganctl.

A `TrainConfig` is frozen. Fields left as ``None`` mean "the Lipschitz method's recipe" or
"follows the data" and are filled by `ganctl.methods.registry.resolve`, which returns a
`ResolvedConfig`, so a checkpoint always stores a fully explicit config and never depends on
defaults that may change later.

This module imports nothing from ganctl but its errors, and no torch: the command line's help
reads its defaults from here without paying for torch.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from ganctl.errors import ConfigError

# The built-in 2-D sets (`ganctl.data.toy` defines them); every other --data is images.
POINT_DATA = ("8gaussians", "25gaussians", "swissroll", "ring", "checkerboard")
LOSSES = ("wasserstein", "hinge", "ns", "lsgan")  # `ganctl.methods.losses` defines them
ARCHS = ("mlp", "dcgan", "resnet")  # `ganctl.models` builds them
FIDELITY_METRICS = ("fid", "kid", "is", "pr", "dc")  # `ganctl.measure.fidelity` computes them

# What the data decides when a setting is left out.
# width 128 measured as good as 256, 4x faster; no generator normalisation, as the WGAN-GP toy code
POINTS_MODEL = {"arch": "mlp", "width": 128, "depth": 3, "z_dim": 2, "gen_norm": "none"}
IMAGE_ARCH = "dcgan"
IMAGE_WIDTH = {
    "dcgan": 64,
    "resnet": 128,
    "mlp": 1024,
}  # DCGAN's 64; the WGAN-GP / SN-GAN ResNet's 128; PyTorch-GAN's MLP
IMAGE_DEPTH = 4  # an image MLP's generator layers (128, 256, 512, 1024 at width 1024: PyTorch-GAN's)
IMAGE_GEN_NORM = "batch"  # DCGAN's, the WGAN-GP ResNet's and PyTorch-GAN's MLP generators
IMAGE_Z_DIM = 128
SHAPES_IMAGE_SIZE = 32  # the built-in `shapes` set (files keep their own size)


def data_kind(name: str) -> str:
    """'points' for the built-in 2-D sets, 'images' for everything else."""
    return "points" if name in POINT_DATA else "images"


@dataclass(frozen=True)
class TrainConfig:
    # --- data -------------------------------------------------------------------------
    data: str = "25gaussians"  # a built-in set (2-D toy sets, shapes), an image folder or .npy/.npz
    image_size: int | None = None  # images: side in pixels (None: 32 for shapes, the data's own for files)
    split: str = "train"  # CIFAR-10 as distributed: train (50,000 images) | test (10,000)
    channels: int | None = None  # images: 1 or 3 (None: the source's)
    hflip: bool = False  # images: random horizontal flips

    # --- models (None: follows the data; see README "Defaults") ------------------------
    arch: str | None = None  # one of ARCHS
    width: int | None = None  # MLP: hidden units (2-D: 128, measured; images: the widest); dcgan/resnet: channels
    depth: int | None = None  # MLP hidden layers (2-D: 3; images: the generator's 4, the critic half)
    gen_norm: str | None = None  # generator normalisation: batch | layer | none (2-D: none; images: batch)
    z_dim: int | None = None  # latent size: 2 for 2-D data (as the WGAN-GP toy code), 128 for images
    critic_norm: str = "none"  # one of choices("critic_norm"); batch is refused under a penalty

    # --- class conditioning (Mirza & Osindero 2014; projection: Miyato & Koyama 2018; AC-GAN:
    # Odena et al. 2017, as WGAN-GP's conditional CIFAR-10 code) -------------------------
    conditional: bool = False  # condition generator and critic on the data's class labels
    cond: str | None = None  # the critic's conditioning: projection | acgan | concat (None: the recipe's)
    acgan_scale: float | None = None  # acgan: the critic's auxiliary cross-entropy weight (WGAN-GP's 1)
    acgan_scale_g: float | None = None  # acgan: the generator's (WGAN-GP's 0.1)
    num_classes: int | None = None  # the data's class count, recorded when the data is read

    # --- Lipschitz method -----------------------------------------------------------
    lipschitz: str = "gp"  # a method of `ganctl.methods.registry.METHODS`
    # Method-specific settings: None means "the method's default"; another method refuses them.
    clip: float | None = None  # clip: bound c, 0.01 (Arjovsky et al. 2017, Alg. 1)
    penalty_weight: float | None = None  # gp/zgp: lambda; r1/r2: gamma
    gp_target: float | None = None  # gp: k in (||grad|| - k)^2, 1 (Gulrajani et al. 2017)
    one_sided: bool | None = None  # gp: max(0, ||grad|| - k)^2, WGAN-LP (Petzka et al. 2018)
    penalty_at: str | None = None  # where a penalty looks (each method allows its own: `recipes.METHODS`)
    reg_every: int = 1  # lazy regularisation interval N (Karras et al. 2020, StyleGAN2)

    # --- objective and optimisation (None: the method's published recipe) ------------
    loss: str | None = None  # one of LOSSES
    optimizer: str | None = None  # adam | rmsprop
    lr_g: float | None = None
    lr_d: float | None = None
    beta1: float | None = None  # Adam only
    beta2: float | None = None  # Adam only
    n_critic: int | None = None  # critic steps per generator step
    batch_size: int | None = None  # samples per critic and generator step (None: the recipe's)
    steps: int = 3000  # generator iterations
    ema_decay: float = 0.999  # generator EMA (0 disables); warm-up min(d, (1+t)/(10+t))
    amp: str = "none"  # none | bf16 | fp16 (fp16 with a gradient scaler)
    lr_decay: str | None = None  # none | linear (to 0 at decay_steps, as WGAN-GP's CIFAR code); None: the recipe's
    decay_steps: int | None = None  # horizon of lr_decay; None: the run's `steps`, then fixed

    # --- reproducibility and placement -------------------------------------------------
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda[:N] | mps
    compile: bool = False  # torch.compile the forwards that allow it (not the penalty's double backward)
    threads: int = 0  # CPU threads for the run; 0: torch's own (measured fastest alone, docs/benchmarks.md)
    dist_timeout: float = (
        600.0  # seconds a collective of a multi-process step waits for a peer (`ganctl.training.distributed`)
    )
    tf32: bool = True  # CUDA: TensorFloat-32 matrix products and convolutions (float32 accumulation)

    # --- schedule (generator steps; 0 disables) ---------------------------------------
    log_every: int = 50
    eval_every: int = 500
    sample_every: int = 500
    ckpt_every: int = 1000
    keep_last: int = 0  # keep only the newest N checkpoints (0: keep all)
    eval_samples: int = 2500  # generated samples per quality evaluation
    # Images: sample-quality metrics at eval steps (comma-separated FIDELITY_METRICS, or none),
    # in which feature space, and the Inception-v3 weights file for `inception`.
    eval_metrics: str = "fid,pr"
    eval_features: str = "random-conv"  # random-conv | inception (needs --inception or $GANCTL_INCEPTION)
    inception: str | None = None
    vgg: str | None = None  # VGG-16 weights (torchvision's layout): precision/recall and density/coverage there
    tensorboard: bool = False  # also write TensorBoard events under RUN/tensorboard (the `tensorboard` extra)
    on_nonfinite: str = "stop"  # stop | skip | rollback: what a NaN or Inf in a loss, penalty or gradient does

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class ResolvedConfig(TrainConfig):
    """A `TrainConfig` whose method recipe and data defaults have been filled in by
    `ganctl.methods.registry.resolve`: what a `Trainer`, a comparison's `Job` and a checkpoint carry. It
    is resolved once, where a run enters ganctl (train, resume, compare, tune, load); an image
    run then also records the size and channels its data had."""


# Settings that describe how long and how visibly a run goes, not what it computes; the only
# ones a resumed run may change.
SCHEDULE_FIELDS = frozenset(
    {
        "steps",
        "log_every",
        "eval_every",
        "sample_every",
        "ckpt_every",
        "keep_last",
        "eval_samples",
        "eval_metrics",
        "eval_features",
        "inception",
        "vgg",
        "tensorboard",
        "device",
        "on_nonfinite",
        "compile",
        "tf32",
        "threads",
        "dist_timeout",
    }
)

_CHOICES = {
    "critic_norm": ("none", "layer", "batch"),
    "gen_norm": ("none", "layer", "batch"),
    "penalty_at": ("interp", "real", "fake", "real+fake"),
    "optimizer": ("adam", "rmsprop"),
    "lr_decay": ("none", "linear"),
    "amp": ("none", "bf16", "fp16"),
    "on_nonfinite": ("stop", "skip", "rollback"),
    "loss": LOSSES,
    "arch": ARCHS,
    "eval_features": ("random-conv", "inception"),
    "split": ("train", "test"),
    "cond": ("projection", "acgan", "concat"),
}


def choices(name: str) -> tuple[str, ...]:
    """The values a string setting accepts (the method names live in `ganctl.methods.registry`)."""
    return _CHOICES[name]


def default(name: str) -> Any:
    """The `TrainConfig` default of a field (None: filled by the recipe or the data)."""
    return next(f.default for f in fields(TrainConfig) if f.name == name)


def field_names() -> list[str]:
    return [f.name for f in fields(TrainConfig)]


def _expected_type(name: str) -> tuple[type, bool]:
    """The field's base type and whether it may be None."""
    hint = typing.get_type_hints(TrainConfig)[name]
    args = typing.get_args(hint)
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        base = next(a for a in args if a is not type(None))
        return base, True
    return hint, False


def field_type(name: str) -> type:
    """The base type of a field (float for ``float | None``)."""
    return _expected_type(name)[0]


def _coerce(name: str, value: Any, where: str) -> Any:
    base, nullable = _expected_type(name)
    if value is None:
        if nullable:
            return None
        raise ConfigError(f"{where}: '{name}' may not be empty")
    if base is bool:
        ok = isinstance(value, bool)
    elif base is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    else:
        ok = isinstance(value, base) and not isinstance(value, bool)
    if not ok:
        raise ConfigError(f"{where}: '{name}' must be {base.__name__}, got {type(value).__name__} {value!r}")
    return float(value) if base is float else value


def flag_of(name: str) -> str:
    """The command-line flag of a config field, as the user types it."""
    return "--lambda/--gamma" if name == "penalty_weight" else "--" + name.replace("_", "-")


def from_dict(values: dict[str, Any], where: str = "config") -> TrainConfig:
    """Build a config from plain data (TOML file, checkpoint metadata), checking names and types."""
    known = set(field_names())
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return TrainConfig(**{k: _coerce(k, v, where) for k, v in values.items()})


def load_toml(path: Path) -> dict[str, Any]:
    """Read a TOML config file: top-level keys are `TrainConfig` fields (dashes allowed)."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"--config {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--config {path}: cannot read ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"--config {path}: not valid TOML ({exc})") from None
    values = {k.replace("-", "_"): v for k, v in raw.items()}
    from_dict(values, where=f"--config {path}")  # validates names and types
    return values


def _check_positive(cfg: TrainConfig, names: tuple[str, ...], strict: bool = True) -> None:
    for name in names:
        value = getattr(cfg, name)
        if value is None:
            continue
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{flag_of(name)} must be finite, got {value}")
        if value < 0 or (strict and value == 0):
            need = "> 0" if strict else ">= 0"
            raise ConfigError(f"{flag_of(name)} must be {need}, got {value}")


def validate(cfg: TrainConfig) -> None:
    """Refuse impossible settings before any work starts."""
    for name, allowed in _CHOICES.items():
        value = getattr(cfg, name)
        if value is not None and value not in allowed:
            raise ConfigError(f"{flag_of(name)} {value!r} is not one of: {', '.join(allowed)}")
    _check_positive(cfg, ("width", "depth", "z_dim", "batch_size", "steps", "reg_every"))
    _check_positive(cfg, ("decay_steps", "image_size"))
    if cfg.channels is not None and cfg.channels not in (1, 3):
        raise ConfigError(f"--channels must be 1 or 3, got {cfg.channels}")
    _check_positive(cfg, ("clip", "lr_g", "lr_d", "n_critic", "eval_samples"))
    _check_positive(cfg, ("penalty_weight", "gp_target", "acgan_scale", "acgan_scale_g"), strict=False)
    _check_positive(cfg, ("num_classes", "dist_timeout"))
    _check_positive(
        cfg, ("log_every", "eval_every", "sample_every", "ckpt_every", "keep_last", "threads"), strict=False
    )
    for name in ("beta1", "beta2"):
        value = getattr(cfg, name)
        if value is not None and not 0.0 <= value < 1.0:
            raise ConfigError(f"--{name} must be in [0, 1), got {value}")
    if not 0.0 <= cfg.ema_decay < 1.0:
        raise ConfigError(f"--ema-decay must be in [0, 1) (0 disables the EMA), got {cfg.ema_decay}")
    if "is" in metric_list(cfg.eval_metrics, "--eval-metrics") and cfg.eval_features != "inception":
        raise ConfigError(
            "--eval-metrics is: the Inception Score needs Inception-v3's classifier; add --eval-features inception"
            " (with --inception PATH)"
        )


def metric_list(text: str, flag: str = "--metrics") -> tuple[str, ...]:
    """Comma-separated image metrics (fid, kid, is, pr, dc) as a tuple; "none" or "" is empty."""
    names = tuple(m.strip() for m in text.split(",") if m.strip() and m.strip() != "none")
    unknown = [m for m in names if m not in FIDELITY_METRICS]
    if unknown:
        raise ConfigError(f"{flag} {text!r}: {', '.join(unknown)} is not one of: {', '.join(FIDELITY_METRICS)}, none")
    return names
