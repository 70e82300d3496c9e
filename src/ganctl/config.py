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
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ganctl.errors import ConfigError

# The built-in 2-D sets (`ganctl.data.toy` defines them); every other --data is images.
POINT_DATA = ("8gaussians", "25gaussians", "swissroll", "ring", "checkerboard")
LOSSES = ("wasserstein", "hinge", "ns", "lsgan", "rpgan")  # `ganctl.methods.losses` defines them
ARCHS = ("mlp", "dcgan", "resnet", "r3gan")
DECAY_SHAPES = ("none", "linear", "cosine")  # `ganctl.training.schedule`
# DiffAugment's policies, each the operations it applies in order (`ganctl.nets.augment` holds
# the operations, by these names; mit-han-lab/data-efficient-gans, DiffAugment_pytorch.py).
AUGMENT_POLICIES: dict[str, tuple[str, ...]] = {
    "color": ("brightness", "saturation", "contrast"),
    "translation": ("translation",),
    "cutout": ("cutout",),
}
FIDELITY_METRICS = ("fid", "kid", "is", "pr", "dc")  # `ganctl.quality.fidelity` computes them

# What the data decides when a setting is left out.
# width 128 measured as good as 256, 4x faster; no generator normalisation, as the WGAN-GP toy code
POINTS_MODEL = {"arch": "mlp", "width": 128, "depth": 3, "z_dim": 2, "gen_norm": "none"}
IMAGE_ARCH = "dcgan"
IMAGE_WIDTH = {
    "dcgan": 64,
    "resnet": 128,
    "mlp": 1024,
    "r3gan": 64,
}  # DCGAN's 64; the WGAN-GP / SN-GAN ResNet's 128; PyTorch-GAN's MLP
IMAGE_DEPTHS = {"r3gan": 1}  # r3gan: residual blocks per stage (R3GAN's presets: 2)
IMAGE_DEPTH = 4  # an image MLP's generator layers (128, 256, 512, 1024 at width 1024: PyTorch-GAN's)
IMAGE_GEN_NORM = "batch"  # DCGAN's, the WGAN-GP ResNet's and PyTorch-GAN's MLP generators
IMAGE_Z_DIM = 128
SHAPES_IMAGE_SIZE = 32  # the built-in `shapes` set (files keep their own size)


def data_kind(name: str) -> str:
    """'points' for the built-in 2-D sets, 'images' for everything else."""
    return "points" if name in POINT_DATA else "images"


# Help panels of `ganctl train --help`.
MODEL, METHOD, COND = "Model", "Lipschitz method", "Class conditioning"
OPTIM = "Optimisation (default: the method's recipe; see docs/results.md)"
SCHEDULE = "Schedule (in generator steps; 0 disables)"
AUGMENT = "Augmentation (images)"
DECAY = "Decay over --decay-steps (none | linear | cosine; default: the method's recipe)"


def setting(default: Any, help: str, *, flags: tuple[str, ...] | None = None, panel: str | None = None) -> Any:
    """A config field and its one description: `help` says what it means (the command line adds
    the default that applies), `flags` are its flag names (None: --field-name, or
    --field/--no-field for a switch; () for a field that is recorded, not given), `panel` the
    help panel it is listed under."""
    return field(default=default, metadata={"help": help, "flags": flags, "panel": panel})


