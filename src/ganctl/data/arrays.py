"""An image array file as an `ImageSet`: `.npy`, `.npz` (with its labels and class names, where
it has them) or `.safetensors` as `ganctl sample` writes it; images as (N, H, W), (N, H, W, C)
or (N, C, H, W), uint8 or float in [0, 1] or [-1, 1]."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from torch import Tensor

from ganctl.data.images import ImageSet, to_images
from ganctl.data.source import Classes
from ganctl.errors import DataError

# --- arrays -----------------------------------------------------------------------------
ARRAY_SUFFIXES = (".npy", ".npz", ".safetensors")  # the last as `ganctl sample` writes it
LABEL_ARRAYS = ("y", "labels")  # an .npz's label array, by either name


NAME_ARRAYS = ("class_names", "classes")  # and, optionally, its class names


SAMPLES_KEY = "samples"  # the tensor `ganctl sample --out FILE.safetensors` writes


def read_array(path: Path, flag: str = "--data") -> tuple[np.ndarray, np.ndarray | None, list[str] | None]:
    """The array of a .npy, .npz or .safetensors file (`ganctl sample`'s "samples"), and an
    .npz's labels and class names where it has them; one line naming the flag for a file that
    is missing, empty or not such an array."""
    where = f"{flag} {path}"
    try:
        if path.stat().st_size == 0:
            raise DataError(f"{where}: an empty file (0 bytes), not an array")
        if path.suffix.lower() == ".safetensors":
            return _safetensors_array(path, where), None, None
        with open(path, "rb") as fh:
            magic = fh.read(6)
        if not magic.startswith((b"\x93NUMPY", b"PK\x03\x04")):  # numpy's header, or a zip (.npz)
            raise DataError(f"{where}: not a .npy or .npz file (it does not start with either's header)")
        loaded = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DataError(f"{where}: no such file") from None
    except (OSError, ValueError, EOFError) as exc:
        why = "it holds Python objects, which are not read" if "allow_pickle" in str(exc) else type(exc).__name__
        raise DataError(f"{where}: not a readable .npy/.npz array ({why})") from None
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        return loaded, None, None
    with loaded:
        try:
            labels = next((loaded[k] for k in LABEL_ARRAYS if k in loaded.files), None)
            names = next(([str(v) for v in loaded[k]] for k in NAME_ARRAYS if k in loaded.files), None)
        except ValueError as exc:
            raise DataError(f"{where}: its labels cannot be read ({exc})") from None
        images = [k for k in loaded.files if k not in (*LABEL_ARRAYS, *NAME_ARRAYS)]
        return _images_array(where, loaded, images), labels, names


def _safetensors_array(path: Path, where: str) -> np.ndarray:
    try:
        with safe_open(str(path), "np") as fh:
            keys = list(fh.keys())
            key = SAMPLES_KEY if SAMPLES_KEY in keys else keys[0] if len(keys) == 1 else None
            if key is None:
                raise DataError(
                    f"{where}: holds tensors {', '.join(keys[:5]) or 'none'}; expected one, or '{SAMPLES_KEY}'"
                )
            return fh.get_tensor(key)
    except (SafetensorError, OSError, ValueError) as exc:
        raise DataError(f"{where}: not a readable safetensors file ({exc})") from None


def _images_array(where: str, loaded: np.lib.npyio.NpzFile, names: list[str]) -> np.ndarray:
    """The images of an .npz: its one array, or the one named images, x, data or arr_0."""
    preferred = [n for n in ("images", "x", "data", "arr_0") if n in names]
    if len(names) == 1:
        name = names[0]
    elif preferred:
        name = preferred[0]
    else:
        raise DataError(f"{where}: holds arrays {', '.join(names)}; name the images one 'images' or keep one array")
    try:
        return loaded[name]
    except ValueError as exc:
        raise DataError(f"{where}: array {name!r} cannot be read ({exc})") from None


def _hwc(shape: tuple[int, ...]) -> tuple[int, ...] | None:
    """(N, H, W, C) of an array of images in any layout `image_layout` accepts, else None."""
    if len(shape) == 5 and shape[2] in (1, 3):
        shape = (shape[0] * shape[1], *shape[2:])
    if len(shape) == 3:
        shape = (*shape, 1)
    if len(shape) == 4 and shape[1] in (1, 3) and shape[-1] not in (1, 3):
        shape = (shape[0], shape[2], shape[3], shape[1])
    return shape if len(shape) == 4 and shape[-1] in (1, 3) else None


def image_layout(arr: np.ndarray, where: str) -> np.ndarray:
    """Images as (N, H, W, C): from (N, H, W), (N, H, W, C), or (N, C, H, W) as `ganctl sample`
    writes them (C 1 or 3; strips of interpolations, (N, K, C, H, W), as N K images)."""
    hwc = _hwc(arr.shape)
    if hwc is None:
        raise DataError(
            f"{where}: expected images of shape (N, H, W), (N, H, W, C) or (N, C, H, W) with C 1 or 3, got {arr.shape}"
        )
    if arr.ndim == 5:
        arr = arr.reshape(-1, *arr.shape[2:])
    if arr.ndim == 3:
        arr = arr[..., None]
    if arr.shape != hwc:
        arr = arr.transpose(0, 2, 3, 1)  # channels first, as ganctl sample writes them
    if arr.shape[0] == 0:
        raise DataError(f"{where}: holds no images (shape {arr.shape})")
    return arr


def array_side(path: Path) -> int | None:
    """The side of an array file's square images, from its header alone (no pixel is read), or
    None where the header does not say (the loader then reads the file and says why)."""

    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        with safe_open(str(path), "np") as fh:
            keys = list(fh.keys())
            key = SAMPLES_KEY if SAMPLES_KEY in keys else keys[0] if len(keys) == 1 else None
            shape = tuple(fh.get_slice(key).get_shape()) if key is not None else None
    elif suffix == ".npz":
        with zipfile.ZipFile(path) as archive:
            names = [n[:-4] for n in archive.namelist() if n.endswith(".npy")]
            arrays = [n for n in names if n not in (*LABEL_ARRAYS, *NAME_ARRAYS)]
            preferred = [n for n in ("images", "x", "data", "arr_0") if n in arrays]
            name = arrays[0] if len(arrays) == 1 else preferred[0] if preferred else None
            if name is None:
                return None
            with archive.open(f"{name}.npy") as fh:
                version = np.lib.format.read_magic(fh)
                read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                shape = read(fh)[0]
    else:
        shape = np.load(path, mmap_mode="r", allow_pickle=False).shape
    hwc = _hwc(tuple(shape)) if shape is not None else None
    return hwc[1] if hwc is not None and hwc[1] == hwc[2] else None


def load_array(
    path: Path,
    size: int | None,
    channels: int | None,
    hflip: bool = False,
    conditional: bool = False,
    flag: str = "--data",
) -> ImageSet:
    arr, labels, names = read_array(path, flag)
    where = f"{flag} {path}"
    arr = image_layout(arr, where)
    if arr.dtype == np.uint8:
        x = torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2).float()
    elif np.issubdtype(arr.dtype, np.floating):
        x = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32)).permute(0, 3, 1, 2)
        lo, hi = float(x.min()), float(x.max())
        if not (np.isfinite(lo) and np.isfinite(hi)):
            raise DataError(f"{where}: the array holds NaN or infinite values")
        if lo >= 0.0 and hi <= 1.0:
            x = x * 255.0
        elif lo >= -1.0 and hi <= 1.0:
            x = (x + 1.0) * 127.5
        else:
            raise DataError(f"{where}: float images must lie in [0, 1] or [-1, 1], found [{lo:.3g}, {hi:.3g}]")
    else:
        raise DataError(f"{where}: images must be uint8 or float, got {arr.dtype}")
    images, resampled = to_images(x, size, channels, where)
    targets, classes = _labels_if_usable(path, labels, names, len(images), conditional)
    return ImageSet(
        str(path), images, hflip, native_size=tuple(x.shape[-2:]), resampled=resampled, targets=targets, classes=classes
    )


def _labels_if_usable(
    path: Path, labels: np.ndarray | None, names: list[str] | None, n: int, conditional: bool
) -> tuple[Tensor | None, Classes | None]:
    """An array's labels, as a folder's classes are: always where they are usable (a classifier
    of the data needs them), and for a conditional run required to be; labels that number the
    classes badly refuse a conditional run and are dropped otherwise."""
    try:
        return _array_labels(path, labels, names, n)
    except DataError:
        if conditional:
            raise
        return None, None


def _array_labels(
    path: Path, labels: np.ndarray | None, names: list[str] | None, n: int
) -> tuple[Tensor | None, Classes | None]:
    """An .npz's labels, checked: integers in [0, classes), one per image."""
    if labels is None:
        return None, None
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"--data {path}: its labels must be one integer per image, got {labels.shape} {labels.dtype}")
    if len(labels) != n:
        raise DataError(f"--data {path}: {len(labels)} labels for {n} images")
    if len(labels) and int(labels.min()) < 0:
        raise DataError(
            f"--data {path}: label {int(labels.min())} is negative; labels number the classes 0 to K-1, one per image"
        )
    count = len(names) if names is not None else int(labels.max()) + 1
    bad = labels[labels >= count]
    if len(bad):
        raise DataError(
            f"--data {path}: label {int(bad[0])} names no class; its {count} class names are numbered 0 to {count - 1}"
        )
    empty = np.setdiff1d(np.arange(count), labels)
    if len(empty):  # a conditional model cannot be asked for a class with no real image
        raise DataError(
            f"--data {path}: labels 0 to {count - 1} make {count} classes, but {len(empty)} of them have no image"
            f" (first: {int(empty[0])}); number the classes 0 to K-1"
        )
    return torch.from_numpy(labels.astype(np.int64)), Classes(tuple(names or (str(k) for k in range(count))))


def read_points(path: Path) -> Tensor:
    """2-D samples of any generator (`eval --fake`): an (N, 2) array of finite numbers."""
    if path.is_dir() or path.suffix.lower() not in ARRAY_SUFFIXES:
        raise DataError(
            f"--fake {path}: 2-D samples are read from an .npy, .npz or .safetensors array of (N, 2) points"
        )
    array = read_array(path, "--fake")[0]
    if array.ndim != 2 or array.shape[1] != 2 or not np.issubdtype(array.dtype, np.number):
        raise DataError(f"--fake {path}: 2-D data needs an (N, 2) array of points, got {array.shape} {array.dtype}")
    if len(array) == 0:
        raise DataError(f"--fake {path}: holds no points")
    bad = ~np.isfinite(array).all(axis=1)
    if bad.any():
        raise DataError(f"--fake {path}: {int(bad.sum())} of its {len(array)} points hold NaN or infinite values")
    return torch.from_numpy(array.astype(np.float32))
