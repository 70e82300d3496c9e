"""Schedules over a run's generator steps. `--lr-decay linear` scales both learning rates by
1 - step / decay_steps down to 0 (WGAN-GP's CIFAR-10 code); the horizon is fixed when the run
starts (`decay_steps`), so resuming with a longer --steps does not change it."""

from __future__ import annotations

import torch

from ganctl.config import TrainConfig


def lr_factor(cfg: TrainConfig, step: int) -> float:
    """The learning-rate multiplier at generator step `step` (1 without decay)."""
    if cfg.lr_decay == "linear":
        return max(0.0, 1.0 - step / cfg.decay_steps)
    return 1.0


class LrSchedule:
    """Each optimizer's learning rate at each step: its configured rate times `lr_factor`."""

    def __init__(self, cfg: TrainConfig, optimizers: dict[torch.optim.Optimizer, float]):
        self.cfg, self.optimizers = cfg, optimizers  # optimizer -> its base learning rate

    def apply(self, step: int) -> None:
        if self.cfg.lr_decay == "none":
            return
        factor = lr_factor(self.cfg, step)
        for opt, base in self.optimizers.items():
            for group in opt.param_groups:
                group["lr"] = base * factor
