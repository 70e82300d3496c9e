"""Options shared by the commands, declared once so that they read the same everywhere (each
command's description says what its --n counts and its defaults)."""

from __future__ import annotations

from typing import Annotated

import typer

from ganctl.config import default

SEED_HELP = f"Random seed (default: {default('seed')}); the same seed on the CPU gives the same numbers."
DEVICES = "auto | cpu | cuda | cuda:N | mps"
MEASURE_DEVICE = "cpu"  # where the measuring commands run unless told: the same numbers on any machine

Seed = Annotated[int | None, typer.Option("--seed", help=SEED_HELP, show_default=False)]
# Training (train, compare) defaults to the config's device; measuring (sample, gradnorm, eval) to the CPU.
TrainDevice = Annotated[
    str | None, typer.Option("--device", help=f"{DEVICES} (default: {default('device')})", show_default=False)
]
Device = Annotated[
    str | None, typer.Option("--device", help=f"{DEVICES} (default: {MEASURE_DEVICE})", show_default=False)
]
N = Annotated[int | None, typer.Option("--n", help="Number of samples (see the description).", show_default=False)]
Raw = Annotated[bool, typer.Option("--raw", help="The raw generator instead of its EMA.")]
Json = Annotated[
    bool, typer.Option("--json", help="Print one JSON object on stdout at the end; progress stays on stderr.")
]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace what --out already holds.")]
