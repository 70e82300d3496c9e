"""Resolving a config: flags > --config file > the method's recipe for this data > the
`TrainConfig` default. `resolve` makes every filled value explicit, so a checkpoint never
depends on a default that may change later."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ganctl.config import (
    IMAGE_ARCH,
    IMAGE_DEPTH,
    IMAGE_DEPTHS,
    IMAGE_GEN_NORM,
    IMAGE_WIDTH,
    IMAGE_Z_DIM,
    POINTS_MODEL,
    ResolvedConfig,
    TrainConfig,
    data_kind,
    flag_of,
    validate,
)
from ganctl.errors import ConfigError
from ganctl.methods.registry import ADAM_BETAS, METHOD_SETTINGS, RECIPE_FIELDS, Method, get_method, owners


# --- resolving a config --------------------------------------------------------------------
def resolve(cfg: TrainConfig) -> ResolvedConfig:
    """Validate, then fill every ``None`` from the data and the method's recipe. Called once,
    where a run enters ganctl (`ganctl.train`, `ganctl.resume`, `ganctl.load`, a comparison's
    plan); everything after carries the `ResolvedConfig`."""
    validate(cfg)
    cfg = cfg.replace(data=data_path(cfg.data))
    if data_kind(cfg.data) == "points":
        cfg = _fill(cfg, **POINTS_MODEL)
    else:
        arch = cfg.arch or IMAGE_ARCH
        width = IMAGE_WIDTH.get(arch, IMAGE_WIDTH[IMAGE_ARCH])
        depth = IMAGE_DEPTHS.get(arch, IMAGE_DEPTH)
        cfg = _fill(cfg, arch=arch, width=width, depth=depth, z_dim=IMAGE_Z_DIM, gen_norm=IMAGE_GEN_NORM)
    cfg = _resolve_method(cfg, get_method(cfg.lipschitz))
    cfg = _resolve_conditioning(cfg)
    cfg = _resolve_decays(cfg)
    return ResolvedConfig(**cfg.to_dict())


FINALS = (("lr_decay", "lr_final"), ("gamma_decay", "gamma_final"), ("beta2_decay", "beta2_final"))


def _resolve_decays(cfg: TrainConfig) -> TrainConfig:
    """Every decay explicit, and checked against what it moves."""
    # A decay not set stays None (none): a run written before these settings existed has the same
    # config, so it resumes and compares as it is.
    if cfg.gamma_decay not in (None, "none"):
        if cfg.penalty_weight is None:
            raise ConfigError(f"--gamma-decay {cfg.gamma_decay}: --lipschitz {cfg.lipschitz} has no penalty weight")
        if cfg.gamma_final is None:
            raise ConfigError(f"--gamma-decay {cfg.gamma_decay} needs --gamma-final (the weight at --decay-steps)")
    if cfg.beta2_decay not in (None, "none"):
        if cfg.optimizer != "adam":
            raise ConfigError(f"--beta2-decay {cfg.beta2_decay}: beta2 is Adam's; --optimizer is {cfg.optimizer}")
        if cfg.beta2_final is None:
            raise ConfigError(f"--beta2-decay {cfg.beta2_decay} needs --beta2-final")
    if cfg.ema_decay_shape not in (None, "none") and cfg.ema_kimg is None:
        raise ConfigError(f"--ema-schedule {cfg.ema_decay_shape} schedules the half-life of --ema-kimg: give it")
    for decay, final in FINALS:
        if getattr(cfg, final) is not None and getattr(cfg, decay) in (None, "none"):
            raise ConfigError(
                f"{flag_of(final)} is where {flag_of(decay)} ends: give {flag_of(decay)} linear or cosine"
            )
    decays = (cfg.lr_decay, cfg.gamma_decay, cfg.beta2_decay, cfg.ema_decay_shape)
    if any(d not in (None, "none") for d in decays) and cfg.decay_steps is None:
        # Fixed once, so resuming with a longer --steps does not change the schedule behind it.
        cfg = cfg.replace(decay_steps=cfg.steps)
    return cfg


def data_path(data: str) -> str:
    """--data as a run stores it: a file or folder by its absolute path, so that the run folder
    works from any folder; a built-in set by its name."""
    from ganctl.data.stacked import PREFIX, base_path, is_stacked  # torch: not at the top, --help reads this module

    if is_stacked(data):
        return PREFIX + data_path(base_path(data))
    path = Path(data).expanduser()
    if not data.strip() or data_kind(data) == "points" or data == "shapes" or not path.exists():
        return data  # an empty name is no path: Path("") would be the folder ganctl was started in
    return str(path.resolve())


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
    recipe = method.recipe_for(cfg.data, cfg.arch, _side(cfg, method))
    changes: dict[str, Any] = {k: getattr(recipe, k) for k in RECIPE_FIELDS if getattr(cfg, k) is None}
    changes.update({k: v for k, v in recipe.schedules if getattr(cfg, k) is None})
    for decay, final in FINALS:  # a recipe's final value goes with its decay, not with --x-decay none
        if final in changes and changes.get(decay, getattr(cfg, decay)) in (None, "none"):
            del changes[final]
    if recipe.decay_images and cfg.decay_steps is None:  # the source's horizon, in images
        # --batch-size is per process: under torchrun (every rank resolves) a step takes the
        # batch of every process, and the horizon is that many fewer steps.
        batch = (cfg.batch_size or recipe.batch_size) * int(os.environ.get("WORLD_SIZE", "1"))
        changes["decay_steps"] = -(-recipe.decay_images // batch)
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


def _side(cfg: TrainConfig, method: Method) -> int | None:
    """The images' side where the method's recipe depends on it: --image-size, else the data's
    own from its file headers (a folder of 64 px images takes R3GAN's 64 px preset)."""
    if not method.by_size:
        return cfg.image_size
    from ganctl.data import image_side  # torch: not at the top, --help reads this module

    return image_side(cfg)


ACGAN_SCALES = (1.0, 0.1)  # WGAN-GP's gan_cifar_resnet.py: ACGAN_SCALE (critic), ACGAN_SCALE_G (generator)


def default_cond(cfg: TrainConfig) -> str:
    """The critic's conditioning when --cond is not given: a label embedding concatenated to the
    input for an MLP critic; else the method's own conditional recipe (`Method.cond`: SN-GAN's
    projection for sn, WGAN-GP's AC-GAN for the rest), and projection under the hinge loss,
    which SN-GAN's projection discriminator was trained with."""
    if cfg.arch == "mlp":
        return "concat"
    return "projection" if get_method(cfg.lipschitz).cond == "projection" or cfg.loss == "hinge" else "acgan"


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