@dataclass(frozen=True)
class TrainConfig:
    """Every training setting. Each field's `setting(...)` is its one description: the help of its
    flag (`ganctl train --help`, and of `ganctl compare`), its flag names, which are also its keys
    in a --config file, and its help panel."""

    # --- data -------------------------------------------------------------------------
    data: str = setting(
        "25gaussians",
        f"{' | '.join((*POINT_DATA, 'shapes'))}, a folder of images, FILE.npy/.npz, or CIFAR-10 as"
        " distributed (cifar-10-batches-py or -bin, folder or .tar.gz); stacked:PATH stacks three images of a"
        " labelled grey set as channels (K^3 modes, for counting them: Stacked MNIST).",
    )
    image_size: int | None = setting(
        None,
        "Images: side in pixels; images of another size are resized and centre-cropped (the result is then"
        " resampled, and image metrics are not standard).",
    )
    split: str = setting("train", "CIFAR-10 as distributed: train (50,000 images) | test (10,000).")
    channels: int | None = setting(None, "Images: 1 (grayscale) or 3 (RGB).")
    hflip: bool = setting(False, "Images: random horizontal flips.")

    # --- models (None: follows the data; see README "Defaults") ------------------------
    arch: str | None = setting(
        None,
        f"{' | '.join(ARCHS)} (mlp on images: flattened pixels; dcgan: 16 to 256 px and 28; resnet: 16, 28,"
        " 32 px; r3gan: R3GAN's modernised ResNet, 8 to 256 px).",
        panel=MODEL,
    )
    width: int | None = setting(None, "MLP hidden units; dcgan/resnet base and r3gan stage channels.", panel=MODEL)
    depth: int | None = setting(
        None, "MLP hidden layers (images: the generator's; the critic has half); r3gan blocks per stage.", panel=MODEL
    )
    gen_norm: str | None = setting(None, "Generator normalisation: batch | layer | none.", panel=MODEL)
    z_dim: int | None = setting(None, "Latent size.", panel=MODEL)
    critic_norm: str = setting(
        "none", "Critic normalisation: none | layer | batch (refused under a penalty).", panel=MODEL
    )

    # --- class conditioning (Mirza & Osindero 2014; projection: Miyato & Koyama 2018; AC-GAN:
    # Odena et al. 2017, as WGAN-GP's conditional CIFAR-10 code) -------------------------
    conditional: bool = setting(
        False,
        "Condition generator and critic on the data's class labels (2-D mixtures, shapes, class sub-folders,"
        " an .npz's y or labels, CIFAR-10).",
        panel=COND,
    )
    cond: str | None = setting(
        None,
        "The critic's conditioning: projection (Miyato & Koyama 2018) | acgan (an auxiliary classifier, as"
        " WGAN-GP's conditional code) | concat (a label embedding beside an MLP's input).",
        panel=COND,
    )
    acgan_scale: float | None = setting(None, "acgan: the critic's cross-entropy weight.", panel=COND)
    acgan_scale_g: float | None = setting(None, "acgan: the generator's cross-entropy weight.", panel=COND)
    num_classes: int | None = setting(None, "The data's class count, recorded when the data is read.", flags=())

    # --- Lipschitz method -----------------------------------------------------------
    lipschitz: str = setting(
        "gp", "How the critic is kept Lipschitz (docs/results.md gives each method's recipe and source).", panel=METHOD
    )
    # Method-specific settings: None means "the method's default"; another method refuses them.
    clip: float | None = setting(None, "clip: weight bound c (Arjovsky et al. 2017, Alg. 1).", panel=METHOD)
    penalty_weight: float | None = setting(
        None,
        "gp, zgp: lambda in lambda E[.]; r1, r2: gamma in gamma/2 E||grad D||^2, Mescheder et al.'s convention"
        " (GAN_stability's reg_param 10, added with no 1/2, is --gamma 20).",
        flags=("--lambda", "--gamma"),
        panel=METHOD,
    )
    gp_target: float | None = setting(None, "gp: target norm k (Gulrajani et al. 2017: 1).", panel=METHOD)
    one_sided: bool | None = setting(
        None,
        "gp: penalise only norms above k, max(0, ||grad|| - k)^2 (WGAN-LP, Petzka et al. 2018).",
        flags=("--one-sided/--two-sided",),
        panel=METHOD,
    )
    penalty_at: str | None = setting(
        None, "Where the penalty looks: interp | real | fake | real+fake (each method allows its own).", panel=METHOD
    )
    reg_every: int = setting(
        1,
        "Apply the penalty every N critic steps with weight N (lazy regularisation, Karras et al. 2020).",
        panel=METHOD,
    )

    # --- objective and optimisation (None: the method's published recipe) ------------
    loss: str | None = setting(None, f"{' | '.join(LOSSES)}.", panel=OPTIM)
    optimizer: str | None = setting(None, "adam | rmsprop.", panel=OPTIM)
    lr_g: float | None = setting(None, "Generator learning rate.", panel=OPTIM)
    lr_d: float | None = setting(None, "Critic learning rate.", panel=OPTIM)
    beta1: float | None = setting(None, "Adam beta1.", panel=OPTIM)
    beta2: float | None = setting(None, "Adam beta2.", panel=OPTIM)
    n_critic: int | None = setting(None, "Critic steps per generator step.", panel=OPTIM)
    batch_size: int | None = setting(None, "Samples per critic and generator step (per process).", panel=OPTIM)
    steps: int = setting(3000, "Generator iterations.", panel=OPTIM)
    ema_decay: float = setting(
        0.999,
        "Generator EMA decay, used for samples and evaluation, with the warm-up min(d, (1+t)/(10+t)); 0 disables it.",
        panel=OPTIM,
    )
    amp: str = setting("none", "Mixed precision: none | bf16 | fp16 (fp16 with a gradient scaler).", panel=OPTIM)
    lr_decay: str | None = setting(
        None, "The learning rates from their value to --lr-final times it: none | linear | cosine.", panel=DECAY
    )
    lr_final: float | None = setting(
        None, "The learning rates' final multiple (WGAN-GP's and SN-GAN's linear decay: 0; R3GAN: 0.25).", panel=DECAY
    )
    gamma_decay: str | None = setting(
        None, "The penalty weight from --lambda/--gamma to --gamma-final: none | linear | cosine.", panel=DECAY
    )
    gamma_final: float | None = setting(None, "The penalty weight at --decay-steps.", panel=DECAY)
    beta2_decay: str | None = setting(
        None, "Adam's beta2 from --beta2 to --beta2-final: none | linear | cosine.", panel=DECAY
    )
    beta2_final: float | None = setting(None, "Adam's beta2 at --decay-steps.", panel=DECAY)
    ema_kimg: float | None = setting(
        None,
        "The generator EMA's half-life in thousands of images, in place of --ema-decay (StyleGAN2's ema_kimg):"
        " decay 0.5 ** (batch / (1000 ema_kimg)).",
        panel=DECAY,
    )
    ema_decay_shape: str | None = setting(
        None,
        "With --ema-kimg: the half-life rises from 0 to it: none (constant) | linear | cosine (R3GAN).",
        flags=("--ema-schedule",),
        panel=DECAY,
    )
    decay_steps: int | None = setting(
        None,
        "The horizon of every decay, fixed when the run starts (a longer --steps on resume keeps it); r3gan: its 2e7"
        " images over --batch-size.",
        panel=DECAY,
    )

    # --- augmentation (images) -----------------------------------------------------------
    augment: str = setting(
        "none",
        "DiffAugment's policies on every image the critic sees, real and generated, differentiably:"
        f" {', '.join(AUGMENT_POLICIES)} (comma-separated), or none.",
        panel=AUGMENT,
    )
    augment_p: float | None = setting(
        None,
        "The probability of each operation on each sample (with --ada-target: the probability it starts at).",
        panel=AUGMENT,
    )
    ada_target: float | None = setting(
        None,
        "Adapt the probability as ADA does, towards this value of the loss's overfitting heuristic (ADA's: 0.6;"
        " docs/results.md says which heuristic each loss takes).",
        panel=AUGMENT,
    )
    ada_kimg: float = setting(500.0, "ADA's speed: thousands of images for p to move by 1.", panel=AUGMENT)
    ada_heuristic: str = setting(
        "sign",
        "What --ada-target is a target of: sign (the loss's sign heuristic on the training images, ADA's r_t) |"
        " validation (ADA's r_v = (D(train) - D(held out)) / (D(train) - D(generated)), on the --holdout images).",
        panel=AUGMENT,
    )
    holdout: str | None = setting(
        None,
        "Images: set aside N images (or a FRACTION of them, between 0 and 1) that the run never trains on, the same"
        " ones whatever --seed (recorded in the run folder as holdout.json); each evaluation then reports whether"
        " the generator copies its training images, and the critic's mean output on seen, held-out and generated"
        " images.",
    )

    # --- reproducibility and placement -------------------------------------------------
    seed: int = setting(0, "Random seed; the same seed on the CPU gives the same numbers.")
    device: str = setting("auto", "auto | cpu | cuda | cuda:N | mps.")
    compile: bool = setting(
        False,
        "torch.compile every forward that allows it; penalised critic passes stay eager (no double backward"
        " under torch.compile).",
    )
    threads: int = setting(0, "CPU threads for the run (measured fastest alone: docs/benchmarks.md).")
    dist_timeout: float = setting(
        600.0,
        "Several processes: seconds a training step's collective waits for a peer before the run stops with"
        " the newest checkpoint (rank 0's evaluations and checkpoints are waited for apart).",
    )
    tf32: bool = setting(
        True,
        "On CUDA: TensorFloat-32 matrix products and convolutions (10-bit mantissa inputs, float32 sums);"
        " --no-tf32 for full float32, which is StyleGAN2-ADA's default.",
    )

    # --- schedule (generator steps; 0 disables) ---------------------------------------
    log_every: int = setting(50, "Training scalars to metrics.jsonl.", panel=SCHEDULE)
    eval_every: int = setting(500, "Quality metrics.", panel=SCHEDULE)
    sample_every: int = setting(500, "Pictures.", panel=SCHEDULE)
    ckpt_every: int = setting(1000, "Checkpoints (one is always written at the end).", panel=SCHEDULE)
    keep_last: int = setting(
        0,
        "Keep only the newest N checkpoints, deleting older ones once a newer one is safely on disk; 0 keeps all.",
        panel=SCHEDULE,
    )
    eval_samples: int = setting(2500, "Generated samples per quality evaluation.", panel=SCHEDULE)
    eval_metrics: str = setting(
        "fid,pr",
        "Images: metrics at eval steps, comma-separated: fid, kid, is (Inception Score, with"
        " --eval-features inception), pr (precision/recall), dc (density/coverage), or none.",
        panel=SCHEDULE,
    )
    eval_features: str = setting(
        "random-conv",
        "Images: the feature space of those metrics: random-conv (no weights; not comparable to"
        " published FIDs) or inception (Inception-v3 of published FIDs, from --inception).",
        panel=SCHEDULE,
    )
    inception: str | None = setting(
        None,
        "Inception-v3 weights in torch-fidelity's layout (the published file: pt_inception-2015-12-05 with hash"
        " 6726825d).",
        panel=SCHEDULE,
    )
    vgg: str | None = setting(
        None,
        "VGG-16 weights in torchvision's layout (vgg16-397923af.pth, torch-fidelity's prc): precision/recall"
        " and density/coverage in the VGG-16 space they were published in.",
        panel=SCHEDULE,
    )
    tensorboard: bool = setting(
        False,
        "Also write TensorBoard events under RUN/tensorboard (pip install 'ganctl[tensorboard]').",
        panel=SCHEDULE,
    )
    on_nonfinite: str = setting(
        "stop",
        "stop | skip | rollback: on a NaN or Inf in a loss, penalty or gradient, stop naming it and the last"
        " good checkpoint (exit 1), drop that update and count it, or reload the last checkpoint with a fresh"
        " random stream (at most 3 times).",
        panel=SCHEDULE,
    )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    @property
    def augment_policies(self) -> tuple[str, ...]:
        """--augment read once, the one way: its policies in order (none: empty)."""
        return augment_policy(self.augment)


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
    "lr_decay": DECAY_SHAPES,
    "gamma_decay": DECAY_SHAPES,
    "beta2_decay": DECAY_SHAPES,
    "ema_decay_shape": DECAY_SHAPES,
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


