"""`ganctl sample`: images, points or raw tensors from a checkpoint's generator."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ganctl.cli.options import DEVICE_HELP, Json
from ganctl.cli.output import handle_errors, print_json, stderr


@handle_errors
def sample(
    checkpoint: Annotated[
        Path, typer.Argument(help="A checkpoint file or a run folder (its latest checkpoint).", show_default=False)
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out", help="samples.png (grid or 2-D scatter), a folder (one PNG per image), .npy or .safetensors."
        ),
    ],
    n: Annotated[int, typer.Option("--n", help="Samples (with --interpolate: strips).")] = 64,
    fmt: Annotated[
        str | None,
        typer.Option("--format", help="png | dir | npy | safetensors. (default: from --out)", show_default=False),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the latents.")] = 0,
    raw: Annotated[bool, typer.Option("--raw", help="Use the raw generator instead of the EMA one.")] = False,
    interpolate: Annotated[
        int,
        typer.Option("--interpolate", help="K > 1: n strips of K samples along spherical paths between two latents."),
    ] = 0,
    device: Annotated[
        str | None, typer.Option("--device", help=f"{DEVICE_HELP} (default: cpu)", show_default=False)
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace existing output files.")] = False,
    json_output: Json = False,
) -> None:
    """Draw samples from a checkpoint's generator (the EMA one unless --raw)."""
    from ganctl.checkpoint import load
    from ganctl.sampling import generate, infer_format, write_samples

    kind = infer_format(out, fmt)  # bad --out or --format fails before loading anything
    nets = load(checkpoint, device=device or "cpu")
    samples = generate(nets, n, seed=seed, raw=raw, interpolate=interpolate)
    meta = {
        "checkpoint": str(nets.path),
        "step": nets.step,
        "seed": seed,
        "raw": raw,
        "generator": "raw" if raw or nets.ema is None else "ema",
    }
    written = write_samples(samples, out, kind, nets, meta, overwrite=overwrite)
    summary = {**meta, "format": kind, "shape": list(samples.shape), "out": str(out), "files": len(written)}
    if json_output:
        print_json(summary)
    shown = out if kind != "dir" else f"{out}/ ({len(written)} files)"
    stderr.print(
        f"{summary['generator']} generator, step {nets.step}: {tuple(samples.shape)} -> {shown}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
