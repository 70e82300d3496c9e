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
    # Imported when the command runs: `ganctl --help` must not import torch.
    from ganctl.devices import threads as cpu_threads
    from ganctl.nets.sampling import sample as draw

    with cpu_threads(threads):
        found = draw(
            checkpoint,
            n=n,
            seed=seed or 0,
            raw=raw,
            interpolate=interpolate,
            klass=klass,
            out=out,
            fmt=fmt,
            overwrite=overwrite,
            device=device or MEASURE_DEVICE,
        )
    summary = found.to_dict()
    if json_output:
        print_json(summary)
    shown = out if summary["format"] != "dir" else f"{out}/ ({len(found.files)} files)"
    say(f"{summary['generator']} generator, step {summary['step']}: {found.shape} -> {shown}")