def described(name: str) -> dict[str, Any]:
    """A field's description (`setting`): help, flags and panel."""
    return dict(next(f.metadata for f in fields(TrainConfig) if f.name == name))


def flags_of(name: str) -> tuple[str, ...]:
    """The flag names of a field as the command line declares them ("--lambda", "--gamma";
    "--hflip/--no-hflip"); () for a field that is recorded, not given."""
    flags = described(name)["flags"]
    if flags is not None:
        return flags
    flag = "--" + name.replace("_", "-")
    return (f"{flag}/--no-{flag[2:]}",) if field_type(name) is bool else (flag,)


def flag_of(name: str) -> str:
    """The command-line flag of a config field, as a message names it (--lambda/--gamma)."""
    return "/".join(f.split("/")[0] for f in flags_of(name)) or name


def config_keys() -> dict[str, str]:
    """The keys a --config file takes, each the name of a flag without its dashes (lambda,
    one-sided, eval-every), and the field it sets; the field names (penalty_weight) are
    accepted too."""
    keys = {}
    for name in field_names():
        keys[name] = name
        for flag in flags_of(name):
            keys[flag.split("/")[0][2:].replace("-", "_")] = name
    return keys


def from_dict(values: dict[str, Any], where: str = "config") -> TrainConfig:
    """Build a config from plain data (TOML file, checkpoint metadata), checking names and types."""
    known = set(field_names())
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return TrainConfig(**{k: _coerce(k, v, where) for k, v in values.items()})


