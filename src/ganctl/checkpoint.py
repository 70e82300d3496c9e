"""Checkpoints: one .safetensors file, readable with plain `safetensors` and `json`.

Tensors: ``generator.*``, ``critic.*``, ``ema.*`` (module state dicts), ``optim_g.<param>.<key>``
and ``optim_d.<param>.<key>`` (optimizer state), ``state.step``, ``state.critic_steps`` and
``rng.train`` (the training stream's generator state). Metadata (all strings): ``format``,
``format_version``, ``ganctl_version``, ``config`` (the resolved config as JSON),
``optim_g_groups`` / ``optim_d_groups`` (optimizer hyperparameters as JSON) and ``rng_device``.
Nothing is ever unpickled.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ganctl import __version__
from ganctl.config import SCHEDULE_FIELDS, TrainConfig, from_dict
from ganctl.errors import CheckpointError, ConfigError, GanctlError
from ganctl.fileio import write_atomic

FORMAT = "ganctl.checkpoint"
FORMAT_VERSION = 1
SUFFIX = ".safetensors"
_NAME = re.compile(r"step-(\d+)\.safetensors$")


def checkpoint_path(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"step-{step:07d}{SUFFIX}"


def list_checkpoints(run_dir: Path) -> list[Path]:
    """A run's checkpoints in step order."""
    folder = Path(run_dir) / "checkpoints"
    found = [(int(m.group(1)), p) for p in folder.glob(f"step-*{SUFFIX}") if (m := _NAME.search(p.name))]
    return [p for _, p in sorted(found)]


def find_checkpoint(path: Path) -> Path:
    """A checkpoint file as given, or the latest checkpoint of a run directory."""
    path = Path(path)
    if path.is_dir():
        found = list_checkpoints(path)
        if not found:
            raise CheckpointError(f"{path}: a folder with no checkpoints (expected checkpoints/step-*.safetensors)")
        return found[-1]
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint file or run directory")
    return path


# --- writing ----------------------------------------------------------------------------


def _module_tensors(prefix: str, module: nn.Module) -> dict[str, Tensor]:
    return {f"{prefix}.{k}": v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items()}


def _optimizer_tensors(prefix: str, opt: torch.optim.Optimizer) -> tuple[dict[str, Tensor], str]:
    state = opt.state_dict()
    tensors = {}
    for index, entries in state["state"].items():
        for key, value in entries.items():
            value = value if torch.is_tensor(value) else torch.tensor(value)
            tensors[f"{prefix}.{index}.{key}"] = value.detach().cpu().contiguous().clone()
    return tensors, json.dumps(state["param_groups"])


def save(trainer: Any, path: Path, rank_states: list[Tensor] | None = None) -> Path:
    """Write the trainer's whole state to `path` atomically: a crash mid-write leaves any
    earlier file at `path` intact. `rank_states`: every rank's random stream in a
    multi-process run (from `distributed.gather_states`), stored as ``rng.rank<r>``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {**_module_tensors("generator", trainer.generator), **_module_tensors("critic", trainer.critic)}
    if trainer.ema is not None:
        tensors.update(_module_tensors("ema", trainer.ema))
    opt_g, groups_g = _optimizer_tensors("optim_g", trainer.opt_g)
    opt_d, groups_d = _optimizer_tensors("optim_d", trainer.opt_d)
    tensors.update(opt_g)
    tensors.update(opt_d)
    tensors["state.step"] = torch.tensor(trainer.step, dtype=torch.int64)
    tensors["state.critic_steps"] = torch.tensor(trainer.critic_steps, dtype=torch.int64)
    tensors["rng.train"] = trainer.rng.get_state().cpu()
    for rank, state in enumerate(rank_states or []):
        if rank > 0:
            tensors[f"rng.rank{rank}"] = state.cpu()
    metadata = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "ganctl_version": __version__,
        "config": trainer.cfg.to_json(),
        "optim_g_groups": groups_g,
        "optim_d_groups": groups_d,
        "rng_device": trainer.device.type,
        "world_size": str(len(rank_states) if rank_states else 1),
    }
    if trainer.scaler_d.is_enabled():  # fp16 gradient scalers: scale and growth tracker
        metadata["amp_scalers"] = json.dumps(
            {"d": trainer.scaler_d.state_dict(), "g": trainer.scaler_g.state_dict(), "skipped": trainer.amp_skipped}
        )
    from safetensors.torch import save_file

    write_atomic(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))
    return path


# --- reading ----------------------------------------------------------------------------


def read(path: Path) -> tuple[dict[str, Tensor], dict[str, str], TrainConfig]:
    """Read and check a checkpoint's tensors, metadata and config (CPU tensors)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as fh:
            metadata = fh.metadata() or {}
        tensors = load_file(str(path))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file") from None
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a ganctl checkpoint (metadata 'format' is {metadata.get('format')!r})")
    version = metadata.get("format_version", "")
    if not version.isdigit() or int(version) > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {version!r}; this ganctl ({__version__}) reads"
            f" versions up to {FORMAT_VERSION}: upgrade ganctl"
        )
    try:
        values = json.loads(metadata["config"])
        if not isinstance(values, dict):
            raise ValueError("not an object")
        config = from_dict(values, where=f"{path}: config")
    except KeyError:
        raise CheckpointError(f"{path}: metadata has no 'config'") from None
    except ValueError as exc:
        raise CheckpointError(f"{path}: metadata 'config' is not a JSON object ({exc})") from None
    except ConfigError as exc:
        raise CheckpointError(str(exc)) from None
    return tensors, metadata, config


