"""Image data: a folder of image files or an `.npy`/`.npz` array, decoded once into a uint8
tensor (N, C, H, W) that is kept on the training device when it fits.

Folders are read recursively (png, jpg, jpeg, webp, bmp). Each image is converted to RGB or
grayscale and kept at its own size when every image shares one square size and no
`--image-size` is given (published image metrics are computed at the data's native
resolution); otherwise its shorter side is resized to the image size (Lanczos) and
centre-cropped, and the set records that it was resampled. The decoded tensor is cached as
safetensors in the cache folder (`ganctl.cache`), keyed by a SHA-256 of every file's relative
path and bytes plus the size and channel settings, so a second run reads the cache instead of
decoding, and any change to the files makes a new entry.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from ganctl import cache, memory
from ganctl.data.source import Classes, Judge, Mixture, unlabelled
from ganctl.errors import DataError
from ganctl.fileio import atomic_path

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
CACHE_FORMAT = "ganctl.image-cache/3"
MAX_DEVICE_SHARE = 0.25  # keep the data on a GPU when it takes at most this share of its memory


@dataclass
class ImageSet:
    """uint8 images (N, C, H, W) held in memory (a `DataSource` of finite length); batches are
    floats in [-1, 1], optionally flipped. `native_size` is the images' own (H, W) when they
    all shared one, and `resampled` whether any was resized to get here."""

    name: str
    images: Tensor
    hflip: bool = False
    skipped: tuple[str, ...] = ()  # files that could not be decoded
    cache: str | None = None
    native_size: tuple[int, int] | None = None
    resampled: bool = False
    targets: Tensor | None = field(default=None, repr=False)  # (N,) int64 labels, where the source has classes
    classes: Classes | None = None
    kind: str = "images"
    mixture: Mixture | None = None
    judge: Judge | None = None
    _fingerprint: str | None = field(default=None, repr=False)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.images.shape[1:])

    @property
    def length(self) -> int | None:
        return len(self.images)

    def __len__(self) -> int:
        return len(self.images)

    def fingerprint(self) -> str:
        """A SHA-256 of the decoded pixels (shape and bytes): the identity of this real set, for
        cached statistics. Computed once."""
        if self._fingerprint is None:
            pixels = self.images.detach().cpu().contiguous()
            h = hashlib.sha256(f"{tuple(pixels.shape)}".encode())
            h.update(pixels.numpy().tobytes())
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def chunks(self, n: int, generator: torch.Generator, size: int) -> Iterator[Tensor]:
        """n images in [-1, 1] (no flips), in chunks of `size`: all of them in order when n is at
        least the set's size, else a random subset drawn with `generator` (CPU)."""
        idx = torch.arange(len(self)) if n >= len(self) else torch.randperm(len(self), generator=generator)[:n]
        for part in idx.split(size):
            yield self.images[part.to(self.images.device)].float().div_(127.5).sub_(1.0)

    @property
    def description(self) -> str:
        n, c, h, w = self.images.shape
        return f"{n} images, {c} x {h} x {w}, from {self.name}"

    def to(self, device: torch.device) -> ImageSet:
        """Move the images to `device` when they fit comfortably; otherwise keep them on the
        CPU (pinned on CUDA) and move each batch."""
        if device.type == "cuda":
            free, total = torch.cuda.mem_get_info(device)
            if self.images.numel() > MAX_DEVICE_SHARE * total:
                self.images = self.images.pin_memory()
                return self
        if device.type != "cpu":
            self.images = self.images.to(device)
        return self

    def sample(self, n: int, generator: torch.Generator, device: torch.device | str) -> Tensor:
        device = torch.device(device)
        return self._batch(torch.randint(len(self.images), (n,), generator=generator, device=device), generator)

    def _batch(self, idx: Tensor, generator: torch.Generator) -> Tensor:
        """Images idx in [-1, 1] on idx's device, flipped at random with --hflip."""
        device = idx.device
        batch = self.images[idx.to(self.images.device)].to(device, non_blocking=True)
        x = batch.float().div_(127.5).sub_(1.0)
        if self.hflip:
            flip = torch.rand(len(idx), generator=generator, device=device) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        return x

    def _labels(self) -> Tensor:
        if self.targets is None:
            raise unlabelled(self)
        return self.targets

    def labels_of(self, idx: Tensor) -> Tensor:
        return self._labels().to(idx.device)[idx]

    def sample_labelled(self, n: int, generator: torch.Generator, device: torch.device | str) -> tuple[Tensor, Tensor]:
        idx = torch.randint(len(self.images), (n,), generator=generator, device=torch.device(device))
        return self._batch(idx, generator), self.labels_of(idx)

    def labels(self, n: int, generator: torch.Generator, device: torch.device | str) -> Tensor:
        return self.sample_labelled(n, generator, device)[1]

    def sample_of(self, labels: Tensor, generator: torch.Generator, device: torch.device | str) -> Tensor:
        """For each label, one of the set's images of that class, uniformly."""
        order, start, count = self._classes_index()
        device = torch.device(device)
        y = labels.to("cpu")
        pick = (torch.rand(len(y), generator=generator, device=device).cpu() * count[y]).long()
        return self._batch(order[start[y] + pick.clamp_max(count[y] - 1)].to(device), generator)

    def _classes_index(self) -> tuple[Tensor, Tensor, Tensor]:
        """Image indices sorted by class, each class's first position and its count (CPU)."""
        labels = self._labels().cpu()
        order = torch.argsort(labels, stable=True)
        count = torch.bincount(labels, minlength=self.classes.count)
        start = torch.cumsum(count, 0) - count
        return order, start, count

    def class_chunks(self, label: int, n: int, generator: torch.Generator, size: int) -> Iterator[Tensor]:
        """The class's images (a random n of them when it has more), in chunks, in [-1, 1]."""
        idx = (self._labels().cpu() == label).nonzero().squeeze(1)
        if len(idx) > n:
            idx = idx[torch.randperm(len(idx), generator=generator)[:n]]
        for part in idx.split(size):
            yield self.images[part.to(self.images.device)].float().div_(127.5).sub_(1.0)


