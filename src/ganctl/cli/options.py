"""Options shared by the commands, declared once so that they read the same everywhere (each
command's description says what its --n counts and its defaults).

The settings of a run are declared once, in `ganctl.config` (each field's `setting`): `with_settings`
gives a command an option for each of them, with that help and the default `resolve` applies,
so `train` and `compare` take the same flags with the same types and messages.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Annotated, Any

import typer

from ganctl.config import default, described, field_names, field_type, flags_of, load_toml
from ganctl.methods.help import describe_default
from ganctl.methods.registry import available_methods

SEED_HELP = f"{described('seed')['help']} [default: {default('seed')}]"
DEVICES = "auto | cpu | cuda | cuda:N | mps"
MEASURE_DEVICE = "cpu"  # where the measuring commands run unless told: the same numbers on any machine

Seed = Annotated[int | None, typer.Option("--seed", help=SEED_HELP, show_default=False)]
# Training (train, compare) takes --device as a setting; measuring (sample, gradnorm, eval) defaults to the CPU.
Device = Annotated[
    str | None, typer.Option("--device", help=f"{DEVICES}. [default: {MEASURE_DEVICE}]", show_default=False)
]
Threads = Annotated[
    int | None,
    typer.Option(
        "--threads",
        help="CPU threads for the measuring (0: torch's own; one each for several side by side). [default: 0]",
        show_default=False,
    ),
]
N = Annotated[int | None, typer.Option("--n", help="Number of samples (see the description).", show_default=False)]
Raw = Annotated[bool, typer.Option("--raw", help="The raw generator instead of its EMA.")]
Json = Annotated[
    bool, typer.Option("--json", help="Print one JSON object on stdout at the end; progress stays on stderr.")
]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace what --out already holds.")]
ConfigFile = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="TOML file of settings, keyed by the flags' names without '--' (lambda = 10, eval-every = 100, and out);"
        " flags override it.",
        show_default=False,
    ),
]


def setting_parameters(exclude: Iterable[str] = ()) -> list[inspect.Parameter]:
    """An option per setting of `ganctl.config.TrainConfig` that has a flag, its help the field's
    description and the default that `ganctl.methods.resolve` applies; every one defaults to
    "not given" (None), so flags override a --config file, which overrides the recipe."""

    params = []
    for name in field_names():
        flags = flags_of(name)
        if not flags or name in exclude:
            continue
        info = described(name)
        listed = f" One of: {' | '.join(available_methods())}." if name == "lipschitz" else ""
        option = typer.Option(
            *flags,
            help=escape(f"{info['help']}{listed} [default: {describe_default(name)}]"),
            rich_help_panel=info["panel"],
            show_default=False,
        )
        annotation = Annotated[field_type(name) | None, option]  # type: ignore[valid-type]
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation))
    return params


def with_settings(command: Callable[..., Any], exclude: Iterable[str] = ()) -> Callable[..., Any]:
    """`command(settings, **options)` as a Typer command that declares its own options and then an
    option for every setting (but those in `exclude` and those it declares itself); it receives
    the settings given on the command line as a dict of field names."""
    own = [p for p in inspect.signature(command, eval_str=True).parameters.values() if p.name != "settings"]
    taken = {p.name for p in own} | set(exclude)
    settings = setting_parameters(taken)
    names = {p.name for p in settings}

    def run(**given: Any) -> Any:
        chosen = {k: given.pop(k) for k in list(given) if k in names and given[k] is not None}
        return command(chosen, **{k: v for k, v in given.items() if k not in names})

    params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own]
    first = [p for p in params if p.annotation is typer.Context or _is_argument(p)]
    rest = [p for p in params if p not in first]
    run.__signature__ = inspect.Signature([*first, *settings, *rest])  # type: ignore[attr-defined]
    run.__name__, run.__doc__, run.__module__ = command.__name__, command.__doc__, command.__module__
    return run


def escape(text: str) -> str:
    """Help text as Typer's rich markup shows it: a bracket is text ([tensorboard], [vgg16])."""
    return text.replace("[", "\\[")


def _is_argument(param: inspect.Parameter) -> bool:
    metadata = getattr(param.annotation, "__metadata__", ())
    return any(isinstance(m, typer.models.ArgumentInfo) for m in metadata)


def settings_of(given: dict[str, Any], config_file: Path | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The settings of a command that trains: a --config file's, then every option given; and the
    file's other keys (out)."""

    from_file, extra = load_toml(config_file) if config_file is not None else ({}, {})
    return {**from_file, **given}, extra
