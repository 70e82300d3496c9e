"""`ganctl sample`: images, points or raw tensors from a checkpoint's generator."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ganctl.cli.options import MEASURE_DEVICE, Device, Json, N, Overwrite, Raw, Seed, Threads, escape
from ganctl.cli.output import handle_errors, print_json, say


@handle_errors
def sample(
    checkpoint: Annotated[
        Path,
        typer.Argument(
            help="A checkpoint file or a run folder (its latest checkpoint).", show_default=False, metavar="CKPT_OR_RUN"
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out", help="samples.png (grid or 2-D scatter), a folder (one PNG per image), .npy or .safetensors."
        ),
    ],
    n: N = 64,
    fmt: Annotated[
        str | None,
        typer.Option(
            "--format", help=escape("png | dir | npy | safetensors. [default: from --out]"), show_default=False
        ),
    ] = None,
    seed: Seed = 0,
    raw: Raw = False,
    interpolate: Annotated[
        int,
        typer.Option("--interpolate", help="K > 1: n strips of K samples along spherical paths between two latents."),
    ] = 0,
    klass: Annotated[
        str | None,
        typer.Option(
            "--class",
            help=escape(
                "A conditional checkpoint's class, by index or name. [default: every class in turn, a grid row each]"
            ),
            show_default=False,
        ),
    ] = None,
    device: Device = None,
    threads: Threads = None,
    overwrite: Overwrite = False,
    json_output: Json = False,
) -> None:
    """Draw samples from a checkpoint's generator (the EMA one unless --raw).

    --n samples (default 64), or with --interpolate K, --n strips of K samples each.
    """
    from ganctl.data import sample_shape
    from ganctl.devices import threads as cpu_threads
    from ganctl.nets import sampling
    from ganctl.nets.checkpoint import load

    kind = sampling.infer_format(out, fmt)  # bad --out, --format or --n fails before loading anything
    sampling.check_count(n, interpolate)
    nets = load(checkpoint, device=device or MEASURE_DEVICE)
    index = sampling.class_index(nets, klass) if klass is not None else None
    meta = {
        "checkpoint": str(nets.path),
        "step": nets.step,
        "seed": seed,
        "raw": raw,
        "generator": "raw" if raw or nets.ema is None else "ema",
        "class": nets.class_names[index] if index is not None else None,
    }
    with cpu_threads(threads):
        if kind in sampling.STREAMED and not interpolate:  # chunk by chunk: memory bounded whatever --n
            draw = {"seed": seed or 0, "raw": raw, "klass": index}
            written = sampling.stream_samples(nets, n, out, kind, draw, overwrite=overwrite)
            shape = [n, *sample_shape(nets.cfg)]
        else:
            samples = sampling.generate(nets, n, seed=seed or 0, raw=raw, interpolate=interpolate, klass=index)
            written = sampling.write_samples(samples, out, kind, nets, meta, overwrite=overwrite)
            shape = list(samples.shape)
    summary = {**meta, "format": kind, "shape": shape, "out": str(out), "files": len(written)}
    if json_output:
        print_json(summary)
    shown = out if kind != "dir" else f"{out}/ ({len(written)} files)"
    say(f"{summary['generator']} generator, step {nets.step}: {tuple(shape)} -> {shown}")
