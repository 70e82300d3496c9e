"""Checkpoints: one .safetensors file, readable with plain `safetensors` and `json`.

Tensors: ``generator.*``, ``critic.*``, ``ema.*`` (module state dicts), ``optim_g.<param>.<key>``
and ``optim_d.<param>.<key>`` (optimizer state), ``state.step``, ``state.critic_steps``,
``rng.train`` (the training stream's generator state) and, under torchrun, ``rng.rank<r>``.
Metadata (all strings): ``format``, ``format_version``, ``ganctl_version``, ``config`` (the
resolved config as JSON), ``optim_g_groups`` / ``optim_d_groups`` (optimizer hyperparameters as
JSON), ``rng_device``, ``world_size`` and, with fp16, ``amp_scalers``. Nothing is unpickled.

This module knows the file format and the `TrainState` that goes in and comes out (a trainer's
state is taken and restored by `ganctl.training.state`); `load` rebuilds the networks alone,
for inference, without optimizers or gradient scalers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file
from torch import Tensor, nn

from ganctl import __version__
from ganctl.config import ResolvedConfig, TrainConfig, data_kind, from_dict
from ganctl.data import sample_shape
from ganctl.devices import resolve_device
from ganctl.errors import CheckpointError, ConfigError, GanctlError
from ganctl.fileio import write_atomic
from ganctl.methods.resolve import resolve
from ganctl.methods.strategies import build_strategy
from ganctl.models import build_models
from ganctl.nets.networks import Networks, build
from ganctl.runfolder import find_checkpoint, newest_readable

FORMAT = "ganctl.checkpoint"
FORMAT_VERSION = 1
_PREFIXES = ("generator.", "critic.", "ema.", "optim_g.", "optim_d.", "state.", "rng.")


@dataclass
class TrainState:
    """Everything a bitwise-exact resume needs, defined once: `ganctl.training.state.capture`
    takes it from a trainer, `save` writes it, `read_state` reads it back and
    `ganctl.training.state.restore` loads it into a trainer. Tensors as they are (`save`
    copies them to the CPU); the optimizer states in torch's `state_dict` layout."""

    config: TrainConfig
    generator: dict[str, Tensor]
    critic: dict[str, Tensor]
    ema: dict[str, Tensor] | None
    optim_g: dict[str, Any]
    optim_d: dict[str, Any]
    step: int
    critic_steps: int
    rng: Tensor  # the training stream's generator state (rank 0's)
    rng_device: str  # the device type that stream ran on
    class_names: list[str] | None = None  # a conditional run's classes, in label order
    scalers: dict[str, Any] | None = None  # fp16: both gradient scalers' states and the skipped count
    world_size: int = 1  # processes of the run that wrote it
    rank_rngs: dict[int, Tensor] = field(default_factory=dict)  # under torchrun: rank r's stream, r > 0
    ada: dict[str, float] | None = None  # --ada-target: the adaptive probability and its running heuristic


# --- writing ----------------------------------------------------------------------------
def _module_tensors(prefix: str, state: dict[str, Tensor]) -> dict[str, Tensor]:
    return {f"{prefix}.{k}": v.detach().cpu().contiguous().clone() for k, v in state.items()}


def _optimizer_tensors(prefix: str, state: dict[str, Any]) -> tuple[dict[str, Tensor], str]:
    tensors = {}
    for index, entries in state["state"].items():
        for key, value in entries.items():
            value = value if torch.is_tensor(value) else torch.tensor(value)
            tensors[f"{prefix}.{index}.{key}"] = value.detach().cpu().contiguous().clone()
    return tensors, json.dumps(state["param_groups"])


def save(state: TrainState, path: Path, rank_states: list[Tensor] | None = None) -> Path:
    """Write `state` to `path` atomically: a crash mid-write leaves any earlier file at `path`
    intact. `rank_states`: every rank's random stream in a multi-process run (from
    `distributed.gather_states`), stored as ``rng.rank<r>``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {**_module_tensors("generator", state.generator), **_module_tensors("critic", state.critic)}
    if state.ema is not None:
        tensors.update(_module_tensors("ema", state.ema))
    opt_g, groups_g = _optimizer_tensors("optim_g", state.optim_g)
    opt_d, groups_d = _optimizer_tensors("optim_d", state.optim_d)
    tensors.update(opt_g)
    tensors.update(opt_d)
    tensors["state.step"] = torch.tensor(state.step, dtype=torch.int64)
    tensors["state.critic_steps"] = torch.tensor(state.critic_steps, dtype=torch.int64)
    tensors["rng.train"] = state.rng.cpu()
    for rank, rank_state in enumerate(rank_states or []):
        if rank > 0:
            tensors[f"rng.rank{rank}"] = rank_state.cpu()
    metadata = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "ganctl_version": __version__,
        "config": state.config.to_json(),
        "optim_g_groups": groups_g,
        "optim_d_groups": groups_d,
        "rng_device": state.rng_device,
        "world_size": str(len(rank_states) if rank_states else 1),
    }
    if state.scalers is not None:  # fp16 gradient scalers: scale and growth tracker
        metadata["amp_scalers"] = json.dumps(state.scalers)
    if state.class_names is not None:  # a conditional run's classes, in label order
        metadata["class_names"] = json.dumps(state.class_names)
    if state.ada is not None:
        metadata["ada"] = json.dumps(state.ada)

    write_atomic(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))
    return path


# --- reading ----------------------------------------------------------------------------
def read(path: Path) -> tuple[dict[str, Tensor], dict[str, str], TrainConfig]:
    """Read and check a checkpoint's tensors, metadata and config (CPU tensors)."""

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as fh:
            metadata = fh.metadata() or {}
        tensors = load_file(str(path))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file") from None
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None
    return tensors, metadata, _config_of(path, metadata)