# --- folders ------------------------------------------------------------------------
def _list_images(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _decode(path: Path, size: int, channels: int) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        im = im.convert("RGB" if channels == 3 else "L")
    w, h = im.size
    if w == 0 or h == 0:
        raise OSError("zero-size image")
    if (w, h) != (size, size):  # an image at the wanted size is kept exactly as it is
        scale = size / min(w, h)
        nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
        im = im.resize((nw, nh), Image.Resampling.LANCZOS)
        left, top = (nw - size) // 2, (nh - size) // 2
        im = im.crop((left, top, left + size, top + size))
    arr = np.asarray(im, dtype=np.uint8)
    return arr[None] if channels == 1 else arr.transpose(2, 0, 1)


GREY_MODES = ("1", "L", "LA", "I", "I;16", "F")  # pillow's modes of single-channel images


def _headers(files: list[Path]) -> dict[Path, tuple[tuple[int, int], str]]:
    """((width, height), mode) of every file whose header pillow can read (the rest are
    reported when decoding fails)."""
    from PIL import Image

    found = {}
    for path in files:
        try:
            with Image.open(path) as im:
                found[path] = (im.size, im.mode)
        except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError):
            continue
    return found


def native_side(root: Path, sizes: dict[Path, tuple[int, int]], flag: str = "--data") -> int:
    """The side every image of the folder shares, or one line naming two files that differ
    (or a non-square one) and asking for --image-size."""
    if not sizes:
        return 0  # nothing readable: decoding says so, file by file
    first, (w, h) = next(iter(sizes.items()))
    other = next(((p, s) for p, s in sizes.items() if s != (w, h)), None)
    if other is not None:
        raise DataError(
            f"{flag} {root}: the images differ in size ({first.name} is {w} x {h}, {other[0].name} is"
            f" {other[1][0]} x {other[1][1]}); give --image-size N to resize and centre-crop them all to N x N"
        )
    if w != h:
        raise DataError(
            f"{flag} {root}: the images are {w} x {h}, not square; give --image-size N to resize and centre-crop"
            " them to N x N"
        )
    return w


def _folder_key(root: Path, files: list[Path], size: int, channels: int) -> str:
    h = hashlib.sha256(f"{CACHE_FORMAT} size={size} channels={channels}".encode())
    for path in files:
        h.update(str(path.relative_to(root)).encode("utf-8", "surrogateescape") + b"\0")
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:32]


def folder_classes(root: Path, files: list[Path]) -> tuple[tuple[str, ...], list[int], list[str]] | None:
    """torchvision's ImageFolder layout: when every image lies inside a sub-folder of `root`,
    the sub-folders are the classes (sorted by name) and each image's label is its folder's.
    Returns (names, one label per file, the sub-folders holding no image), or None."""
    parts = [p.relative_to(root).parts for p in files]
    if any(len(x) < 2 for x in parts):
        return None  # an image at the top level: not the class layout
    names = tuple(sorted({x[0] for x in parts}))
    index = {name: i for i, name in enumerate(names)}
    empty = sorted(d.name for d in root.iterdir() if d.is_dir() and d.name not in index and not d.name.startswith("."))
    return names, [index[x[0]] for x in parts], empty


