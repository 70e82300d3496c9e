"""The decoded pixels of an image folder, kept as safetensors in the cache folder
(`ganctl.cache`), keyed by a SHA-256 of every file's relative path and bytes plus the size and
channel settings: a second run reads them instead of decoding, any change to the files makes a
new entry, and a damaged entry is decoded again."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor

from ganctl.fileio import atomic_path

CACHE_FORMAT = "ganctl.image-cache/3"


def folder_key(root: Path, files: list[Path], size: int, channels: int) -> str:
    h = hashlib.sha256(f"{CACHE_FORMAT} size={size} channels={channels}".encode())
    for path in files:
        h.update(str(path.relative_to(root)).encode("utf-8", "surrogateescape") + b"\0")
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:32]


def read_decoded(path: Path) -> tuple[Tensor, list[str], list[int]] | None:
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            if meta.get("format") != CACHE_FORMAT:
                return None
            return f.get_tensor("images"), json.loads(meta.get("skipped", "[]")), json.loads(meta["kept"])
    except (SafetensorError, OSError, ValueError, KeyError):
        return None  # a damaged cache entry is simply rebuilt


def write_decoded(path: Path, images: Tensor, root: Path, skipped: list[str], kept: list[int]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"format": CACHE_FORMAT, "source": str(root), "skipped": json.dumps(skipped), "kept": json.dumps(kept)}
        with atomic_path(path) as tmp:
            save_file({"images": images.contiguous()}, str(tmp), metadata=meta)
    except OSError:
        pass  # the cache is an optimisation; an unwritable cache folder costs a re-decode
