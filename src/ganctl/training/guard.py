"""The numerical guard of a training step: mixed precision (autocast, fp16 gradient scalers,
TensorFloat-32 on CUDA) and the check that losses, penalties and gradients are finite.

`--amp bf16` runs forwards under autocast in bfloat16 and needs no scaler. `--amp fp16` adds a
gradient scaler per optimizer; the engine takes a penalty's input gradients of the scaled output
and unscales them (PyTorch's AMP recipe for gradient penalties), and a step whose fp16 gradients
overflowed is the scaler's to skip (counted as `amp_skipped`). A NaN or Inf anywhere else raises
`NonFinite` naming it, or with --on-nonfinite skip drops that update (`nonfinite_skipped`).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn

from ganctl.config import ResolvedConfig
from ganctl.errors import CheckpointError, NonFinite
from ganctl.training import adam, distributed

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class Guard:
    """Autocast, the gradient scalers and the finiteness check of one trainer."""

    def __init__(self, cfg: ResolvedConfig, device: torch.device, world: distributed.World):
        self.cfg, self.device, self.world = cfg, device, world
        self.amp_dtype = AMP_DTYPES.get(cfg.amp)
        # enabled=False without fp16: then every scaler call is a no-op.
        self.scaler_d = torch.amp.GradScaler(device.type, enabled=cfg.amp == "fp16")
        self.scaler_g = torch.amp.GradScaler(device.type, enabled=cfg.amp == "fp16")
        self.amp_skipped = 0  # fp16 steps the gradient scaler skipped after an overflow
        self.nonfinite_skipped = 0  # updates dropped by --on-nonfinite skip

    @property
    def scaled(self) -> bool:
        return self.scaler_d.is_enabled()

    def autocast(self) -> contextlib.AbstractContextManager:
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None)

    @contextlib.contextmanager
    def precision(self) -> Iterator[None]:
        """On CUDA, TensorFloat-32 products as --tf32 asks, for this trainer's steps only: the
        process-wide flags are restored afterwards."""
        if self.device.type != "cuda":
            yield
            return
        saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = self.cfg.tf32
        try:
            yield
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved

    def finite(self, step: int, net: str, params: tuple[nn.Parameter, ...], **values: Tensor | None) -> bool:
        """Whether this step's losses, penalty and gradients are all finite. With fp16 the
        gradient scaler owns overflowing gradients, and so the penalty, which is formed from
        them, so only the losses are checked. A non-finite value raises `NonFinite` naming it
        (at generator step `step` + 1), or with --on-nonfinite skip returns False so the caller
        drops the update."""
        checked = {
            f"{net} {name}": v
            for name, v in values.items()
            if v is not None and not (self.scaled and name == "penalty")
        }
        grads = [] if self.scaled else [p.grad for p in params if p.grad is not None]
        # The scalars' absolute values and one norm per gradient tensor, in one foreach call and
        # stacked (float32 parameters, so float32 norms): one device sync per step, and the float64
        # sum is finite exactly when every part is.
        scalars = [v.detach().float().reshape(()) for v in checked.values()]
        parts = torch.stack(torch._foreach_norm(scalars + grads))
        if distributed.all_ok(math.isfinite(float(parts.double().sum())), self.world):  # ranks agree
            return True
        finite = [math.isfinite(v) for v in parts.tolist()]
        bad = next((name for name, ok in zip(checked, finite) if not ok), None)
        if bad is None:
            bad = f"{net} gradient" if not all(finite) else f"{net} on another rank"
        if self.cfg.on_nonfinite == "skip":
            self.nonfinite_skipped += 1
            return False
        raise NonFinite(step + 1, bad)

    def step(self, scaler: torch.amp.GradScaler, opt: torch.optim.Optimizer) -> bool:
        """Step through the scaler; False when fp16 gradients overflowed and the step was
        skipped (counted as `amp_skipped`)."""
        if not scaler.is_enabled():
            adam.step(opt)
            return True
        before = scaler.get_scale()
        scaler.step(opt)
        scaler.update()
        if scaler.get_scale() < before:
            self.amp_skipped += 1
            return False
        return True

    def stats(self) -> dict[str, float]:
        """The guard's counters for the training log."""
        stats: dict[str, float] = {}
        if self.cfg.on_nonfinite == "skip":
            stats["nonfinite_skipped"] = self.nonfinite_skipped
        if self.scaled:
            stats["amp_skipped"] = self.amp_skipped
            stats["amp_scale"] = self.scaler_d.get_scale()
        return stats

    def state(self) -> dict[str, Any] | None:
        """The scalers' state for a checkpoint (None without fp16)."""
        if not self.scaled:
            return None
        return {"d": self.scaler_d.state_dict(), "g": self.scaler_g.state_dict(), "skipped": self.amp_skipped}

    def load(self, scalers: dict[str, Any] | None) -> None:
        if not self.scaled or scalers is None:
            return
        try:
            self.scaler_d.load_state_dict(scalers["d"])
            self.scaler_g.load_state_dict(scalers["g"])
            self.amp_skipped = int(scalers["skipped"])
        except (ValueError, KeyError, TypeError, RuntimeError) as exc:
            raise CheckpointError(f"metadata 'amp_scalers' is malformed ({exc})") from None