def _take(tensors: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    start = prefix + "."
    return {k[len(start) :]: v for k, v in tensors.items() if k.startswith(start)}


def _load_module(path: Path, name: str, module: nn.Module, state: dict[str, Tensor]) -> None:
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if missing or extra:
        raise CheckpointError(
            f"{path}: {name} does not match its config (missing: {', '.join(missing) or '-'};"
            f" unexpected: {', '.join(extra) or '-'})"
        )
    for key, value in state.items():
        want = expected[key]
        if value.shape != want.shape or value.dtype != want.dtype:
            raise CheckpointError(
                f"{path}: {name}.{key} has shape {tuple(value.shape)} {value.dtype},"
                f" expected {tuple(want.shape)} {want.dtype}"
            )
    module.load_state_dict(state, strict=True)


# Optimizer settings that say how an update is computed, not what it computes.
OPTIMIZER_IMPLEMENTATION_FLAGS = ("fused", "foreach", "capturable", "differentiable")


def _load_optimizer(path: Path, name: str, opt: torch.optim.Optimizer, tensors: dict[str, Tensor], groups_json: str | None) -> None:
    if groups_json is None:
        raise CheckpointError(f"{path}: metadata has no '{name}_groups'")
    try:
        groups = json.loads(groups_json)
        for group, current in zip(groups, opt.param_groups):
            if "betas" in group:
                group["betas"] = tuple(group["betas"])
            # How the update is computed (fused, foreach) belongs to this machine, not to the file.
            group.update((key, current[key]) for key in OPTIMIZER_IMPLEMENTATION_FLAGS if key in current)
    except (ValueError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{path}: metadata '{name}_groups' is not valid ({exc})") from None
    state: dict[int, dict[str, Tensor]] = {}
    for key, value in _take(tensors, name).items():
        index, _, field = key.partition(".")
        if not index.isdigit() or not field:
            raise CheckpointError(f"{path}: unexpected optimizer tensor {name}.{key}")
        state.setdefault(int(index), {})[field] = value
    try:
        opt.load_state_dict({"state": state, "param_groups": groups})
    except (ValueError, KeyError, TypeError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: {name} state does not fit its model ({exc})") from None


def restore(trainer: Any, path: Path, tensors: dict[str, Tensor], metadata: dict[str, str]) -> None:
    """Load a checkpoint's full state into a trainer built from the same config."""
    known = ("generator.", "critic.", "ema.", "optim_g.", "optim_d.", "state.", "rng.")
    stray = sorted(k for k in tensors if not k.startswith(known))
    if stray:
        raise CheckpointError(f"{path}: unexpected tensors {', '.join(stray[:5])}")
    _load_module(path, "generator", trainer.generator, _take(tensors, "generator"))
    _load_module(path, "critic", trainer.critic, _take(tensors, "critic"))
    ema_state = _take(tensors, "ema")
    if trainer.ema is not None:
        _load_module(path, "ema", trainer.ema, ema_state)
    elif ema_state:
        raise CheckpointError(f"{path}: has EMA tensors but its config has ema_decay 0")
    _load_optimizer(path, "optim_g", trainer.opt_g, tensors, metadata.get("optim_g_groups"))
    _load_optimizer(path, "optim_d", trainer.opt_d, tensors, metadata.get("optim_d_groups"))
    try:
        trainer.step = int(tensors["state.step"])
        trainer.critic_steps = int(tensors["state.critic_steps"])
        rng_state = tensors["rng.train"]
    except (KeyError, RuntimeError, ValueError) as exc:
        raise CheckpointError(f"{path}: missing or malformed counters ({exc})") from None
    if trainer.scaler_d.is_enabled() and "amp_scalers" in metadata:
        try:
            scalers = json.loads(metadata["amp_scalers"])
            trainer.scaler_d.load_state_dict(scalers["d"])
            trainer.scaler_g.load_state_dict(scalers["g"])
            trainer.amp_skipped = int(scalers["skipped"])
        except (ValueError, KeyError, TypeError, RuntimeError) as exc:
            raise CheckpointError(f"{path}: metadata 'amp_scalers' is malformed ({exc})") from None
    trainer.exact_resume = metadata.get("rng_device") == trainer.device.type
    rank = trainer.world.rank
    if rank > 0:  # a torchrun rank: its own stream when the checkpoint has it
        own = tensors.get(f"rng.rank{rank}")
        if own is not None and metadata.get("world_size") == str(trainer.world.size):
            rng_state = own
        else:
            trainer.exact_resume = False
    if trainer.exact_resume:
        try:
            trainer.rng.set_state(rng_state)
        except RuntimeError as exc:
            raise CheckpointError(f"{path}: rng.train is not a valid generator state ({exc})") from None
    else:
        # Another device type's generator state does not transfer; continue on a stream that
        # is still a function of (seed, step) alone.
        from ganctl.distributed import rank_seed

        trainer.rng.manual_seed(rank_seed(trainer.cfg.seed + 7919 * trainer.step, rank))


def _check_size(path: Path, config: TrainConfig, tensors: dict[str, Tensor]) -> None:
    """Refuse a config whose networks are larger than the weights the file holds, before
    building them: a hostile config (width 10^6) must not allocate what it claims. The
    networks are first built on the meta device, which allocates nothing."""
    from ganctl.config import resolve
    from ganctl.data import sample_shape
    from ganctl.models import build_models

    try:
        cfg = resolve(config)
        if cfg.image_size is None and cfg.channels is None and not _is_points(cfg):
            return  # an image config always records its size; Trainer reports the problem
        with torch.device("meta"):
            generator, critic = build_models(cfg, sample_shape(cfg))
    except GanctlError as exc:
        raise CheckpointError(f"{path}: its config cannot be built ({exc})") from None
    except (TypeError, ValueError, RuntimeError, OverflowError) as exc:
        raise CheckpointError(f"{path}: its config describes networks that cannot be built ({exc})") from None
    implied = sum(p.numel() for m in (generator, critic) for p in m.parameters())
    held = sum(t.numel() for k, t in tensors.items() if k.startswith(("generator.", "critic.")))
    if implied > 4 * held + 1_000_000:  # small mismatches get the precise per-tensor message later
        raise CheckpointError(f"{path}: its config describes networks of {implied:,} parameters, but the file holds"
                              f" only {held:,} values for them")


def _is_points(cfg: TrainConfig) -> bool:
    from ganctl.data import data_kind

    return data_kind(cfg.data) == "points"


def open_trainer(path: Path, device: str | None = None, overrides: dict[str, Any] | None = None) -> Any:
    """Rebuild a trainer from a checkpoint (modules from its config, spectral norm included),
    then load every tensor strictly. `overrides` may change schedule settings only."""
    from ganctl.engine import Trainer

    path = find_checkpoint(path)
    tensors, metadata, config = read(path)
    overrides = dict(overrides or {})
    if device is not None:
        overrides["device"] = device
    changed = {k: v for k, v in overrides.items() if getattr(config, k) != v}
    fixed = sorted(k for k in changed if k not in SCHEDULE_FIELDS)
    if fixed:
        detail = ", ".join(f"--{k.replace('_', '-')} (checkpoint has {getattr(config, k)!r})" for k in fixed)
        raise ConfigError(f"cannot change {detail} when resuming {path}; only {', '.join(sorted(SCHEDULE_FIELDS))} may change")
    _check_size(path, config, tensors)
    try:
        trainer = Trainer(config.replace(**changed), load_data=False)
    except GanctlError as exc:
        raise CheckpointError(f"{path}: its config cannot be built ({exc})") from None
    restore(trainer, path, tensors, metadata)
    trainer.checkpoint_path = path
    trainer.checkpoint_metadata = metadata
    return trainer


@dataclass
class Checkpoint:
    """What `ganctl.load` returns: the rebuilt modules, in eval mode, and their config."""

    path: Path
    config: TrainConfig
    step: int
    generator: nn.Module
    critic: nn.Module
    ema: nn.Module | None
    metadata: dict[str, str]
    trainer: Any

    @property
    def sampler(self) -> nn.Module:
        """The EMA generator when the run kept one, else the raw generator."""
        return self.ema if self.ema is not None else self.generator


def load(path: str | Path, device: str = "cpu") -> Checkpoint:
    """Load a checkpoint file (or a run directory's latest) onto `device`."""
    trainer = open_trainer(Path(path), device=device)
    for module in (trainer.generator, trainer.critic, trainer.ema):
        if module is not None:
            module.eval()
    return Checkpoint(
        trainer.checkpoint_path, trainer.cfg, trainer.step, trainer.generator, trainer.critic,
        trainer.ema, trainer.checkpoint_metadata, trainer,
    )


def roll_back(trainer: Any, path: Path, attempt: int) -> None:
    """Reload `path` into a running trainer (weights, optimizers, counters), then continue on a
    fresh random stream, so the same batches do not lead to the same non-finite value again."""
    from ganctl.distributed import rank_seed

    tensors, metadata, _ = read(path)
    restore(trainer, path, tensors, metadata)
    trainer.rng.manual_seed(rank_seed(trainer.cfg.seed + 7919 * trainer.step + 1_000_003 * attempt, trainer.world.rank))
    trainer.exact_resume = False
