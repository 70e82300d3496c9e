"""Sample-quality metrics for 2-D data.

- High-quality share: samples within 3 std of their nearest mixture centre (VEEGAN,
  Srivastava et al. 2017; PacGAN, Lin et al. 2018).
- Modes covered (`modes`): a mode counts when at least a fifth of the samples it would receive
  under the real distribution (n / K) are high-quality samples on it, PacGAN's rule (20 of the
  100 expected per mode on the 25-mode grid with 2,500 samples).
- Modes hit (`modes_hit`): a mode counts when any high-quality sample lands on it. This lenient
  count is far higher early in training (the WGAN-GP toy recipe: 22 hit, 2 covered, measured).
- W1: the exact Wasserstein-1 distance between two equal-size empirical samples, i.e. the
  mean Euclidean cost of the optimal one-to-one matching, solved exactly.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def mixture_quality(
    samples: Tensor, centres: Tensor, std: float, n_sigma: float = 3.0, min_share: float = 0.2
) -> dict[str, float]:
    """Modes covered and high-quality share of `samples` (N, 2) for a mixture whose
    components have centres (K, 2) and isotropic std `std`."""
    samples = samples.detach().float().cpu()
    centres = centres.detach().float().cpu()
    dist = torch.cdist(samples, centres)  # (N, K)
    nearest_dist, nearest = dist.min(dim=1)
    good = nearest_dist <= n_sigma * std
    counts = torch.bincount(nearest[good], minlength=len(centres))
    expected = len(samples) / len(centres)
    covered = int((counts >= max(1.0, min_share * expected)).sum())
    return {
        "modes": covered,
        "modes_hit": int((counts > 0).sum()),
        "modes_total": len(centres),
        "hq_share": float(good.float().mean()),
    }


def linear_assignment(cost: np.ndarray) -> np.ndarray:
    """Exact minimum-cost perfect matching of a square cost matrix; returns col[i] for each
    row i. Shortest augmenting paths with potentials (Jonker & Volgenant 1987), O(n^3), one
    row at a time with the inner scan over columns vectorised."""
    n = cost.shape[0]
    if cost.shape != (n, n):
        raise ValueError(f"cost must be square, got {cost.shape}")
    u = np.zeros(n + 1)  # row potentials (1-based; 0 is a sentinel)
    v = np.zeros(n + 1)  # column potentials
    row_of = np.zeros(n + 1, dtype=np.int64)  # row_of[j]: row matched to column j, 0 if none
    way = np.zeros(n + 1, dtype=np.int64)
    padded = np.zeros((n + 1, n + 1))
    padded[1:, 1:] = cost
    for i in range(1, n + 1):
        row_of[0] = i
        j0 = 0
        min_v = np.full(n + 1, np.inf)
        used = np.zeros(n + 1, dtype=bool)
        while True:
            used[j0] = True
            i0 = row_of[j0]
            free = ~used
            free[0] = False
            reduced = padded[i0] - u[i0] - v
            better = free & (reduced < min_v)
            min_v[better] = reduced[better]
            way[better] = j0
            candidates = np.where(free, min_v, np.inf)
            j1 = int(np.argmin(candidates))
            delta = candidates[j1]
            u[row_of[used]] += delta
            v[used] -= delta
            min_v[free] -= delta
            j0 = j1
            if row_of[j0] == 0:
                break
        while j0:  # augment along the alternating path
            j1 = way[j0]
            row_of[j0] = row_of[j1]
            j0 = j1
    col_of = np.empty(n, dtype=np.int64)
    col_of[row_of[1:] - 1] = np.arange(n)
    return col_of


def wasserstein1(a: Tensor, b: Tensor) -> float:
    """Exact W1 between the empirical measures of two samples of equal size (N, d)."""
    if a.shape != b.shape:
        raise ValueError(f"samples must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    cost = torch.cdist(a.detach().double().cpu(), b.detach().double().cpu()).numpy()
    cols = linear_assignment(cost)
    return float(cost[np.arange(len(cost)), cols].mean())
