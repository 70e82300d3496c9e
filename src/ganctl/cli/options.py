"""Options shared by several commands, so that they read the same everywhere."""

from __future__ import annotations

from typing import Annotated

import typer

SEED_HELP = "Random seed; the same seed on CPU gives the same numbers."
DEVICE_HELP = "auto | cpu | cuda | cuda:N | mps."

Device = Annotated[str | None, typer.Option("--device", help=DEVICE_HELP)]
Json = Annotated[
    bool, typer.Option("--json", help="Print one JSON object on stdout at the end; progress stays on stderr.")
]