# Keys a --config file may hold that are not settings: where the run goes (the --out of train
# and compare).
FILE_ONLY_KEYS = ("out",)


def load_toml(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """A TOML config file's settings, keyed by field (its keys are the flags' names, dashes or
    underscores alike: `lambda = 10`, `eval-every = 100`), and its other keys (`out`)."""
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
    keys, values, extra = config_keys(), {}, {}
    for key, value in raw.items():
        name = key.replace("-", "_")
        if name in FILE_ONLY_KEYS:
            extra[name] = value
            continue
        if name not in keys or not flags_of(keys[name]):
            known = sorted({k.replace("_", "-") for k, f in keys.items() if flags_of(f)} | set(FILE_ONLY_KEYS))
            raise ConfigError(f"--config {path}: unknown setting {key!r}; known: {', '.join(known)}")
        if keys[name] in values:
            raise ConfigError(f"--config {path}: {key!r} sets {flag_of(keys[name])} a second time")
        values[keys[name]] = value
    from_dict(values, where=f"--config {path}")  # validates types
    if "out" in extra and not isinstance(extra["out"], str):
        raise ConfigError(f"--config {path}: 'out' must be a folder name (a string), got {extra['out']!r}")
    return values, extra


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


MAX_THREADS = 4096
MAX_TIMEOUT_S = 365 * 24 * 3600.0


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
    if cfg.threads > MAX_THREADS:
        raise ConfigError(f"--threads {cfg.threads}: at most {MAX_THREADS} (more than any machine has cores)")
    if cfg.dist_timeout > MAX_TIMEOUT_S:
        raise ConfigError(f"--dist-timeout {cfg.dist_timeout:g}: at most {MAX_TIMEOUT_S:g} s (a year)")
    for name in ("beta1", "beta2"):
        value = getattr(cfg, name)
        if value is not None and not 0.0 <= value < 1.0:
            raise ConfigError(f"--{name} must be in [0, 1), got {value}")
    if cfg.beta2_final is not None and not 0.0 <= cfg.beta2_final < 1.0:
        raise ConfigError(f"--beta2-final must be in [0, 1), got {cfg.beta2_final}")
    for name in ("augment_p", "ada_target"):
        value = getattr(cfg, name)
        if value is not None and not 0.0 <= value <= 1.0:
            raise ConfigError(f"{flag_of(name)} must be in [0, 1], got {value}")
    _check_positive(cfg, ("lr_final", "gamma_final"), strict=False)
    _check_positive(cfg, ("ema_kimg", "ada_kimg"))
    _validate_augment(cfg)
    if cfg.holdout is not None:
        holdout_size(cfg.holdout, None)
    if cfg.ada_heuristic not in ADA_HEURISTICS:
        raise ConfigError(f"--ada-heuristic {cfg.ada_heuristic!r} is not one of: {', '.join(ADA_HEURISTICS)}")
    if cfg.ada_heuristic == "validation" and (cfg.ada_target is None or cfg.holdout is None):
        raise ConfigError(
            "--ada-heuristic validation reads the critic on held-out images: it needs --ada-target and --holdout"
            " N|FRACTION"
        )
    if not 0.0 <= cfg.ema_decay < 1.0:
        raise ConfigError(f"--ema-decay must be in [0, 1) (0 disables the EMA), got {cfg.ema_decay}")
    if "is" in metric_list(cfg.eval_metrics, "--eval-metrics") and cfg.eval_features != "inception":
        raise ConfigError(
            "--eval-metrics is: the Inception Score needs Inception-v3's classifier; add --eval-features inception"
            " (with --inception PATH)"
        )


def augment_policy(text: str | None, flag: str = "--augment") -> tuple[str, ...]:
    """'color,translation' -> ('color', 'translation'); 'none' -> (). An empty string, or an
    empty name between commas, is refused: it is a typo, not a policy."""
    if text is None:
        return ()
    parts = [part.strip() for part in text.split(",")]
    if not all(parts):
        raise ConfigError(
            f"{flag} {text!r}: {'is empty' if not text.strip() else 'has an empty name between commas'}; give"
            f" comma-separated policies of: {', '.join(AUGMENT_POLICIES)}, or none"
        )
    names = tuple(part for part in parts if part != "none")
    unknown = [n for n in names if n not in AUGMENT_POLICIES]
    if unknown or len(set(names)) != len(names):
        what = f"{unknown[0]!r} is not one of" if unknown else "names a policy twice; each is one of"
        raise ConfigError(f"{flag} {text!r}: {what}: {', '.join(AUGMENT_POLICIES)} (comma-separated), or none")
    return names


def _validate_augment(cfg: TrainConfig) -> None:
    policy = cfg.augment_policies
    if policy and data_kind(cfg.data) == "points":
        raise ConfigError(f"--augment {cfg.augment}: augmentation is for images; --data {cfg.data} is 2-D points")
    if not policy and (cfg.augment_p is not None or cfg.ada_target is not None):
        given = "--augment-p" if cfg.augment_p is not None else "--ada-target"
        raise ConfigError(f"{given} needs --augment POLICY ({', '.join(AUGMENT_POLICIES)})")


ADA_HEURISTICS = ("sign", "validation")


def holdout_size(text: str, n: int | None, flag: str = "--holdout") -> int | None:
    """--holdout N (a count of images) or FRACTION (0 < f < 1, of the n images, rounded) as a
    count; None before n is known. Refuses other text, and a count that leaves fewer than 2
    held-out or 2 training images of n."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    count = int(value) if value == value and value >= 1 and value == int(value) else None
    if count is None and not 0.0 < value < 1.0:
        raise ConfigError(f"{flag} {text!r}: give a number of images (2 or more) or a fraction between 0 and 1")
    if n is None:
        return None
    count = count if count is not None else int(round(value * n))
    if count < 2 or n - count < 2:
        raise ConfigError(
            f"{flag} {text}: holds out {count} of the data's {n} images; hold out at least 2 and leave at least 2 to"
            " train on"
        )
    return count


def metric_list(text: str, flag: str = "--metrics") -> tuple[str, ...]:
    """Comma-separated image metrics (fid, kid, is, pr, dc) as a tuple; "none" or "" is empty."""
    names = tuple(m.strip() for m in text.split(",") if m.strip() and m.strip() != "none")
    unknown = [m for m in names if m not in FIDELITY_METRICS]
    if unknown:
        raise ConfigError(f"{flag} {text!r}: {', '.join(unknown)} is not one of: {', '.join(FIDELITY_METRICS)}, none")
    return names
