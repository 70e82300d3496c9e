"""A trainer's state in and out: `capture` takes the `TrainState` a checkpoint stores,
`restore` loads one back strictly, `roll_back` reloads an earlier one on a fresh stream, and
`resume` rebuilds a trainer from a checkpoint file or a run folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ganctl import streams
from ganctl.config import SCHEDULE_FIELDS, flag_of
from ganctl.data import load_dataset
from ganctl.errors import CheckpointError, ConfigError, GanctlError
from ganctl.methods.resolve import data_path, resolve
from ganctl.nets import checkpoint
from ganctl.nets.checkpoint import TrainState
from ganctl.runfolder import newest_readable
from ganctl.training import distributed
from ganctl.training.engine import Trainer

# Optimizer settings that say how an update is computed, not what it computes: they belong to
# the machine that runs it, not to a checkpoint.
OPTIMIZER_IMPLEMENTATION_FLAGS = ("fused", "foreach", "capturable", "differentiable")


def capture(trainer: Trainer) -> TrainState:
    """Everything a bitwise-exact resume needs: config, weights, optimizer and scaler states,
    counters and the random stream (tensors as they are; the checkpoint copies them to the CPU)."""
    nets = trainer.nets
    return TrainState(
        config=nets.cfg,
        generator=nets.generator.state_dict(),
        critic=nets.critic.state_dict(),
        ema=nets.ema.state_dict() if nets.ema is not None else None,
        optim_g=trainer.opt_g.state_dict(),
        optim_d=trainer.opt_d.state_dict(),
        step=nets.step,
        critic_steps=trainer.critic_steps,
        rng=trainer.rng.get_state(),
        rng_device=nets.device.type,
        class_names=list(nets.class_names) if nets.class_names is not None else None,
        scalers=trainer.guard.state(),
        ada=trainer.ada.state() if trainer.ada is not None else None,
    )


def restore(trainer: Trainer, state: TrainState) -> None:
    """Load a state strictly; raises `CheckpointError` naming what does not fit. A random stream
    saved on another device type cannot be restored: the run then continues on a stream derived
    from (seed, step, rank) and `exact_resume` is False."""
    nets = trainer.nets
    checkpoint.load_networks(nets, state)
    if state.class_names:
        nets.class_names = tuple(state.class_names)
    _load_optimizer("optim_g", trainer.opt_g, state.optim_g)
    _load_optimizer("optim_d", trainer.opt_d, state.optim_d)
    nets.step, trainer.critic_steps = int(state.step), int(state.critic_steps)
    trainer.guard.load(state.scalers)
    if trainer.ada is not None:
        if state.ada is None:
            raise CheckpointError(
                "the run adapts its augmentation (--ada-target) but the checkpoint holds no 'ada' state"
            )
        trainer.ada.load(state.ada)
    rank, rng_state = trainer.world.rank, state.rng
    exact = state.rng_device == nets.device.type
    if rank > 0:  # a torchrun rank: its own stream when the checkpoint has it
        own = state.rank_rngs.get(rank)
        if own is not None and state.world_size == trainer.world.size:
            rng_state = own
        else:
            exact = False
    trainer.exact_resume = exact
    if exact:
        try:
            trainer.rng.set_state(rng_state)
        except (RuntimeError, TypeError) as exc:
            raise CheckpointError(f"rng.train is not a valid generator state ({exc})") from None
    else:
        trainer.rng.manual_seed(streams.resume_seed(nets.cfg.seed, nets.step, rank))


def _load_optimizer(name: str, opt: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    try:
        groups = [dict(g) for g in state["param_groups"]]
        for group, current in zip(groups, opt.param_groups):
            # How the update is computed (fused, foreach) belongs to this machine, not to the file.
            group.update((key, current[key]) for key in OPTIMIZER_IMPLEMENTATION_FLAGS if key in current)
        # Copies: torch's load keeps the given tensors, which an in-memory state shares with its source.
        entries = {
            i: {k: v.clone() if torch.is_tensor(v) else v for k, v in e.items()} for i, e in state["state"].items()
        }
        opt.load_state_dict({"state": entries, "param_groups": groups})
        _match_layouts(opt)
    except (ValueError, KeyError, TypeError, RuntimeError, AttributeError) as exc:
        raise CheckpointError(f"{name} state does not fit its model ({exc})") from None


def _match_layouts(opt: torch.optim.Optimizer) -> None:
    """Each moment in its parameter's memory layout, as the optimizer made it (zeros_like the
    parameter). A checkpoint holds them contiguous, and torch's load_state_dict keeps them so;
    a channels-last convolution's weight then met contiguous moments, and the fused Adam update
    (torch's own step too) paired them by memory position: a resumed 32 px DCGAN's weights were
    5e-4 off the uninterrupted run's after two steps, not a rounding difference."""
    for group in opt.param_groups:
        for p in group["params"]:
            entry = opt.state.get(p, {})
            for key, value in entry.items():
                if torch.is_tensor(value) and value.shape == p.shape and value.stride() != p.stride():
                    entry[key] = torch.empty_like(p, dtype=value.dtype).copy_(value)


def roll_back(trainer: Trainer, state: TrainState, attempt: int) -> None:
    """Reload an earlier state (weights, optimizers, counters), then continue on a fresh random
    stream, so the same batches do not lead to the same non-finite value again."""
    restore(trainer, state)
    cfg = trainer.nets.cfg
    trainer.rng.manual_seed(streams.rollback_seed(cfg.seed, trainer.nets.step, trainer.world.rank, attempt))
    trainer.exact_resume = False


def same_data(config: Any, data: str) -> bool:
    """Whether --data names the data a checkpoint was trained on: the same path, or other files
    with the same fingerprint (the decoded pixels, or the built-in set)."""

    if data_path(data) == data_path(config.data):
        return True
    try:
        return load_dataset(config.replace(data=data)).fingerprint() == load_dataset(config).fingerprint()
    except GanctlError:
        return False


def resume(
    path: str | Path,
    overrides: dict[str, Any] | None = None,
    device: str | None = None,
    world: distributed.World | None = None,
) -> Trainer:
    """A trainer rebuilt from a checkpoint file (or a run folder's latest), ready to continue.
    `overrides` may change schedule settings only (`ganctl.config.SCHEDULE_FIELDS`).

    A run folder whose newest checkpoint cannot be read resumes from the newest one that can,
    and the trainer's `notes` name what was skipped; a checkpoint file given by name is read
    strictly."""
    path, state, skipped = newest_readable(path, checkpoint.read_state)
    config, overrides = state.config, dict(overrides or {})
    if device is not None:
        overrides["device"] = device
    changed = {k: v for k, v in overrides.items() if getattr(config, k) != v}
    same = "data" in changed and same_data(config, changed["data"])
    if same:  # the same data by another path (a moved folder, a copy): the run goes on with it
        changed["data"] = data_path(changed["data"])
    fixed = sorted(k for k in changed if k not in SCHEDULE_FIELDS and not (k == "data" and same))
    if fixed:
        detail = ", ".join(f"{flag_of(k)} (checkpoint has {getattr(config, k)!r})" for k in fixed)
        raise ConfigError(
            f"cannot change {detail} when resuming {path}; only {', '.join(sorted(SCHEDULE_FIELDS))} may change"
            " (and --data may name the same data by another path)"
        )
    try:
        cfg = resolve(config.replace(**changed))
        checkpoint.check_size(path, cfg, state)
        trainer = Trainer(cfg, load_data=False, world=world)
    except CheckpointError:
        raise
    except GanctlError as exc:
        raise CheckpointError(f"{path}: its config cannot be built ({exc})") from None
    try:
        restore(trainer, state)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    trainer.notes += skipped_notes(skipped, path)
    return trainer


def skipped_notes(skipped: list[str], path: str | Path) -> list[str]:
    """What a resume says of the newer checkpoints it stepped over, and where it resumed."""
    return [f"skipped an unreadable checkpoint, {reason}; resuming from {path}" for reason in skipped]
