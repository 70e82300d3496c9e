"""Data sources behind one entry point, `load_dataset`, each a `DataSource` (`data.source`):
it samples batches on the training device from an explicit `torch.Generator`, so the data
stream is part of the resumable state, and declares what else it offers (mode centres, a
judge, skipped files, classes) as attributes that are None when absent.

    2-D toy sets      8gaussians, 25gaussians, swissroll, ring, checkerboard   (points)
    procedural        shapes                                                    (images)
    files             a folder of images, FILE.npy, FILE.npz                    (images)
    stacked:PATH      three images of a labelled grey set as channels, K^3 modes (images)
"""

from __future__ import annotations

from pathlib import Path

import torch

from ganctl.config import SHAPES_IMAGE_SIZE, TrainConfig, data_kind, holdout_size
from ganctl.data import arrays, cifar, folders, stacked
from ganctl.data.arrays import ARRAY_SUFFIXES
from ganctl.data.images import ImageSet
from ganctl.data.shapes import ShapesSet
from ganctl.data.source import Classes, DataSource, Judge, Mixture
from ganctl.data.toy import ToySet, available_datasets, get_dataset
from ganctl.errors import DataError

__all__ = [
    "Classes",
    "DataSource",
    "Judge",
    "Mixture",
    "ToySet",
    "available_datasets",
    "data_kind",
    "get_dataset",
    "load_dataset",
    "sample_shape",
]

SHAPES_MIN_SIZE = 16  # the judge is exact on real images from 16 px up (tested at 16, 32, 64)


def builtin_names() -> list[str]:
    return [*available_datasets(), "shapes"]


def sample_shape(cfg: TrainConfig) -> tuple[int, ...]:
    """The shape of one sample, from a resolved config alone (no data is read)."""
    if data_kind(cfg.data) == "points":
        return (2,)
    return (cfg.channels, cfg.image_size, cfg.image_size)


def image_side(cfg: TrainConfig) -> int | None:
    """The side of the images a config will train on, read without decoding them (file headers
    only): `--image-size`, else the data's own. The resolver needs it before the data is read,
    where a recipe depends on the size (R3GAN's presets). None for 2-D data, and where headers
    cannot tell (loading the data then says why)."""
    if cfg.image_size is not None or data_kind(cfg.data) == "points":
        return cfg.image_size
    if cfg.data == "shapes":
        return SHAPES_IMAGE_SIZE

    name = stacked.base_path(cfg.data) if stacked.is_stacked(cfg.data) else cfg.data
    path = Path(name).expanduser()
    try:
        if cifar.layout_of(path) is not None:
            return cifar.SIDE
        if path.suffix.lower() in ARRAY_SUFFIXES and path.is_file():
            return arrays.array_side(path)
        if path.is_dir():
            return folders.folder_side(path)
    except (DataError, OSError, ValueError, KeyError, IndexError, RuntimeError, AttributeError):
        return None  # unreadable: the loader reports it, with its one line
    return None


def load_dataset(cfg: TrainConfig) -> DataSource:
    """The data source a config names. Images are decoded (or read from the cache) here, at
    their own size unless `image_size` asks for another. A conditional config needs labels:
    without them, one line says where they would have been read."""
    source = _load(cfg)
    if cfg.conditional and source.classes is None:
        raise DataError(f"--conditional: --data {cfg.data} has no class labels; {_where_labels(cfg)}")
    if cfg.holdout is not None:
        if not isinstance(source, ImageSet) or isinstance(source, stacked.StackedSet):
            raise DataError(
                f"--holdout {cfg.holdout}: --data {cfg.data} is drawn fresh, not a finite set of images; nothing can be"
                " held out of it (a folder, an array file or CIFAR-10 can)"
            )
        count = holdout_size(cfg.holdout, len(source))
        source = source.split_off(held_out_indices(source, count))
    return source


HOLDOUT_SEED = 0  # the same held-out images for every run of one data set, whatever its --seed


def held_out_indices(images: ImageSet, count: int) -> list[int]:
    """Which of the images a --holdout of `count` sets aside: `count` drawn at random (seed
    HOLDOUT_SEED), then any whose exact pixels also occur among the rest moved back to the rest
    (a duplicate on both sides would be a held-out image the run trained on). Sorted."""
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(HOLDOUT_SEED))
    held = set(order[:count].tolist())
    pixels = images.images.cpu().flatten(1).numpy()
    kept = {pixels[i].tobytes() for i in range(len(images)) if i not in held}
    return sorted(i for i in held if pixels[i].tobytes() not in kept)


def _where_labels(cfg: TrainConfig) -> str:
    if data_kind(cfg.data) == "points":
        return "of the 2-D sets, the mixtures have them (8gaussians, 25gaussians: each point's component)"
    if Path(cfg.data).suffix.lower() in ARRAY_SUFFIXES:
        return "an .npz's labels are read from its 'y' or 'labels' array (one integer per image)"
    return (
        "a folder's labels are read from its sub-folders, one per class (DATA/<class>/<image>, the ImageFolder"
        " layout), and this folder has images at its top level"
    )


def _load(cfg: TrainConfig) -> DataSource:
    name = cfg.data
    if data_kind(name) == "points":
        _no_split(cfg, name)
        return get_dataset(name)
    if name == "shapes":
        _no_split(cfg, name)
        size = cfg.image_size or SHAPES_IMAGE_SIZE
        if size < SHAPES_MIN_SIZE:
            raise DataError(f"--image-size {size}: the shapes set needs at least {SHAPES_MIN_SIZE} pixels")
        if cfg.channels not in (None, 3):
            raise DataError("--data shapes is an RGB set (its modes are colours); use --channels 3")
        return ShapesSet(size)

    if stacked.is_stacked(name):
        _no_split(cfg, name)
        if cfg.channels not in (None, stacked.CHANNELS):
            raise DataError(f"--data {name}: stacks have one channel per stacked image; use --channels 3")
        found = stacked.load_stacked(name, cfg.image_size, cfg.hflip)
        empty = int((torch.bincount(found.targets, minlength=found.classes.count) == 0).sum())
        if cfg.conditional and empty:
            raise DataError(
                f"--conditional: {empty:,} of the {found.classes.count:,} modes of --data {name} have no stack"
                f" among its {len(found):,}; train it unconditionally"
            )
        return found
    path = Path(name).expanduser()
    if cifar.layout_of(path) is not None:
        return cifar.load_cifar10(path, cfg.split, cfg.image_size, cfg.channels, cfg.hflip)
    _no_split(cfg, name)
    if path.suffix.lower() in ARRAY_SUFFIXES:
        return arrays.load_array(path, cfg.image_size, cfg.channels, cfg.hflip, cfg.conditional)
    if path.is_dir():
        return folders.load_folder(path, cfg.image_size, cfg.channels, cfg.hflip, conditional=cfg.conditional)
    if path.exists():
        raise DataError(
            f"--data {name}: not a folder of images, a {'/'.join(ARRAY_SUFFIXES)} array or CIFAR-10 as distributed"
        )
    raise DataError(
        f"--data {name!r}: no such folder or file, and not a built-in set; built-in: {', '.join(builtin_names())}"
    )


def _no_split(cfg: TrainConfig, name: str) -> None:
    if cfg.split != "train":
        raise DataError(
            f"--split {cfg.split}: --data {name} has no splits (CIFAR-10 as distributed has train and test)"
        )
