"""Whether a generator copies its training images: two scores that compare generated samples
with the training set *and* with real images the generator never saw (a held-out set).

- `nearer_seen`: the share of samples whose nearest image is a training one rather than an
  unseen one, rescaled for the two sets' sizes so that a generator drawing new images from the
  data's distribution scores 0.5 in expectation and one replaying its training set scores 1
  (with equal sets, the plain share). Its reference is the same score for the held-out images
  themselves (each compared, leave-one-out, with the others): what fresh real images score
  here, with its sampling noise.
- `c_t`: Meehan, Chaudhuri and Dasgupta 2020 ("A Non-Parametric Test to Detect Data-Copying in
  Generative Models", AISTATS), as their code (casey-meehan/data-copying,
  data_copying_tests.py) computes it: the training set is cut into k cells by k-means; in each
  cell, the distances of generated and of held-out samples to their nearest training image *of
  that cell* are compared by a Mann-Whitney U test, z-scored as under the null with their
  continuity correction (mean nm/2 - 1/2); C_T is the mean of the cells' z, weighted by each
  cell's share of held-out samples, over the cells holding more than tau = 20/m of the m
  generated samples. Near 0: as far from the training set as unseen data; well below 0 (they read
  -3 and less) copying; well above 0, under-fitting.

Both are measured in any feature space (pixels, or a network's features: `ganctl eval
--copying-features`); the k-means cells are scipy's (k-means++, seeded), where Meehan et al.
used scikit-learn's: C_T given the cells is theirs exactly (tested against their code's output).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ganctl import memory, progress
from ganctl.errors import DataError
from ganctl.pictures import image_grid, save_image

TAU_SAMPLES = 20  # Meehan et al.'s tau = 20 / m: a cell needs more than 20 generated samples
CELL_HELD = 50  # held-out images per k-means cell by default (k = n_held // 50, 1 to 50)
MAX_CELLS = 50  # Meehan et al.'s MNIST runs: 50 cells over 10,000 test images
BLOCK = 1024  # rows of a distance block


def nearest(x: Tensor, ref: Tensor) -> tuple[Tensor, Tensor]:
    """Each row of x's Euclidean distance to its nearest row of ref, and that row's index, a
    block of rows at a time (float64 sums: ties between copies are not decided by rounding)."""
    dists, index = [], []
    for part in x.split(BLOCK):
        d = torch.cdist(part.double(), ref.double())
        best = d.min(dim=1)
        dists.append(best.values)
        index.append(best.indices)
        memory.release()
    return torch.cat(dists), torch.cat(index)


# --- nearer a seen image than an unseen one --------------------------------------------------------
def nearer_seen(fake: Tensor, train: Tensor, held: Tensor, fake_nearer: Tensor | None = None) -> dict[str, float | int]:
    """The share of `fake` whose nearest image among the training and held-out ones together is
    a training image, rescaled so that fresh samples score 0.5 whatever the two sets' sizes,
    beside the same for the held-out images themselves (each against the others, leave-one-out).

    For a sample drawn afresh from the data's distribution, the nearest of l training and h
    held-out images is a training one with probability l / (l + h) (all l + h are alike to it);
    a sample that copies a training image finds it at distance 0. The share s is rescaled
    piecewise linearly so that l / (l + h) maps to 0.5 and 1 to 1 (0 to 0): a generator whose
    samples are a share c of copies and otherwise fresh scores 0.5 + c / 2, as the unscaled
    share does with sets of equal size (benchmarks/small_data.py's 180 seen and 180 unseen).
    Standard errors are binomial, rescaled alike. `fake_nearer`: whether each sample's nearest
    training image is nearer than its nearest held-out one, where the caller has the distances."""
    if len(held) < 2 or len(train) < 1:
        raise DataError(
            f"the copying scores need at least 2 held-out images and 1 training image; there are {len(train)}"
            f" training and {len(held)} held-out"
        )
    n_train, h = len(train), len(held)
    d_fake = fake_nearer if fake_nearer is not None else nearest(fake, train)[0] < nearest(fake, held)[0]
    d_held_held = torch.cdist(held.double(), held.double()).fill_diagonal_(math.inf).min(dim=1).values
    d_held = nearest(held, train)[0] < d_held_held
    share, reference = _rescaled(d_fake, n_train / (n_train + h)), _rescaled(d_held, n_train / (n_train + h - 1))
    return {
        "nearer_seen": share[0],
        "nearer_seen_se": share[1],
        "held_nearer_seen": reference[0],
        "held_nearer_seen_se": reference[1],
    }


def _rescaled(nearer: Tensor, null: float) -> tuple[float, float]:
    """The share of True in `nearer` mapped so that `null` -> 0.5 and 1 -> 1, and its standard error."""
    p = float(nearer.double().mean())
    slope = 0.5 / (1.0 - null) if p >= null else 0.5 / null
    value = 0.5 + (p - null) * slope if p >= null else p * slope
    return value, slope * math.sqrt(max(p * (1 - p), 1e-12) / len(nearer))


# --- Meehan et al.'s C_T ------------------------------------------------------------------------
def z_u(fake_d: np.ndarray, held_d: np.ndarray) -> float:
    """Meehan et al.'s Z_U: the Mann-Whitney U of the generated samples' nearest-training
    distances against the held-out ones' (U counts the pairs where the generated distance is the
    larger, ties a half; scipy's statistic for its first sample), z-scored under the null with
    their continuity correction: (U - (nm/2 - 1/2)) / sqrt(nm(n + m + 1)/12)."""
    from scipy.stats import mannwhitneyu

    m, n = len(fake_d), len(held_d)
    u = float(mannwhitneyu(fake_d, held_d, alternative="less", method="asymptotic").statistic)
    return (u - (n * m / 2 - 0.5)) / math.sqrt(n * m * (n + m + 1) / 12)


def c_t(
    held: Tensor, held_cells: Tensor, fake: Tensor, fake_cells: Tensor, train: Tensor, train_cells: Tensor, tau: float
) -> dict[str, Any]:
    """C_T of Meehan et al. given every point's cell (0 to k - 1): in each cell, Z_U of the
    distances of its generated and held-out points to the training points of that cell; C_T is
    the mean of Z_U over the cells holding more than a share `tau` of the generated points,
    weighted by their share of held-out points. A cell without held-out or training points is
    refused (their code raises too); a cell without generated points has Z_U 0 and, below tau,
    no weight. Returns C_T, each cell's Z_U and shares, and the cells counted."""
    k = int(train_cells.max()) + 1
    m, n = len(fake), len(held)
    fake_share = torch.bincount(fake_cells, minlength=k).double() / m
    held_share = torch.bincount(held_cells, minlength=k).double() / n
    z = np.zeros(k)
    for cell in range(k):
        in_train, in_held, in_fake = train[train_cells == cell], held[held_cells == cell], fake[fake_cells == cell]
        if len(in_train) == 0 or len(in_held) == 0:
            raise DataError(f"k-means cell {cell} holds no training or no held-out image; use fewer cells")
        if len(in_fake):
            z[cell] = z_u(nearest(in_fake, in_train)[0].numpy(), nearest(in_held, in_train)[0].numpy())
    counted = (fake_share > tau).numpy()
    weights = held_share.numpy()[counted]
    value = float(weights.dot(z[counted]) / weights.sum()) if counted.any() else math.nan
    return {
        "c_t": value,
        "cells": k,
        "cells_counted": int(counted.sum()),
        "per_cell": [
            {"z_u": float(z[i]), "held_share": float(held_share[i]), "fake_share": float(fake_share[i])}
            for i in range(k)
        ],
    }


def cells(train: Tensor, k: int, seed: int) -> Tensor:
    """k-means centres of the training points (scipy's kmeans2, k-means++ starts, seeded)."""
    from scipy.cluster.vq import kmeans2

    if k == 1:
        return train.double().mean(dim=0, keepdim=True)
    rng = np.random.default_rng(seed)
    with warnings.catch_warnings():  # an empty cluster: `data_copying` cuts again with fewer
        warnings.simplefilter("ignore", UserWarning)
        centres, _ = kmeans2(train.double().numpy(), k, minit="++", seed=rng)
    return torch.from_numpy(centres)


def default_cells(n_held: int) -> int:
    return max(1, min(MAX_CELLS, n_held // CELL_HELD))


def data_copying(fake: Tensor, train: Tensor, held: Tensor, seed: int = 0, k: int | None = None) -> dict[str, Any]:
    """C_T with k cells (default: one per 50 held-out images, 1 to 50). Where a cell ends up
    without held-out images, the partition is made again with one cell fewer (Meehan et al.
    ask the user to reduce the cells): the cells used are reported."""
    k = asked = default_cells(len(held)) if k is None else k
    tau = TAU_SAMPLES / len(fake)
    while True:
        centres = cells(train, k, seed)
        of = [nearest(x, centres)[1] for x in (train, held, fake)]
        empty = torch.bincount(of[1], minlength=len(centres)) == 0
        empty |= torch.bincount(of[0], minlength=len(centres)) == 0
        if k == 1 or not bool(empty.any()):
            found = c_t(held, of[1], fake, of[2], train, of[0], tau)
            return {**found, "cells_asked": asked, "tau": tau}
        k -= 1


# --- all of it, in one feature space -----------------------------------------------------------
@dataclass(frozen=True)
class Copying:
    """The copying scores of samples in one feature space, and the samples most nearer a training
    image than an unseen one (indices, for the picture)."""

    report: dict[str, Any]
    most_copied: Tensor  # indices into the samples, most copied first
    nearest_train: Tensor  # each sample's nearest training image
    nearest_held: Tensor  # and nearest held-out one


def copying_scores(
    fake: Tensor, train: Tensor, held: Tensor, space: str, seed: int = 0, k: int | None = None
) -> Copying:
    """`nearer_seen` and Meehan et al.'s C_T of samples' features `fake` against the training
    set's and the held-out set's, named with their space (`nearer_seen[pixels]`)."""
    for what, x in (("generated", fake), ("training", train), ("held-out", held)):
        if x.dim() != 2 or not bool(torch.isfinite(x).all()):
            raise DataError(f"the copying scores: the {what} features are not finite vectors")
    progress.report("copying scores", 0, 2)
    d_train, i_train = nearest(fake, train)
    d_held, i_held = nearest(fake, held)
    share = nearer_seen(fake, train, held, fake_nearer=d_train < d_held)
    progress.report("copying scores", 1, 2)
    test = data_copying(fake, train, held, seed, k)
    progress.report("copying scores", 2, 2)
    ratio = d_train / d_held.clamp_min(1e-12)
    metrics = {
        f"nearer_seen[{space}]": share["nearer_seen"],
        f"held_nearer_seen[{space}]": share["held_nearer_seen"],
        f"c_t[{space}]": test["c_t"],
    }
    report = {
        "metrics": metrics,
        "copying": {
            "space": space,
            "n_fake": len(fake),
            "n_train": len(train),
            "n_held": len(held),
            **{k: v for k, v in share.items() if k.endswith("_se")},
            "c_t": {key: test[key] for key in ("cells", "cells_asked", "cells_counted", "tau", "per_cell")},
        },
    }
    return Copying(report, torch.argsort(ratio), i_train, i_held)


# --- the samples as they are drawn -------------------------------------------------------------
class Collector:
    """The copying space's features of generated samples, gathered chunk by chunk as `tee`
    passes them on (the samples are drawn once), and the samples themselves (uint8) with `keep`,
    for the picture of the most copied."""

    def __init__(self, features: Callable[[Tensor], Tensor], keep: bool = False):
        self.features, self.keep = features, keep
        self._features: list[Tensor] = []
        self._samples: list[Tensor] = []

    def tee(self, chunks: Iterable[Tensor]) -> Iterator[Tensor]:
        for chunk in chunks:
            self._features.append(self.features(chunk).float().flatten(1).cpu())
            if self.keep:
                self._samples.append(chunk.detach().cpu().add(1).mul(127.5).round().clamp(0, 255).to(torch.uint8))
            yield chunk

    def collected(self) -> Tensor:
        return torch.cat(self._features)

    def samples(self) -> Tensor:
        return torch.cat(self._samples)


def features_of(images: Tensor, features: Callable[[Tensor], Tensor], what: str) -> Tensor:
    """A uint8 image set's features in the copying space, a chunk at a time."""
    parts = []
    for chunk in progress.counted(images.split(CHUNK), what, math.ceil(len(images) / CHUNK)):
        parts.append(features(chunk.float().div(127.5).sub(1.0)).float().flatten(1).cpu())
    return torch.cat(parts)


CHUNK = 500
COPIES_SHOWN = 16  # the picture's rows: the most copied samples
COPIES_SIDE = 64  # each image drawn at least this many pixels wide


def draw_copies(path: Path, found: Copying, samples: Tensor, train: Tensor, held: Tensor) -> None:
    """The most copied samples (nearest a training image relative to their nearest unseen one),
    each beside its nearest training image and its nearest held-out image (uint8 images, in the
    copying space's nearness): sample | training | held out, two triples a row."""
    pick = found.most_copied[:COPIES_SHOWN]
    triples = [torch.stack([samples[i], train[found.nearest_train[i]], held[found.nearest_held[i]]]) for i in pick]
    images = torch.cat(triples).float().div(127.5).sub(1.0)
    scale = max(1, math.ceil(COPIES_SIDE / images.shape[-1]))
    images = torch.nn.functional.interpolate(images, scale_factor=scale, mode="nearest")
    save_image(path, image_grid(images.numpy(), columns=6))


def shared_images(a: Tensor, b: Tensor) -> int:
    """How many images of `a` occur, pixel for pixel, in `b` (uint8 sets of one shape)."""
    known = {row.tobytes() for row in b.cpu().flatten(1).numpy()}
    return sum(row.tobytes() in known for row in a.cpu().flatten(1).numpy())
