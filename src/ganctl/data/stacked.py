"""Stacked data for counting modes (VEEGAN, Srivastava et al. 2017; PacGAN, Lin et al. 2018):
each image's three channels are three images of a labelled grey set drawn independently, so a
set of K classes makes K^3 modes, and a generator's mode is the triple of its channels' classes.

As PacGAN's code builds Stacked MNIST (fjxmlzn/PacGAN, stacked_MNIST_experiments/
VEEGAN_experiment: `load_mnist` and config.py): 128,000 stacks, each channel an index drawn
uniformly, with replacement, from the whole grey set, fixed once (here by seed 0, so a run and its
evaluation see the same stacks). `--data stacked:PATH` names the grey set: a folder of class
sub-folders or an .npz with labels; colour images are turned grey.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ganctl import memory
from ganctl.data.arrays import load_array
from ganctl.data.folders import load_folder
from ganctl.data.images import ImageSet
from ganctl.data.source import Classes
from ganctl.errors import DataError

PREFIX = "stacked:"
STACKS = 128_000  # PacGAN's config.py: num_training_sample
SEED = 0
MAX_MODES = 1_000_000  # K^3 with K <= 100
CHANNELS = 3


@dataclass
class StackedSet(ImageSet):
    """An ImageSet of stacks, labelled by mode (k0 K^2 + k1 K + k2), with the grey set it was
    stacked from (whose classifier judges each channel)."""

    base: ImageSet | None = None


def is_stacked(data: str) -> bool:
    return data.startswith(PREFIX)


def base_path(data: str) -> str:
    return data[len(PREFIX) :]


def load_stacked(data: str, size: int | None, hflip: bool = False) -> StackedSet:
    """The stacks of `stacked:PATH`, at `size` (None: the grey set's own)."""
    path = Path(base_path(data)).expanduser()
    where = f"--data {data}"
    if not base_path(data):
        raise DataError(f"{where}: name the labelled grey set to stack, as stacked:FOLDER or stacked:FILE.npz")
    if path.is_dir():
        base = load_folder(path, size, 1)
    elif path.is_file():
        base = load_array(path, size, 1, conditional=True)
    else:
        raise DataError(f"{where}: {path} is no folder of class sub-folders nor an .npz with labels")
    if base.classes is None or base.targets is None:
        raise DataError(
            f"{where}: {path} has no labels to count modes by (a folder needs one sub-folder per class; an .npz a"
            " 'y' or 'labels' array)"
        )
    k = base.classes.count
    if k**CHANNELS > MAX_MODES:
        raise DataError(f"{where}: {k} classes make {k**CHANNELS:,} modes; at most {MAX_MODES:,} can be counted")
    h, w = base.shape[-2:]
    memory.require(STACKS * CHANNELS * h * w, f"{where}: {STACKS:,} stacks of 3 x {h} x {w}")
    g = torch.Generator().manual_seed(SEED)
    idx = torch.randint(len(base), (STACKS, CHANNELS), generator=g)
    images = base.images[idx, 0]  # (STACKS, 3, H, W)
    y = base.targets[idx]
    modes = (y[:, 0] * k + y[:, 1]) * k + y[:, 2]
    names = base.classes.names
    mode_names = tuple(f"{a}-{b}-{c}" for a in names for b in names for c in names)
    return StackedSet(
        data,
        images,
        hflip,
        base.skipped,
        native_size=base.native_size,
        resampled=base.resampled,
        targets=modes,
        classes=Classes(mode_names),
        base=base,
    )
