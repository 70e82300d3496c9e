"""Exact optimal transport between two samples, and what it says of a critic.

- W1: the exact Wasserstein-1 distance between two equal-size empirical samples, i.e. the
  mean Euclidean cost of the optimal one-to-one matching, solved exactly (scipy). A finite
  sample has a floor even for a perfect generator, with its own spread: `w1_floor` gives the
  mean and standard deviation of real-against-real W1 over several draws, and `floor_of` keeps
  it (in this process and in the cache folder).
- Of a critic: how well its input gradient points along the optimal pairs (`alignment`), and a
  lower bound on its Lipschitz constant from difference quotients (`empirical_lower_bound`).
"""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

from ganctl import cache, progress, streams
from ganctl.data import DataSource
from ganctl.fileio import write_text_atomic
from ganctl.methods import penalties
from ganctl.nets.networks import eval_mode

W1_POINTS = 2048  # points per side of W1: at 512 its noise (sd 0.03 to 0.04) hid real differences


FLOOR_DRAWS = 5


def linear_assignment(cost: np.ndarray) -> np.ndarray:
    """Exact minimum-cost perfect matching of a square cost matrix: col[i] for each row i
    (scipy's `linear_sum_assignment`, a shortest augmenting path solver)."""

    if cost.ndim != 2 or cost.shape[0] != cost.shape[1]:
        raise ValueError(f"cost must be square, got {cost.shape}")
    what = f"an exact optimal pairing of {len(cost):,} points"
    progress.report(what, 0, 1)
    rows, cols = linear_sum_assignment(cost)
    progress.report(what, 1, 1)
    out = np.empty(len(rows), dtype=np.int64)
    out[rows] = cols
    return out


def wasserstein1(a: Tensor, b: Tensor) -> float:
    """Exact W1 between the empirical measures of two samples of equal size (N, d)."""
    if a.shape != b.shape:
        raise ValueError(f"samples must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    cost = torch.cdist(a.detach().double().cpu(), b.detach().double().cpu()).numpy()
    cols = linear_assignment(cost)
    return float(cost[np.arange(len(cost)), cols].mean())


def w1_floor(sample: Callable[[int], Tensor], n: int, draws: int = FLOOR_DRAWS) -> tuple[float, float]:
    """The W1 of a perfect generator at this sample size: the mean and standard deviation over
    `draws` pairs of independent real samples of n points (`sample(n)` draws one). A W1 within
    a standard deviation or two of this mean is inside the metric's own noise."""
    values = np.array([wasserstein1(sample(n), sample(n)) for _ in range(draws)])
    return float(values.mean()), float(values.std(ddof=1)) if draws > 1 else 0.0


ALIGNMENT_PAIRS = 512  # the exact coupling is O(n^3): 512 pairs take 0.05 s with scipy


# Measured references (8gaussians, 512 pairs, 5 seeds, the optimal critic -<x, v/|v|> of a copy
# shifted by v): |v| -> (mean alignment on optimally coupled pairs, on independent pairs).
ALIGNMENT_REFERENCE = {0.1: (0.91, 0.15), 0.5: (0.92, 0.25), 2.0: (0.99, 0.66)}


def optimal_coupling(real: Tensor, fake: Tensor) -> Tensor:
    """The permutation `perm` that pairs real[i] with fake[perm[i]] at the least total
    Euclidean distance: the empirical optimal transport plan of W1 between the two sets."""

    cost = torch.cdist(real.flatten(1).double().cpu(), fake.flatten(1).double().cpu())
    return torch.from_numpy(linear_assignment(cost.numpy())).to(fake.device)


def alignment(
    critic: nn.Module, real: Tensor, fake: Tensor, generator: torch.Generator, y: Tensor | None = None
) -> Tensor:
    """cos(grad D(x_hat), x_real - x_fake) at x_hat = e x_real + (1 - e) x_fake for the given
    pairs (sign: a critic that rises towards the data scores positive).

    For the optimal Wasserstein critic on pairs of the optimal coupling it is 1 (Gulrajani et
    al. 2017, Proposition 1); on a finite sample, the empirical coupling is not the population
    one, and the optimal critic of a shifted copy of 8gaussians scores 0.91 / 0.92 / 0.99 on
    512 coupled pairs for shifts of length 0.1 / 0.5 / 2 (ALIGNMENT_REFERENCE). Independent
    pairs do not score near 0 either: the same critic scores 0.15 / 0.25 / 0.66 on them, more
    the larger the shift. So the number says how far a critic's gradients follow the transport
    direction, on a scale whose top is about 0.9 at this sample size, not 1."""
    x_hat = penalties.interpolate(real, fake, generator)
    with eval_mode(critic):
        _, grads = penalties.input_grads(critic, x_hat, y=y)
    g, d = grads.flatten(1), (real - fake).flatten(1)
    return torch.nn.functional.cosine_similarity(g, d, dim=1, eps=1e-12).detach()


@torch.no_grad()
def empirical_lower_bound(critic: nn.Module, x: Tensor, y: Tensor, labels: Tensor | None = None) -> float:
    """max |D(x_i) - D(y_i)| / ||x_i - y_i|| over the given pairs: a lower bound on the
    critic's Lipschitz constant (any pair is a witness; a conditional critic's pairs share
    their label)."""
    with eval_mode(critic):
        dx = torch.linalg.vector_norm((x - y).flatten(1), dim=1)
        at = (lambda v: critic(v)) if labels is None else (lambda v: critic(v, labels))
        dd = (at(x) - at(y)).reshape(-1).abs()
    keep = dx > 1e-12
    return float((dd[keep] / dx[keep]).max()) if keep.any() else 0.0


_FLOORS: dict[str, tuple[float, float]] = {}


FLOOR_FORMAT = "ganctl.w1-floor/1"


def floor_of(dataset: DataSource, n: int, seed: int) -> tuple[float, float]:
    """The W1 floor of `dataset` at n points (mean, sd over draws), from a stream of its own. It
    depends on the data, n and the seed alone (five exact W1 solves: 2.3 s at 2048 points), so
    it is computed once and kept, in this process and in the cache folder beside the image and
    feature caches, keyed by the data's fingerprint, n, the seed and the number of draws."""
    key = f"{FLOOR_FORMAT}|{dataset.fingerprint()}|{n}|{seed}|{FLOOR_DRAWS}"
    if key in _FLOORS:
        return _FLOORS[key]
    path = cache.path("w1floor", key)
    try:
        cached = json.loads(path.read_text(encoding="utf-8"))
        if cached["key"] == key:
            _FLOORS[key] = (float(cached["mean"]), float(cached["sd"]))
            return _FLOORS[key]
    except (OSError, ValueError, KeyError, TypeError):
        pass  # absent or damaged: computed again
    g = torch.Generator().manual_seed(streams.eval_seed(seed, streams.EVAL_W1_FLOOR))
    _FLOORS[key] = mean, sd = w1_floor(lambda m: dataset.sample(m, g, "cpu"), n)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps({"key": key, "mean": mean, "sd": sd}))
    except OSError:
        pass  # the cache is an optimisation: an unwritable folder costs a recomputation
    return _FLOORS[key]
