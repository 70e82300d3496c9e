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
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ganctl import streams
from ganctl.errors import ConfigError
from ganctl.fileio import write_atomic
from ganctl.networks import Networks, eval_mode

FORMATS = ("png", "dir", "npy", "safetensors")
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


@torch.no_grad()
def generate(nets: Networks, n: int, seed: int = 0, raw: bool = False, interpolate: int = 0) -> Tensor:
    """n samples (or n interpolation strips of `interpolate` samples, shape (n, K, ...))
    from the EMA generator unless `raw`, with latents from their own seeded stream."""
    if n <= 0:
        raise ConfigError(f"--n must be > 0, got {n}")
    if interpolate == 1 or interpolate < 0:
        raise ConfigError(f"--interpolate must be 0 (off) or at least 2, got {interpolate}")
    rng = torch.Generator(device=nets.device)
    rng.manual_seed(seed)
    if interpolate:
        ends = nets.noise(2 * n, rng)
        t = torch.linspace(0.0, 1.0, interpolate, device=nets.device)
        z = slerp(ends[:n], ends[n:], t).reshape(n * interpolate, -1)
    else:
        z = nets.noise(n, rng)
    net = nets.generator if raw else nets.sampler
    with eval_mode(net):
        out = torch.cat([net(chunk).float() for chunk in z.split(1000)])
    return out.reshape(n, interpolate, *out.shape[1:]) if interpolate else out


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
    from ganctl.render import image_grid, save_image

    out = Path(out)
    points = samples.shape[-1:] == (2,) and samples.ndim <= 3
    strips = samples.ndim == (3 if points else 5)
    if fmt == "dir" and points:
        raise ConfigError("--format dir writes one PNG per image; 2-D points go to a .png scatter or a .npy")
    targets = [out] if fmt != "dir" else []
    if fmt == "dir":
        if out.exists() and not out.is_dir():
            raise ConfigError(f"--out {out}: exists and is not a folder")
        count = samples.shape[0] * (samples.shape[1] if strips else 1)
        targets = [out / f"sample-{i:05d}.png" for i in range(count)]
    clash = [p for p in targets if p.exists()]
    if clash and not overwrite:
        raise ConfigError(f"--out {clash[0]}: already exists; choose another --out or pass --overwrite")
    try:
        (out if fmt == "dir" else out.parent).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--out {out}: cannot create it ({exc.strerror or exc})") from None

    array = samples.cpu().numpy().astype(np.float32)
    try:
        if fmt == "npy":
            write_atomic(out, lambda tmp: _save_npy(tmp, array))
        elif fmt == "safetensors":
            from safetensors.torch import save_file

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
            columns = array.shape[1] if strips else int(math.ceil(math.sqrt(len(flat))))
            save_image(out, image_grid(flat, columns=columns))
    except OSError as exc:
        raise ConfigError(f"--out {out}: cannot write ({exc.strerror or exc})") from None
    return targets


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as fh:
        np.save(fh, array)


def _draw_points(out: Path, nets: Networks, fake: Tensor, meta: dict[str, Any]) -> None:
    from ganctl.evaluation import draw_points

    rng = torch.Generator(device=nets.device)
    rng.manual_seed(int(meta.get("seed", 0)) + streams.SAMPLE_REAL)
    real = nets.dataset.sample(min(len(fake), 2000), rng, nets.device)
    title = f"{nets.cfg.data}  {nets.cfg.lipschitz}  step {nets.step}  ({len(fake)} samples)"
    draw_points(out, nets, real, fake.to(nets.device), title)
