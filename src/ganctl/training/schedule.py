"""Schedules over a run's generator steps, each from a start value to a final one over
`decay_steps` (fixed when the run starts, so resuming with a longer --steps does not change it),
then held:

    none     the start value throughout
    linear   start + (final - start) t / T (WGAN-GP's CIFAR code and SN-GAN decay the learning
             rate so, to 0)
    cosine   start + (final - start) (1 - cos(pi t / T)) / 2: R3GAN's `cosine_decay_with_warmup`
             without warm-up or hold (brownvc/R3GAN training/training_loop.py), which its presets
             apply to the learning rate, gamma, Adam's beta2, the EMA's half-life and the
             augmentation probability, over 20M images

What is scheduled: both learning rates (times `lr_factor`), the penalty weight (`gamma`), Adam's
beta2 and the generator EMA's half-life (`ema_beta`). Each is a function of the step alone, so
a resumed run takes up each schedule where it left it.
"""

from __future__ import annotations

import math

import torch

from ganctl.config import TrainConfig


def shaped(shape: str | None, start: float, final: float, step: int, horizon: int | None) -> float:
    """The value of a `shape` schedule from `start` to `final` at `step` of `horizon`."""
    if shape in (None, "none") or not horizon:
        return start
    t = min(step / horizon, 1.0)
    if shape == "linear":
        return start + (final - start) * t
    if shape == "cosine":
        return start + (final - start) * 0.5 * (1.0 - math.cos(math.pi * t))
    raise ValueError(f"unknown schedule shape {shape!r}")


def lr_factor(cfg: TrainConfig, step: int) -> float:
    """The learning-rate multiplier at generator step `step` (1 without decay)."""
    return max(0.0, shaped(cfg.lr_decay, 1.0, cfg.lr_final or 0.0, step, cfg.decay_steps))


def gamma(cfg: TrainConfig, step: int) -> float | None:
    """The penalty weight at `step` (None for a method without one)."""
    if cfg.penalty_weight is None:
        return None
    final = cfg.gamma_final if cfg.gamma_final is not None else cfg.penalty_weight
    return shaped(cfg.gamma_decay, cfg.penalty_weight, final, step, cfg.decay_steps)


def beta2(cfg: TrainConfig, step: int) -> float | None:
    if cfg.beta2 is None:
        return None
    final = cfg.beta2_final if cfg.beta2_final is not None else cfg.beta2
    return shaped(cfg.beta2_decay, cfg.beta2, final, step, cfg.decay_steps)


def ema_beta(cfg: TrainConfig, step: int, batch: int) -> float:
    """The EMA's decay at `step`: with --ema-kimg, StyleGAN2's 0.5 ** (batch / half-life) with the
    half-life (in images) at its scheduled value (rising from 0 under a schedule, as R3GAN's);
    else --ema-decay with ganctl's warm-up min(d, (1 + t) / (10 + t))."""
    if cfg.ema_kimg is None:
        return min(cfg.ema_decay, (1.0 + step) / (10.0 + step))
    start = 0.0 if cfg.ema_decay_shape not in (None, "none") else cfg.ema_kimg * 1000.0
    half_life = shaped(cfg.ema_decay_shape, start, cfg.ema_kimg * 1000.0, step, cfg.decay_steps)
    return 0.5 ** (batch / max(half_life, 1e-8))


@torch.no_grad()
def update_ema(ema: torch.nn.Module, generator: torch.nn.Module, decay: float) -> None:
    """ema <- decay ema + (1 - decay) generator, parameters; buffers copied."""
    for e, p in zip(ema.parameters(), generator.parameters()):
        e.lerp_(p, 1.0 - decay)
    for e, b in zip(ema.buffers(), generator.buffers()):
        e.copy_(b)


class LrSchedule:
    """Each optimizer's learning rate (its configured rate times `lr_factor`) and Adam's beta2 at
    each step."""

    def __init__(self, cfg: TrainConfig, optimizers: dict[torch.optim.Optimizer, float]):
        self.cfg, self.optimizers = cfg, optimizers  # optimizer -> its base learning rate

    def apply(self, step: int) -> None:
        cfg = self.cfg
        if cfg.lr_decay not in (None, "none"):
            factor = lr_factor(cfg, step)
            for opt, base in self.optimizers.items():
                for group in opt.param_groups:
                    group["lr"] = base * factor
        if cfg.beta2_decay not in (None, "none"):
            b2 = beta2(cfg, step)
            for opt in self.optimizers:
                for group in opt.param_groups:
                    group["betas"] = (group["betas"][0], b2)
