"""The command line: one thin file per command. Nothing in the library imports this package.

Exit codes, the same for every command: 0 success, 1 a check failed, 2 bad usage or input,
130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import inspect

import typer

from ganctl import __version__
from ganctl.cli.compare import compare
from ganctl.cli.evaluate import eval_command
from ganctl.cli.gradnorm import gradnorm
from ganctl.cli.sample import sample
from ganctl.cli.train import train

app = typer.Typer(
    name="ganctl",
    help="Train Wasserstein GANs and check whether the critic is really Lipschitz.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _paragraphs(doc: str | None) -> str:
    """A command's docstring as its help: each paragraph one line, for the help to wrap once at
    the terminal's width (the source's own line breaks would stay, and leave ragged lines)."""
    text = inspect.cleandoc(doc or "")
    return "\n\n".join(" ".join(line.strip() for line in part.splitlines()) for part in text.split("\n\n"))


for _name, _command in (
    ("train", train),
    ("sample", sample),
    ("gradnorm", gradnorm),
    ("eval", eval_command),
    ("compare", compare),
):
    app.command(name=_name, help=_paragraphs(_command.__doc__))(_command)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"ganctl {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Train Wasserstein GANs and check whether the critic is really Lipschitz."""


def main() -> None:
    app()
