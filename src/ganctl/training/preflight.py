"""A run's sizes checked before anything is allocated: the networks are built on the meta
device (which allocates nothing) to count their parameters and one sample's activations, and
the run is refused in one line naming the flag when its tensors cannot fit on its device."""

from __future__ import annotations

import math

import torch
from torch import nn

from ganctl import memory
from ganctl.config import ResolvedConfig
from ganctl.data import sample_shape
from ganctl.models import build_models

# A training step holds, per sample of the batch: the generator's activations (forward and
# backward) and the critic's over real, fake and interpolated points, whose penalty keeps a
# second graph for its double backward.
GENERATOR_PASSES = 2
CRITIC_PASSES = 3 * 2
# Per parameter: the weight, its gradient and Adam's two moments (and the EMA's copy of G).
PER_PARAMETER = 4
MODULE_BYTES = 2000  # a layer's Python objects, even on the meta device (measured: 2.0 kB a module)


def check(cfg: ResolvedConfig, device: torch.device) -> None:
    """Refuse --width/--depth, --batch-size or --eval-samples when what they make does not fit
    on `device`, in that order, before the networks are built there."""
    shape = sample_shape(cfg)
    if cfg.arch == "mlp":  # its layers are counted before any is built: --depth 10**12 is refused at once
        modules = 3 * (2 * cfg.depth + 2)  # Linear, activation, norm per layer, in both networks
        memory.require(modules * MODULE_BYTES, f"--depth {cfg.depth}: {modules:,} layers", str(device))
    with torch.device("meta"):
        generator, critic = build_models(cfg, shape)
    params_g = sum(p.numel() for p in generator.parameters())
    params = params_g + sum(p.numel() for p in critic.parameters())
    weights = memory.FLOAT * (PER_PARAMETER * params + (params_g if cfg.ema_decay > 0 else 0))
    where = str(device)
    size = f"--width {cfg.width}" + (f" --depth {cfg.depth}" if cfg.arch == "mlp" else "")
    memory.require(weights, f"{size}: networks of {params:,} parameters, with gradients and Adam's moments", where)
    acts_g, acts_d = _activations(generator, cfg.z_dim, cfg.num_classes), _activations(critic, shape, cfg.num_classes)
    batch = cfg.batch_size * memory.FLOAT * (GENERATOR_PASSES * acts_g + CRITIC_PASSES * acts_d)
    memory.require(
        weights + batch,
        f"--batch-size {cfg.batch_size}: a step's activations ({acts_d:,} a sample in the critic)",
        where,
    )
    pixels = math.prod(shape)
    evaluation = cfg.eval_samples * memory.FLOAT * (cfg.z_dim + 2 * pixels)  # latents, samples, real ones
    memory.require(weights + evaluation, f"--eval-samples {cfg.eval_samples}: samples of {pixels:,} values", where)


def _activations(net: nn.Module, shape: int | tuple[int, ...], classes: int | None) -> int:
    """The values every layer outputs for one input of `shape` (a meta-device forward)."""
    total = 0

    def count(module: nn.Module, args: tuple, out: object) -> None:
        nonlocal total
        if not list(module.children()) and isinstance(out, torch.Tensor):
            total += out.numel()

    net.eval()  # a throwaway meta copy: batch norm then takes one sample
    hooks = [m.register_forward_hook(count) for m in net.modules()]
    x = torch.zeros((1, shape) if isinstance(shape, int) else (1, *shape), device="meta")
    try:
        with torch.no_grad():
            net(x, torch.zeros(1, dtype=torch.long, device="meta")) if classes else net(x)
    except (RuntimeError, NotImplementedError, TypeError, ValueError):
        return math.prod(x.shape)  # a layer the meta device cannot run: count the input alone
    finally:
        for h in hooks:
            h.remove()
    return total