def _config_of(path: Path, metadata: dict[str, str]) -> TrainConfig:
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
        return from_dict(values, where=f"{path}: config")
    except KeyError:
        raise CheckpointError(f"{path}: metadata has no 'config'") from None
    except ValueError as exc:
        raise CheckpointError(f"{path}: metadata 'config' is not a JSON object ({exc})") from None
    except ConfigError as exc:
        raise CheckpointError(str(exc)) from None


def peek(path: Path) -> tuple[TrainConfig, int]:
    """A checkpoint's config and step, without reading its weights."""

    try:
        with safe_open(str(path), framework="pt") as fh:
            config = _config_of(Path(path), fh.metadata() or {})
            if "state.step" not in fh.keys():  # noqa: SIM118 (safe_open has no __contains__)
                raise CheckpointError(f"{path}: not a ganctl checkpoint (no 'state.step' tensor)")
            return config, int(fh.get_tensor("state.step"))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file") from None
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None


def peek_newest(path: str | Path) -> tuple[Path, TrainConfig, int]:
    """`peek` of a checkpoint file, or of a run folder's newest readable checkpoint."""
    found, (config, step), _ = newest_readable(path, peek)
    return found, config, step


def read_state(path: Path) -> TrainState:
    """A checkpoint file as the `TrainState` it was written from (with every rank's stream)."""
    tensors, metadata, config = read(path)
    stray = sorted(k for k in tensors if not k.startswith(_PREFIXES))
    if stray:
        raise CheckpointError(f"{path}: unexpected tensors {', '.join(stray[:5])}")
    optim = {
        name: _optimizer_state(path, name, tensors, metadata.get(f"{name}_groups")) for name in ("optim_g", "optim_d")
    }
    try:
        counters = {
            "step": int(tensors["state.step"]),
            "critic_steps": int(tensors["state.critic_steps"]),
            "rng": tensors["rng.train"],
            "world_size": int(metadata.get("world_size", "1")),
            "scalers": json.loads(metadata["amp_scalers"]) if "amp_scalers" in metadata else None,
            "ada": json.loads(metadata["ada"]) if "ada" in metadata else None,
        }
    except (KeyError, RuntimeError, ValueError) as exc:
        raise CheckpointError(f"{path}: missing or malformed counters ({exc})") from None
    rank_rngs = {
        int(k[len("rng.rank") :]): v
        for k, v in tensors.items()
        if k.startswith("rng.rank") and k[len("rng.rank") :].isdigit()
    }
    return TrainState(
        config,
        _take(tensors, "generator"),
        _take(tensors, "critic"),
        _take(tensors, "ema") or None,
        optim["optim_g"],
        optim["optim_d"],
        rng_device=metadata.get("rng_device", ""),
        class_names=_class_names(path, metadata, config),
        rank_rngs=rank_rngs,
        **counters,
    )


def _class_names(path: Path, metadata: dict[str, str], config: TrainConfig) -> list[str] | None:
    if "class_names" not in metadata:
        return None
    try:
        names = json.loads(metadata["class_names"])
    except ValueError as exc:
        raise CheckpointError(f"{path}: metadata 'class_names' is not JSON ({exc})") from None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names) or len(names) != config.num_classes:
        raise CheckpointError(f"{path}: metadata 'class_names' is not a list of {config.num_classes} names")
    return names


