"""Samples from a checkpoint's generator, and the files they are written to.

png          images: one grid; 2-D points: a scatter over the critic's value field
dir          images: a folder of PNGs, sample-00000.png ...
npy          the raw generator output, float32: (n, C, H, W) in [-1, 1] or (n, 2);
             with --interpolate K, (n, K, ...)
safetensors  the same tensor under the key "samples", with the checkpoint path, step and
             seed in the metadata
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file
from torch import Tensor

from ganctl import memory, streams
from ganctl.data import sample_shape
from ganctl.errors import ConfigError, WriteError
from ganctl.fileio import check_writable, write_atomic, write_error
from ganctl.nets.checkpoint import load
from ganctl.nets.networks import Networks, eval_mode
from ganctl.pictures import image_grid, save_image, scatter_over_field

FORMATS = ("png", "dir", "npy", "safetensors")
STREAMED = ("npy", "dir")  # written chunk by chunk as the samples are drawn
CHUNK = 1000  # samples a chunk: the latents drawn at once, and the generator's batch
SUFFIX_FORMATS = {".png": "png", ".npy": "npy", ".safetensors": "safetensors"}


def slerp(a: Tensor, b: Tensor, t: Tensor) -> Tensor:
    """Spherical interpolation between latent rows a and b at fractions t (K,): (n, K, z).
    Gaussian latents live near a sphere, where a straight line would pass through
    low-density points near the origin (White 2016)."""
    a_n, b_n = a / a.norm(dim=1, keepdim=True), b / b.norm(dim=1, keepdim=True)
    omega = torch.acos((a_n * b_n).sum(dim=1).clamp(-1.0, 1.0))[:, None, None]  # (n, 1, 1)
    t = t[None, :, None]
    so = torch.sin(omega)
    linear = (1.0 - t) * a[:, None] + t * b[:, None]
    spherical = (torch.sin((1.0 - t) * omega) * a[:, None] + torch.sin(t * omega) * b[:, None]) / so.clamp_min(1e-8)
    return torch.where(so > 1e-6, spherical, linear)


def class_index(nets: Networks, which: str) -> int:
    """--class: a class index or name of a conditional checkpoint."""
    names = nets.class_names
    if names is None:
        raise ConfigError(f"--class {which}: {nets.cfg.data}'s checkpoint was trained without --conditional")
    if which in names:
        return names.index(which)
    if which.lstrip("-").isdigit() and 0 <= int(which) < len(names):
        return int(which)
    shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
    raise ConfigError(
        f"--class {which}: not one of the checkpoint's {len(names)} classes (0 to {len(names) - 1}: {shown})"
    )


def sample_labels(nets: Networks, n: int, klass: int | None) -> Tensor | None:
    """The labels of n conditional samples: all `klass`, or cycling through the classes (a
    grid then has a row per class); None for an unconditional checkpoint."""
    if not nets.cfg.conditional:
        return None
    if klass is not None:
        return torch.full((n,), klass, dtype=torch.long, device=nets.device)
    return torch.arange(n, device=nets.device) % nets.cfg.num_classes


def check_count(n: int, interpolate: int = 0) -> None:
    if n <= 0:
        raise ConfigError(f"--n must be > 0, got {n}")
    if interpolate == 1 or interpolate < 0:
        raise ConfigError(f"--interpolate must be 0 (off) or at least 2, got {interpolate}")


@torch.no_grad()
def generate(
    nets: Networks, n: int, seed: int = 0, raw: bool = False, interpolate: int = 0, klass: int | None = None
) -> Tensor:
    """n samples (or n interpolation strips of `interpolate` samples, shape (n, K, ...))
    from the EMA generator unless `raw`, with latents from their own seeded stream; of class
    `klass`, or cycling through the classes, for a conditional checkpoint."""
    check_count(n, interpolate)
    count, values = n * max(1, interpolate), math.prod(sample_shape(nets.cfg))
    # The latents, the samples, their copy on the CPU and the file's (or the picture's) own.
    asked = f"--n {n}" + (f" --interpolate {interpolate}" if interpolate else "")
    memory.require(
        count * memory.FLOAT * (nets.cfg.z_dim + 3 * values), f"{asked}: {count:,} samples", str(nets.device)
    )
    if not interpolate:
        return torch.cat(list(sample_chunks(nets, n, seed, raw, klass)))
    rng = torch.Generator(device=nets.device)
    rng.manual_seed(seed)
    ends = nets.noise(2 * n, rng)
    t = torch.linspace(0.0, 1.0, interpolate, device=nets.device)
    z = slerp(ends[:n], ends[n:], t).reshape(n * interpolate, -1)
    labels = sample_labels(nets, n, klass)
    if labels is not None:
        labels = labels.repeat_interleave(interpolate)  # a strip stays in its class
    net = nets.generator if raw else nets.sampler
    with eval_mode(net):
        y = labels.split(CHUNK) if labels is not None else [None] * len(z.split(CHUNK))
        out = torch.cat([nets.generate(net, chunk, at).float() for chunk, at in zip(z.split(CHUNK), y)])
    return out.reshape(n, interpolate, *out.shape[1:])


def sample_chunks(
    nets: Networks, n: int, seed: int = 0, raw: bool = False, klass: int | None = None
) -> Iterator[Tensor]:
    """n samples in chunks of CHUNK, each chunk's latents drawn in turn from one stream seeded
    by `seed` (so the samples are the same whether they are kept or written as they come)."""
    rng = torch.Generator(device=nets.device)
    rng.manual_seed(seed)
    labels = sample_labels(nets, n, klass)
    net = nets.generator if raw else nets.sampler
    for start in range(0, n, CHUNK):
        z = nets.noise(min(CHUNK, n - start), rng)
        at = labels[start : start + len(z)] if labels is not None else None
        with eval_mode(net), torch.no_grad():
            yield nets.generate(net, z, at).float()


def stream_samples(
    nets: Networks, n: int, out: Path, fmt: str, draw: dict[str, Any], overwrite: bool = False
) -> list[Path]:
    """n samples written chunk by chunk as they are drawn (`draw`: seed, raw, klass), with
    memory bounded by a chunk: an .npy (float32, (n, ...)) or a folder of PNGs. The disk must
    have room for them, which is checked first."""

    shape = sample_shape(nets.cfg)
    if fmt == "dir" and len(shape) == 1:
        raise ConfigError("--format dir writes one PNG per image; 2-D points go to a .png scatter or a .npy")
    targets = [out] if fmt == "npy" else [out / f"sample-{i:05d}.png" for i in range(n)] if n <= MAX_LISTED else []
    memory.require_disk(n * math.prod(shape) * (memory.FLOAT if fmt == "npy" else 1), f"--n {n}: {n:,} samples", out)
    _check_targets(out, fmt, n, targets, overwrite)  # then the folder is made
    chunks = sample_chunks(nets, n, draw["seed"], draw["raw"], draw["klass"])
    try:
        if fmt == "npy":
            write_atomic(out, lambda tmp: _npy_from_chunks(tmp, chunks, (n, *shape)))
            return [out]
        written = []
        for chunk in chunks:
            for image in chunk.cpu().numpy():
                written.append(out / f"sample-{len(written):05d}.png")
                save_image(written[-1], image_grid(image[None], columns=1, pad=0))
        return written
    except OSError as exc:  # a disk that filled up while writing: exit 74, naming the file
        raise write_error(out, exc) from None


MAX_LISTED = 100_000  # a folder of more samples is not checked file by file for clashes


def _check_targets(out: Path, fmt: str, n: int, targets: list[Path], overwrite: bool) -> None:
    if fmt == "dir" and out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: exists and is not a folder")
    clash = [p for p in targets if p.exists()] or ([out] if fmt == "dir" and not targets and out.exists() else [])
    if clash and not overwrite:
        raise ConfigError(f"--out {clash[0]}: already exists; choose another --out or pass --overwrite")
    try:
        (out if fmt == "dir" else out.parent).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WriteError(out, exc.errno, exc.strerror or str(exc), "--out") from None
    check_writable(out, "--out", folder=fmt == "dir")  # before a sample is drawn


def _npy_from_chunks(path: Path, chunks: Iterator[Tensor], shape: tuple[int, ...]) -> None:
    array = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=shape)
    start = 0
    for chunk in chunks:
        array[start : start + len(chunk)] = chunk.cpu().numpy()
        start += len(chunk)
    array.flush()
    del array


def infer_format(out: Path, fmt: str | None) -> str:
    if fmt is not None:
        if fmt not in FORMATS:
            raise ConfigError(f"--format {fmt!r} is not one of: {', '.join(FORMATS)}")
        return fmt
    suffix = out.suffix.lower()
    if suffix in SUFFIX_FORMATS:
        return SUFFIX_FORMATS[suffix]
    if suffix:
        raise ConfigError(
            f"--out {out}: cannot tell the format from '{suffix}'; use .png, .npy, .safetensors,"
            " a folder name, or --format"
        )
    return "dir"


def write_samples(
    samples: Tensor, out: Path, fmt: str, nets: Networks, meta: dict[str, Any], overwrite: bool = False
) -> list[Path]:
    """Write `samples` (from `generate`) to `out`; return the files written."""

    out = Path(out)
    points = samples.shape[-1:] == (2,) and samples.ndim <= 3
    strips = samples.ndim == (3 if points else 5)
    if fmt == "dir" and points:
        raise ConfigError("--format dir writes one PNG per image; 2-D points go to a .png scatter or a .npy")
    count = samples.shape[0] * (samples.shape[1] if strips else 1)
    targets = [out] if fmt != "dir" else [out / f"sample-{i:05d}.png" for i in range(count)]
    _check_targets(out, fmt, count, targets, overwrite)

    array = samples.cpu().numpy().astype(np.float32)
    try:
        if fmt == "npy":
            write_atomic(out, lambda tmp: _save_npy(tmp, array))
        elif fmt == "safetensors":
            tensor = samples.detach().cpu().float().contiguous()
            metadata = {k: json.dumps(v) for k, v in meta.items()}
            write_atomic(out, lambda tmp: save_file({"samples": tensor}, str(tmp), metadata=metadata))
        elif fmt == "dir":
            flat = array.reshape(-1, *array.shape[(2 if strips else 1) :])
            for path, image in zip(targets, flat):
                save_image(path, image_grid(image[None], columns=1, pad=0))
        elif points:
            _draw_points(out, nets, torch.from_numpy(array.reshape(-1, 2)), meta)
        else:
            flat = array.reshape(-1, *array.shape[(2 if strips else 1) :])
            columns = array.shape[1] if strips else _columns(nets, len(flat), meta)
            save_image(out, image_grid(_by_class(nets, flat, meta) if not strips else flat, columns=columns))
    except OSError as exc:  # a disk that filled up while writing: exit 74, naming the file
        raise write_error(out, exc) from None
    return targets


def _columns(nets: Networks, n: int, meta: dict[str, Any]) -> int:
    """A square grid, or for samples cycling through the classes, a column per round."""
    if nets.cfg.conditional and meta.get("class") is None:
        return int(math.ceil(n / nets.cfg.num_classes))
    return int(math.ceil(math.sqrt(n)))


def _by_class(nets: Networks, flat: np.ndarray, meta: dict[str, Any]) -> np.ndarray:
    """Samples cycling through the classes (sample i is of class i mod K) laid out a row per
    class; a short row is padded with blank images so that the rows stay aligned."""
    if not nets.cfg.conditional or meta.get("class") is not None:
        return flat
    k = nets.cfg.num_classes
    per_row = int(math.ceil(len(flat) / k))
    blank = np.full_like(flat[0], -1.0)
    rows = [list(flat[c::k]) + [blank] * (per_row - len(flat[c::k])) for c in range(min(k, len(flat)))]
    return np.stack([image for row in rows for image in row])


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as fh:
        np.save(fh, array)


def _draw_points(out: Path, nets: Networks, fake: Tensor, meta: dict[str, Any]) -> None:
    rng = torch.Generator(device=nets.device)
    rng.manual_seed(int(meta.get("seed", 0)) + streams.SAMPLE_REAL)
    real = nets.dataset.sample(min(len(fake), 2000), rng, nets.device)
    title = f"{nets.cfg.data}  {nets.cfg.lipschitz}  step {nets.step}  ({len(fake)} samples)"
    draw_points(out, nets, real, fake.to(nets.device), title)


FIELD_RESOLUTION = 128


def plot_extent(real: torch.Tensor) -> tuple[float, float, float, float]:
    """A square view around the central 99.8 % of the real points, with a margin."""
    lo = torch.quantile(real.float().cpu(), 0.001, dim=0)
    hi = torch.quantile(real.float().cpu(), 0.999, dim=0)
    centre, half = (lo + hi) / 2, float((hi - lo).max()) / 2 * 1.35
    return (float(centre[0]) - half, float(centre[0]) + half, float(centre[1]) - half, float(centre[1]) + half)


def draw_points(
    path: Path | None,
    nets: Networks,
    real: torch.Tensor,
    fake: torch.Tensor,
    title: str,
    extent: tuple[float, float, float, float] | None = None,
) -> Image.Image:
    """Real and generated 2-D points over the critic's value field, as a PNG. A conditional
    critic's field is its largest value over the classes at each point (each class's critic
    rises near its own mode)."""
    xmin, xmax, ymin, ymax = extent = extent or plot_extent(real)
    xs = torch.linspace(xmin, xmax, FIELD_RESOLUTION, device=nets.device)
    ys = torch.linspace(ymin, ymax, FIELD_RESOLUTION, device=nets.device)
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1).reshape(-1, 2)
    if nets.cfg.conditional:
        values = [
            nets.critic_values(grid, torch.full((len(grid),), k, device=nets.device))
            for k in range(nets.cfg.num_classes)
        ]
        field = torch.stack(values).amax(dim=0).reshape(FIELD_RESOLUTION, FIELD_RESOLUTION)
    else:
        field = nets.critic_values(grid).reshape(FIELD_RESOLUTION, FIELD_RESOLUTION)
    return scatter_over_field(
        path, extent, real.cpu().numpy(), fake.cpu().numpy(), field.cpu().numpy().astype(np.float64), title
    )


# --- ganctl.sample --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Samples:
    """What `sample` drew: the samples (None when they were written chunk by chunk as drawn,
    never held), their shape, the files written, and where they came from."""

    samples: Tensor | None
    shape: tuple[int, ...]
    files: list[Path]
    source: dict[str, Any]  # checkpoint, step, seed, raw, generator ("ema" | "raw"), class

    def to_dict(self) -> dict[str, Any]:
        return {**self.source, "shape": list(self.shape), "files": len(self.files)}


def sample(
    checkpoint: str | Path,
    *,
    n: int = 64,
    seed: int = 0,
    raw: bool = False,
    interpolate: int = 0,
    klass: str | int | None = None,
    out: str | Path | None = None,
    fmt: str | None = None,
    overwrite: bool = False,
    device: str = "cpu",
) -> Samples:
    """n samples of a checkpoint's generator (a run folder's newest checkpoint, or a file): the
    EMA generator unless `raw`; with `interpolate` K, n strips of K samples along spherical paths
    between two latents; of one class of a conditional generator (`klass`, by name or index),
    else cycling through the classes. With `out`, they are written there as the format says
    (`fmt`, or the suffix: a .png grid or scatter, a folder of PNGs, .npy, .safetensors; an
    .npy or a folder chunk by chunk as they are drawn, so any n fits), never over a file that
    exists unless `overwrite`.

    This is `ganctl sample`: the command parses its options, calls this, and prints the result."""

    kind = infer_format(Path(out), fmt) if out is not None else None  # bad --out or --format: before loading
    check_count(n, interpolate)
    nets = load(checkpoint, device=device)
    index = class_index(nets, str(klass)) if klass is not None else None
    source = {
        "checkpoint": str(nets.path),
        "step": nets.step,
        "seed": seed,
        "raw": raw,
        "generator": "raw" if raw or nets.ema is None else "ema",
        "class": nets.class_names[index] if index is not None else None,
    }
    if kind in STREAMED and not interpolate:  # chunk by chunk: memory bounded whatever n
        written = stream_samples(nets, n, Path(out), kind, {"seed": seed, "raw": raw, "klass": index}, overwrite)
        return Samples(None, (n, *sample_shape(nets.cfg)), written, {**source, "format": kind, "out": str(out)})
    drawn = generate(nets, n, seed=seed, raw=raw, interpolate=interpolate, klass=index)
    if out is None:
        return Samples(drawn, tuple(drawn.shape), [], source)
    written = write_samples(drawn, Path(out), kind, nets, source, overwrite=overwrite)
    return Samples(drawn, tuple(drawn.shape), written, {**source, "format": kind, "out": str(out)})