def load_folder(
    root: Path,
    size: int | None,
    channels: int | None,
    hflip: bool = False,
    use_cache: bool = True,
    flag: str = "--data",
    conditional: bool = False,
) -> ImageSet:
    """Every image under `root`, at `size` (None: the size they all share), with `channels`
    channels (None: 1 when every image is grayscale, else 3). In the ImageFolder layout the
    sub-folders are classes; with `conditional`, a class folder without images is an error."""
    if not root.is_dir():
        raise DataError(f"{flag} {root}: no such folder or file")
    files = _list_images(root)
    if not files:
        raise DataError(f"{flag} {root}: no images found (looked recursively for {', '.join(IMAGE_SUFFIXES)})")
    headers = _headers(files)
    sizes = {path: wh for path, (wh, _) in headers.items()}
    if channels is None:
        grey = headers and all(mode in GREY_MODES for _, mode in headers.values())
        channels = 1 if grey else 3
    native = native_side(root, sizes, flag) if size is None else None
    size = size or native
    uniform = set(sizes.values())
    native_size = next(iter(uniform))[::-1] if len(uniform) == 1 else None  # (H, W)
    resampled = any(s != (size, size) for s in sizes.values())
    layout = folder_classes(root, files)
    if conditional and layout is not None and layout[2]:
        raise DataError(f"{flag} {root}: class folder {layout[2][0]} has no images (each sub-folder is a class)")
    # Decoded one by one, then stacked: two copies of the uint8 pixels at once.
    memory.require(
        2 * len(files) * channels * size * size,
        f"{flag} {root} at {size} x {size}: {len(files)} images of {channels} x {size} x {size}",
    )
    key = _folder_key(root, files, size, channels)
    cached = cache.path("images", key)
    loaded = _read_cache(cached) if use_cache and cached.exists() else None
    if loaded is None:
        images, skipped, kept = _decode_all(root, files, size, channels, flag)
        if use_cache:
            _write_cache(cached, images, root, skipped, kept)
    else:
        images, skipped, kept = loaded
    targets = torch.tensor([layout[1][i] for i in kept]) if layout is not None else None
    return ImageSet(
        str(root),
        images,
        hflip,
        tuple(skipped),
        str(cached) if use_cache else None,
        native_size,
        resampled,
        targets=targets,
        classes=Classes(layout[0]) if layout is not None else None,
    )


def _decode_all(
    root: Path, files: list[Path], size: int, channels: int, flag: str
) -> tuple[Tensor, list[str], list[int]]:
    """The decoded images, the files skipped (and why), and the indices of those kept."""
    from PIL import Image

    unreadable = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)
    arrays, skipped, kept = [], [], []
    for i, path in enumerate(files):
        try:
            arrays.append(_decode(path, size, channels))
            kept.append(i)
        except unreadable as exc:  # what pillow raises for truncated, empty or hostile files
            skipped.append(f"{path} ({type(exc).__name__}: {exc})")
    if not arrays:
        raise DataError(f"{flag} {root}: none of its {len(files)} image files could be read; first: {skipped[0]}")
    return torch.from_numpy(np.stack(arrays)), skipped, kept


def _read_cache(path: Path) -> tuple[Tensor, list[str], list[int]] | None:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            if meta.get("format") != CACHE_FORMAT:
                return None
            return f.get_tensor("images"), json.loads(meta.get("skipped", "[]")), json.loads(meta["kept"])
    except (SafetensorError, OSError, ValueError, KeyError):
        return None  # a damaged cache entry is simply rebuilt


def _write_cache(path: Path, images: Tensor, root: Path, skipped: list[str], kept: list[int]) -> None:
    from safetensors.torch import save_file

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"format": CACHE_FORMAT, "source": str(root), "skipped": json.dumps(skipped), "kept": json.dumps(kept)}
        with atomic_path(path) as tmp:
            save_file({"images": images.contiguous()}, str(tmp), metadata=meta)
    except OSError:
        pass  # the cache is an optimisation; an unwritable cache folder costs a re-decode


# --- arrays -----------------------------------------------------------------------------
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
    from safetensors import SafetensorError, safe_open

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
    import zipfile

    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors import safe_open

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


def folder_side(root: Path) -> int | None:
    """The side every image of a folder shares, from the files' headers (None when there is
    none readable); images of two sizes are refused as `load_folder` refuses them."""
    return native_side(root, {p: wh for p, (wh, _) in _headers(_list_images(root)).items()}) or None


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


def to_images(x: Tensor, size: int | None, channels: int | None, where: str) -> tuple[Tensor, bool]:
    """Pixels (N, C, H, W) on the 0-255 scale as uint8 images with `channels` channels (None:
    their own) and side `size` (None: their own, which must then be square): centre-cropped
    square and resized with antialiasing when it differs. Also whether they were resampled."""
    c = channels or x.shape[1]
    if size is not None:  # the float copy, resized, beside the pixels as read
        memory.require(
            len(x) * c * size * size * memory.FLOAT + x.numel() * memory.FLOAT, f"{where} at {size} x {size}"
        )
    if c == 1 and x.shape[1] == 3:  # ITU-R 601 luma, as pillow's convert("L")
        x = (x * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(dim=1, keepdim=True)
    elif c == 3 and x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    h, w = x.shape[-2:]
    resampled = size is not None and (h, w) != (size, size)
    if resampled:
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        x = x[..., top : top + side, left : left + side]
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    elif h != w:
        raise DataError(f"{where}: images are {h} x {w}; give --image-size to crop them square")
    return x.round().clamp(0, 255).to(torch.uint8).contiguous(), resampled
