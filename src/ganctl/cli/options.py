"""Options shared by several commands, so that they read the same everywhere."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

Seed = Annotated[Optional[int], typer.Option("--seed", help="Random seed; the same seed on CPU gives the same numbers.")]
Device = Annotated[Optional[str], typer.Option("--device", help="auto | cpu | cuda | cuda:N | mps.")]
Json = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout at the end; progress stays on stderr.")]
Out = Annotated[Optional[Path], typer.Option("--out", help="Output folder.")]
