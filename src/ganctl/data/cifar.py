"""CIFAR-10 as it is distributed (https://www.cs.toronto.edu/~kriz/cifar.html), read in place:
the python version (`cifar-10-batches-py`, pickled batches, what torchvision downloads) and the
binary version (`cifar-10-batches-bin`), as a folder or as the `.tar.gz` archive, and a folder
that holds either (torchvision's `root`). 32 x 32 RGB images with their labels and the ten
class names; the training split is the five data batches (50,000 images), the test split the
test batch (10,000).

The python batches are pickles. They are read with an unpickler that builds only what those
files hold: dicts, lists, bytes, ints and uint8 numpy arrays. Any other object a pickle asks
for (a function to call, a class to build) stops the read with one line naming the file, so a
hostile pickle cannot run code here.
"""

from __future__ import annotations

import io
import pickle
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ganctl.data.images import ImageSet, to_images
from ganctl.data.source import Classes
from ganctl.errors import DataError

SPLITS = ("train", "test")
SIDE = 32
PIXELS = 3 * SIDE * SIDE
PY_FILES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
BIN_FILES = {"train": [f"data_batch_{i}.bin" for i in range(1, 6)], "test": ["test_batch.bin"]}
PY_META, BIN_META = "batches.meta", "batches.meta.txt"
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")
LAYOUTS = {"cifar-10-batches-py": "py", "cifar-10-batches-bin": "bin"}


def layout_of(path: Path) -> tuple[str, Path] | None:
    """("py" | "bin", the folder or archive) when `path` holds CIFAR-10 as distributed."""
    if path.is_file() and path.name.lower().endswith(ARCHIVE_SUFFIXES):
        for layout in LAYOUTS.values():
            if f"-{layout}" in path.name:
                return layout, path
        return None
    if not path.is_dir():
        return None
    if (path / "data_batch_1").is_file() and (path / PY_META).is_file():
        return "py", path
    if (path / "data_batch_1.bin").is_file() and (path / BIN_META).is_file():
        return "bin", path
    for folder in LAYOUTS:  # torchvision's root, which holds the extracted folder
        if (path / folder).is_dir():
            return layout_of(path / folder)
    return None


def load_cifar10(path: Path, split: str, size: int | None, channels: int | None, hflip: bool) -> ImageSet:
    found = layout_of(path)
    if found is None:
        raise DataError(f"--data {path}: not CIFAR-10 as distributed (cifar-10-batches-py or -bin)")
    if split not in SPLITS:
        raise DataError(f"--split {split!r} is not one of: {', '.join(SPLITS)}")
    layout, where = found
    read = _archive_reader(where) if where.is_file() else lambda name: _read_file(where / name)
    if layout == "py":
        pixels, labels, names = _python_batches(read, split, where)
    else:
        pixels, labels, names = _binary_batches(read, split, where)
    x = torch.from_numpy(pixels.reshape(-1, 3, SIDE, SIDE)).float()
    images, resampled = to_images(x, size, channels, f"--data {path}")
    return ImageSet(
        f"{path}:{split}",
        images,
        hflip,
        native_size=(SIDE, SIDE),
        resampled=resampled,
        targets=torch.from_numpy(labels.astype(np.int64)),
        classes=Classes(names),
    )


def _read_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise DataError(f"--data {path}: cannot read ({exc.strerror or exc})") from None


def _archive_reader(archive: Path) -> Callable[[str], bytes]:
    """Reads members of the archive by their file name, without extracting anything."""
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
            wanted = {name for names in (*PY_FILES.values(), *BIN_FILES.values()) for name in names}
            contents = {
                name: tar.extractfile(m).read()  # type: ignore[union-attr]
                for name, m in members.items()
                if name in wanted | {PY_META, BIN_META}
            }
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataError(f"--data {archive}: not a readable archive ({exc})") from None

    def read(name: str) -> bytes:
        if name not in contents:
            raise DataError(f"--data {archive}: the archive has no {name}")
        return contents[name]

    return read


# --- the python version: pickles, read by what they may contain -------------------------------
_NDARRAY = object()  # what a pickle gets for numpy.ndarray: usable only as the array to rebuild


def _reconstruct(subtype: Any, shape: Any, code: Any) -> np.ndarray:
    try:
        from numpy._core.multiarray import _reconstruct as numpy_reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct as numpy_reconstruct
    if subtype is not _NDARRAY:
        raise pickle.UnpicklingError("an array of another type than numpy.ndarray")
    return numpy_reconstruct(np.ndarray, shape, code)


