"""The input-gradient norm ||grad_x D(x)|| of a critic on a point set, taken with the very
function the penalties use (`ganctl.methods.penalties.input_grads`), and its statistics."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ganctl.lipschitz.defaults import TOL as DEFAULT_TOL
from ganctl.methods import penalties
from ganctl.nets.networks import eval_mode

QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)


VANISHING = 1e-3


BATCH_VALUES = 1 << 22


def gradient_norms(
    critic: nn.Module, x: Tensor, batch: int | None = None, y: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """(D(x), ||grad D(x)||) per sample, in eval mode, in batches of `batch` (by default 4096
    points, fewer for images: about 4 million input values a batch); a conditional critic at
    the labels y (the gradient with respect to x alone)."""
    if batch is None:
        batch = min(4096, max(1, BATCH_VALUES // max(1, x[0].numel())))
    values, norms = [], []
    labels = y.split(batch) if y is not None else [None] * len(x.split(batch))
    with eval_mode(critic):
        for chunk, at in zip(x.split(batch), labels):
            out, grads = penalties.input_grads(critic, chunk, y=at)
            values.append(out.detach().reshape(-1))
            norms.append(penalties.grad_norm(grads).detach())
    return torch.cat(values), torch.cat(norms)


def summarise(norms: Tensor, tol: float = DEFAULT_TOL) -> dict[str, float]:
    """count, mean, std, min, quantiles, max and the shares above 1 + tol, below 1 - tol and
    below 1e-3 (vanishing)."""
    x = norms.detach().double().cpu()
    q = torch.quantile(x, torch.tensor(QUANTILES, dtype=torch.float64))
    stats = {
        "count": len(x),
        "mean": float(x.mean()),
        "std": float(x.std()) if len(x) > 1 else 0.0,
        "min": float(x.min()),
    }
    stats.update({f"q{round(p * 100):02d}": float(v) for p, v in zip(QUANTILES, q)})
    stats.update(
        {
            "max": float(x.max()),
            "above": float((x > 1.0 + tol).double().mean()),
            "below": float((x < 1.0 - tol).double().mean()),
            "vanishing": float((x < VANISHING).double().mean()),
        }
    )
    return stats


def histogram_bins(norms: Tensor, bins: int = 12) -> list[tuple[float, float, int]]:
    """(low edge, high edge, count) of `bins` equal bins from 0 to the largest norm."""
    x = norms.double().cpu()
    hi = max(float(x.max()), 1e-12)
    counts = torch.histc(x, bins=bins, min=0.0, max=hi)
    return [(hi * i / bins, hi * (i + 1) / bins, int(c)) for i, c in enumerate(counts)]