def _take(tensors: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    start = prefix + "."
    return {k[len(start) :]: v for k, v in tensors.items() if k.startswith(start)}


def _optimizer_state(path: Path, name: str, tensors: dict[str, Tensor], groups_json: str | None) -> dict[str, Any]:
    if groups_json is None:
        raise CheckpointError(f"{path}: metadata has no '{name}_groups'")
    try:
        groups = json.loads(groups_json)
        for group in groups:
            if "betas" in group:
                group["betas"] = tuple(group["betas"])
    except (ValueError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{path}: metadata '{name}_groups' is not valid ({exc})") from None
    state: dict[int, dict[str, Tensor]] = {}
    for key, value in _take(tensors, name).items():
        index, _, field = key.partition(".")
        if not index.isdigit() or not field:
            raise CheckpointError(f"{path}: unexpected optimizer tensor {name}.{key}")
        state.setdefault(int(index), {})[field] = value
    return {"state": state, "param_groups": groups}


def load_module(name: str, module: nn.Module, state: dict[str, Tensor]) -> None:
    """Load a state dict strictly, or raise `CheckpointError` naming what does not match."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if missing or extra:
        raise CheckpointError(
            f"{name} does not match its config (missing: {', '.join(missing) or '-'};"
            f" unexpected: {', '.join(extra) or '-'})"
        )
    for key, value in state.items():
        want = expected[key]
        if value.shape != want.shape or value.dtype != want.dtype:
            raise CheckpointError(
                f"{name}.{key} has shape {tuple(value.shape)} {value.dtype}, expected {tuple(want.shape)} {want.dtype}"
            )
    module.load_state_dict(state, strict=True)


def check_finite(state: TrainState) -> None:
    """Refuse weights that hold NaN or Inf: every sample, gradient norm and score of such a
    network would be NaN (ganctl never writes one: a non-finite step stops or is dropped)."""
    for prefix, tensors in (("generator", state.generator), ("critic", state.critic), ("ema", state.ema or {})):
        for key, value in tensors.items():
            if value.is_floating_point() and not bool(torch.isfinite(value).all()):
                raise CheckpointError(f"{prefix}.{key} holds NaN or infinite values: the networks cannot be used")


def load_networks(nets: Networks, state: TrainState) -> None:
    """The generator, critic and EMA weights of a checkpoint state into `nets` (finite ones)."""
    check_finite(state)
    load_module("generator", nets.generator, state.generator)
    load_module("critic", nets.critic, state.critic)
    if nets.ema is not None:
        load_module("ema", nets.ema, state.ema or {})
    elif state.ema:
        raise CheckpointError("has EMA tensors but its config has ema_decay 0")


def check_size(path: Path, cfg: ResolvedConfig, state: TrainState) -> None:
    """Refuse a config whose networks are larger than the weights the file holds, before
    building them: a hostile config (width 10^6) must not allocate what it claims. The
    networks are first built on the meta device, which allocates nothing."""

    if data_kind(cfg.data) != "points" and (cfg.image_size is None or cfg.channels is None):
        raise CheckpointError(
            f"{path}: its config is of images ({cfg.data}) but records no image size or channels, which every"
            " checkpoint ganctl writes does: the file was edited or damaged"
        )
    if cfg.arch == "mlp" and cfg.depth > len(state.generator):  # an MLP has a weight per layer: refuse at once
        raise CheckpointError(
            f"{path}: its config describes an MLP of depth {cfg.depth}, but the file holds {len(state.generator)}"
            " generator tensors"
        )
    try:
        with torch.device("meta"):
            generator, critic = build_models(cfg, sample_shape(cfg))
    except GanctlError as exc:
        raise CheckpointError(f"{path}: its config cannot be built ({exc})") from None
    except (TypeError, ValueError, RuntimeError, OverflowError) as exc:
        raise CheckpointError(f"{path}: its config describes networks that cannot be built ({exc})") from None
    implied = sum(p.numel() for m in (generator, critic) for p in m.parameters())
    held = sum(t.numel() for part in (state.generator, state.critic) for t in part.values())
    if implied > 4 * held + 1_000_000:  # small mismatches get the precise per-tensor message later
        raise CheckpointError(
            f"{path}: its config describes networks of {implied:,} parameters, but the file holds"
            f" only {held:,} values for them"
        )


# --- loading for inference ------------------------------------------------------------------
class Checkpoint(Networks):
    """What `ganctl.load` returns: the networks of a checkpoint in eval mode, with its path,
    config, step and metadata; no optimizer, no gradient scaler."""

    def __init__(
        self,
        path: Path,
        config: ResolvedConfig,
        device: torch.device,
        state: TrainState,
        generator: nn.Module,
        critic: nn.Module,
        ema: nn.Module | None,
    ):
        names = tuple(state.class_names) if state.class_names else None
        super().__init__(config, device, generator, critic, ema, step=state.step, class_names=names)
        self.path = path
        self.critic_steps = state.critic_steps
        if state.ada is not None and self.augment.ada is not None:
            self.augment.ada.load(state.ada)
        self.rng_device = state.rng_device

    @property
    def config(self) -> ResolvedConfig:
        return self.cfg


def load(path: str | Path, device: str | torch.device = "cpu") -> Checkpoint:
    """Load a checkpoint file (or a run folder's latest) onto `device` for inference: the
    modules are rebuilt from the stored config (spectral norm included) and every tensor is
    loaded strictly."""

    path = find_checkpoint(Path(path))
    state = read_state(path)
    try:
        cfg = resolve(state.config)  # explicit already; fills settings newer than the file, if any
    except GanctlError as exc:
        raise CheckpointError(f"{path}: its config cannot be built ({exc})") from None
    check_size(path, cfg, state)
    target = device if isinstance(device, torch.device) else resolve_device(device)
    try:
        generator, critic, ema = build(cfg, build_strategy(cfg))
    except GanctlError as exc:
        raise CheckpointError(f"{path}: its config cannot be built ({exc})") from None
    loaded = Checkpoint(path, cfg, target, state, generator, critic, ema)
    try:
        load_networks(loaded, state)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    for module in (generator, critic, ema):
        if module is not None:
            module.to(target).eval()
    return loaded
