"""A folder of image files as an `ImageSet`.

Folders are read recursively (png, jpg, jpeg, webp, bmp). Each image is converted to RGB or
grayscale and kept at its own size when every image shares one square size and no
`--image-size` is given (published image metrics are computed at the data's native
resolution); otherwise its shorter side is resized to the image size (Lanczos) and
centre-cropped, and the set records that it was resampled. In the ImageFolder layout the
sub-folders are the classes. Files that cannot be decoded are skipped and named; the decoded
pixels are kept in the cache (`ganctl.data.decoded`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from ganctl import cache, memory, progress
from ganctl.data.decoded import folder_key, read_decoded, write_decoded
from ganctl.data.images import ImageSet
from ganctl.data.source import Classes
from ganctl.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


# --- folders ------------------------------------------------------------------------
def _list_images(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _decode(path: Path, size: int, channels: int) -> np.ndarray:
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
    key = folder_key(root, files, size, channels)
    cached = cache.path("images", key)
    loaded = read_decoded(cached) if use_cache and cached.exists() else None
    if loaded is None:
        images, skipped, kept = _decode_all(root, files, size, channels, flag)
        if use_cache:
            write_decoded(cached, images, root, skipped, kept)
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
    """The decoded images, the files skipped (and why), and the indices of those kept (each file
    reported as decoded: a folder of tens of thousands takes minutes the first time)."""
    unreadable = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)
    arrays, skipped, kept = [], [], []
    for i, path in progress.counted(enumerate(files), f"decoding the images of {root}", len(files), lambda _: 1):
        try:
            arrays.append(_decode(path, size, channels))
            kept.append(i)
        except unreadable as exc:  # what pillow raises for truncated, empty or hostile files
            skipped.append(f"{path} ({type(exc).__name__}: {exc})")
    if not arrays:
        raise DataError(f"{flag} {root}: none of its {len(files)} image files could be read; first: {skipped[0]}")
    return torch.from_numpy(np.stack(arrays)), skipped, kept


def folder_side(root: Path) -> int | None:
    """The side every image of a folder shares, from the files' headers (None when there is
    none readable); images of two sizes are refused as `load_folder` refuses them."""
    return native_side(root, {p: wh for p, (wh, _) in _headers(_list_images(root)).items()}) or None
