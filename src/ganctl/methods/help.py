"""The defaults of every setting in words, as `resolve` applies them: what `ganctl train --help`
shows beside each flag (no torch: the help stays fast)."""

from __future__ import annotations

from typing import Any

from ganctl.config import (
    IMAGE_ARCH,
    IMAGE_DEPTH,
    IMAGE_DEPTHS,
    IMAGE_GEN_NORM,
    IMAGE_WIDTH,
    IMAGE_Z_DIM,
    POINTS_MODEL,
    SHAPES_IMAGE_SIZE,
    default,
)
from ganctl.methods.registry import ADAM_BETAS, METHODS, RECIPE_FIELDS, Method, Recipe
from ganctl.methods.resolve import ACGAN_SCALES


# --- what --help shows -----------------------------------------------------------------
def _scheduled(name: str) -> str:
    """'; r3gan 0.005 (64 px: 0.2)' for a decay setting some recipe fills."""
    parts = []
    for m in METHODS.values():
        values = {size: dict(r.schedules).get(name) for size, r in {0: m.recipe, **m.by_size}.items()}
        if values[0] is None:
            continue
        other = [f"{size} px: {_text(v)}" for size, v in values.items() if size and v != values[0]]
        parts.append(f"{m.name} {_text(values[0])}" + (f" ({', '.join(other)})" if other else ""))
    return f"; {', '.join(parts)}" if parts else ""


def describe_default(name: str) -> str:
    """The default of a setting in words, read from what `resolve` applies: a plain value, or
    per method and kind of data where the recipe decides ("gp 10 (2-D data: 0.1), ...")."""
    special = {
        "arch": f"{POINTS_MODEL['arch']} on 2-D data, {IMAGE_ARCH} on images",
        "width": (
            f"{POINTS_MODEL['width']} for the 2-D MLP; on images "
            + ", ".join(f"{arch} {w}" for arch, w in IMAGE_WIDTH.items())
        ),
        "depth": f"{POINTS_MODEL['depth']} on 2-D data, {IMAGE_DEPTH} for an image MLP"
        + "".join(f", {arch} {d}" for arch, d in IMAGE_DEPTHS.items()),
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
            f"{m.name} {'one' if m.fixed['one_sided'] else 'two'}-sided"
            for m in METHODS.values()
            if "one_sided" in m.fixed
        ),
        "penalty_at": ", ".join(
            f"{m.name} {m.penalty_at[0]}" + (f" (or {', '.join(m.penalty_at[1:])})" if len(m.penalty_at) > 1 else "")
            for m in METHODS.values()
            if m.penalty_at
        ),
    }
    special.update(
        augment_p="1 (DiffAugment's); with --ada-target, 0",
        ada_target="none: a fixed probability",
        lr_final="0 under a decay" + _scheduled("lr_final"),
        gamma_final="none" + _scheduled("gamma_final"),
        beta2_final="none" + _scheduled("beta2_final"),
        ema_kimg="none: --ema-decay" + _scheduled("ema_kimg"),
        gamma_decay="none" + _scheduled("gamma_decay"),
        beta2_decay="none" + _scheduled("beta2_decay"),
        ema_decay_shape="none" + _scheduled("ema_decay_shape"),
    )
    if name in special:
        return special[name]
    if name == "batch_size":
        return _batch_sizes()
    if name in RECIPE_FIELDS:
        return _by_method(name)
    if name in ("beta1", "beta2"):
        i = ("beta1", "beta2").index(name)
        return f"{_by_method(name)}; {_text(ADAM_BETAS[i])} for an RMSprop recipe run with --optimizer adam"
    fixed = [m for m in METHODS.values() if name in m.fixed]
    if fixed:
        return ", ".join(f"{m.name} {_text(m.fixed[name])}" + _points_note(m, name, m.fixed[name]) for m in fixed)
    return _text(default(name))


def _batch_sizes() -> str:
    """The recipes' batch sizes in a few words: the common image one with its exceptions, and
    the 2-D one."""
    image = [m.recipe.batch_size for m in METHODS.values()]
    common = max(set(image), key=image.count)
    odd = ", ".join(f"{m.name}: {m.recipe.batch_size}" for m in METHODS.values() if m.recipe.batch_size != common)
    points = sorted({(m.points or m.recipe).batch_size for m in METHODS.values()})
    return f"{common} on images" + (f" ({odd})" if odd else "") + f", {'/'.join(map(str, points))} on 2-D data"


def _points_note(method: Method, name: str, value: Any) -> str:
    override = getattr(method.points, name, None) if method.points is not None else None
    return f" (2-D data: {_text(override)})" if override is not None and override != value else ""


def _by_method(name: str) -> str:
    parts = []
    for m in METHODS.values():
        if name == "penalty_weight" and not m.penalty_at:
            continue
        value = _recipe_value(m.recipe, name)
        if value is None:
            continue
        notes = [
            f"{where}: {_text(_recipe_value(other, name))}"
            for where, other in ([("2-D data", m.points)] if m.points else [])
            + [(f"--arch {arch} on images", recipe) for arch, recipe in m.by_arch.items()]
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