def _uint8_dtype(obj: Any, align: bool = False, copy: bool = False) -> np.dtype:
    name = obj.decode("ascii", "replace") if isinstance(obj, bytes) else obj
    if name not in ("u1", "uint8"):
        raise pickle.UnpicklingError(f"an array of dtype {name!r} (CIFAR-10 holds uint8 only)")
    return np.dtype("u1", align, copy)


def _frombuffer(buffer: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    if np.dtype(dtype) != np.uint8:
        raise pickle.UnpicklingError(f"an array of dtype {dtype!r} (CIFAR-10 holds uint8 only)")
    return np.frombuffer(buffer, dtype=np.uint8).reshape(shape, order=order)


def _latin1(text: str, encoding: str = "latin1") -> bytes:
    if encoding != "latin1":
        raise pickle.UnpicklingError(f"text encoded as {encoding!r}")
    return text.encode("latin1")


_ALLOWED: dict[tuple[str, str], Callable[..., Any]] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "dtype"): _uint8_dtype,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,  # pickle protocol 5
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("_codecs", "encode"): _latin1,  # bytes in a protocol-2 pickle written by Python 3
}


class _BatchUnpickler(pickle.Unpickler):
    """Builds dicts, lists, bytes, numbers and uint8 arrays; refuses any other global."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("numpy", "ndarray"):
            return _NDARRAY
        found = _ALLOWED.get((module, name))
        if found is None:
            raise pickle.UnpicklingError(f"it asks for {module}.{name}")
        return found


def _unpickle(data: bytes, where: str) -> dict:
    try:
        loaded = _BatchUnpickler(io.BytesIO(data), encoding="bytes").load()
    except pickle.UnpicklingError as exc:
        raise DataError(f"--data {where}: not a CIFAR-10 batch ({exc}); nothing from it was run") from None
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError, MemoryError) as exc:
        raise DataError(f"--data {where}: not a readable CIFAR-10 batch ({type(exc).__name__}: {exc})") from None
    if not isinstance(loaded, dict):
        raise DataError(f"--data {where}: not a CIFAR-10 batch (it holds a {type(loaded).__name__}, not a dict)")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in loaded.items()}


def _python_batches(read: Callable[[str], bytes], split: str, where: Path) -> tuple[np.ndarray, np.ndarray, tuple]:
    meta = _unpickle(read(PY_META), f"{where}/{PY_META}")
    names = _class_names(meta.get("label_names"), f"{where}/{PY_META}")
    pixels, labels = [], []
    for name in PY_FILES[split]:
        batch = _unpickle(read(name), f"{where}/{name}")
        data, batch_labels = batch.get("data"), batch.get("labels")
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != PIXELS:
            raise DataError(f"--data {where}/{name}: its 'data' is not a uint8 array of {PIXELS} values per image")
        if not isinstance(batch_labels, list) or len(batch_labels) != len(data):
            raise DataError(f"--data {where}/{name}: its 'labels' are not a list of one label per image")
        pixels.append(data)
        labels.append(np.asarray(batch_labels, dtype=np.int64))
    return _checked(np.concatenate(pixels), np.concatenate(labels), names, where)


def _class_names(raw: Any, where: str) -> tuple[str, ...]:
    if not isinstance(raw, list) or not raw or not all(isinstance(n, (bytes, str)) for n in raw):
        raise DataError(f"--data {where}: its 'label_names' are not a list of names")
    return tuple(n.decode("utf-8", "replace") if isinstance(n, bytes) else n for n in raw)


# --- the binary version: one label byte and 3,072 pixel bytes per image ------------------------
def _binary_batches(read: Callable[[str], bytes], split: str, where: Path) -> tuple[np.ndarray, np.ndarray, tuple]:
    names = tuple(line.strip() for line in read(BIN_META).decode("utf-8", "replace").splitlines() if line.strip())
    pixels, labels = [], []
    for name in BIN_FILES[split]:
        raw = np.frombuffer(read(name), dtype=np.uint8)
        if raw.size == 0 or raw.size % (PIXELS + 1):
            raise DataError(f"--data {where}/{name}: its size is not a whole number of {PIXELS + 1}-byte records")
        records = raw.reshape(-1, PIXELS + 1)
        labels.append(records[:, 0].astype(np.int64))
        pixels.append(records[:, 1:])
    return _checked(np.concatenate(pixels), np.concatenate(labels), names, where)


def _checked(pixels: np.ndarray, labels: np.ndarray, names: tuple, where: Path) -> tuple:
    bad = labels[(labels < 0) | (labels >= len(names))]
    if len(bad):
        raise DataError(f"--data {where}: label {int(bad[0])} is outside [0, {len(names)}) ({len(names)} class names)")
    return np.ascontiguousarray(pixels), labels, names
