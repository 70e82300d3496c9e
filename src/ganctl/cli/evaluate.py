"""`ganctl eval`: how good a generator is, for any data, with CI thresholds.

Exit codes: 0 every threshold holds, 1 a threshold is broken (the message says which and by
how much), 2 bad input.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from ganctl.cli.options import DEVICE_HELP, Json
from ganctl.cli.output import EXIT_CHECK_FAILED, handle_errors, print_json, stderr
from ganctl.config import FIDELITY_METRICS

EVAL_N = 10_000  # `ganctl.evaluation.EVAL_N`, read here without importing torch (a test checks they agree)

# (flag, metric name without its feature space, "max" or "min")
THRESHOLDS = (
    ("--max-fid", "fid", "max"),
    ("--max-kid", "kid", "max"),
    ("--min-precision", "precision", "min"),
    ("--min-recall", "recall", "min"),
    ("--min-density", "density", "min"),
    ("--min-coverage", "coverage", "min"),
    ("--min-valid", "valid_share", "min"),
    ("--min-modes", "modes", "min"),
    ("--min-hq", "hq_share", "min"),
    ("--max-w1", "w1", "max"),
)


def _limit(flag: str, what: str) -> Any:
    return typer.Option(flag, help=what, show_default=False)


@handle_errors
def evaluate(
    source: Annotated[
        Path | None,
        typer.Argument(help="A run folder (its latest checkpoint) or a checkpoint file.", show_default=False),
    ] = None,
    fake: Annotated[
        Path | None,
        typer.Option(
            "--fake",
            help="Score samples of any generator instead: a folder of images, or an .npy/.npz array (images,"
            " or (N, 2) points for 2-D data). Needs --data.",
            show_default=False,
        ),
    ] = None,
    data: Annotated[
        str | None,
        typer.Option("--data", help="The real data (default: the checkpoint's).", show_default=False),
    ] = None,
    metrics: Annotated[
        str,
        typer.Option("--metrics", help=f"Image metrics, comma-separated: {', '.join(FIDELITY_METRICS)}, or none."),
    ] = ",".join(FIDELITY_METRICS),
    n: Annotated[int, typer.Option("--n", help="Generated samples; real ones too (all of a smaller set).")] = EVAL_N,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the latents and of the real sample.")] = 0,
    features: Annotated[
        str,
        typer.Option(
            "--features",
            help="auto (Inception-v3 when a weights file is given, else random-conv) | random-conv | inception.",
        ),
    ] = "auto",
    inception: Annotated[
        str | None,
        typer.Option(
            "--inception",
            help="Inception-v3 weights in torch-fidelity's layout (pt_inception-2015-12-05-6726825d.pth)."
            " (default: $GANCTL_INCEPTION)",
            show_default=False,
        ),
    ] = None,
    image_size: Annotated[
        int | None,
        typer.Option("--image-size", help="With --fake: the real images' side.", show_default=False),
    ] = None,
    raw: Annotated[bool, typer.Option("--raw", help="The raw generator instead of the EMA one.")] = False,
    max_fid: Annotated[float | None, _limit("--max-fid", "Fail (exit 1) when FID is above this.")] = None,
    max_kid: Annotated[float | None, _limit("--max-kid", "Fail when KID is above this.")] = None,
    min_precision: Annotated[float | None, _limit("--min-precision", "Fail when precision is below this.")] = None,
    min_recall: Annotated[float | None, _limit("--min-recall", "Fail when recall is below this.")] = None,
    min_density: Annotated[float | None, _limit("--min-density", "Fail when density is below this.")] = None,
    min_coverage: Annotated[float | None, _limit("--min-coverage", "Fail when coverage is below this.")] = None,
    min_valid: Annotated[
        float | None, _limit("--min-valid", "shapes: fail when the valid share is below this.")
    ] = None,
    min_modes: Annotated[float | None, _limit("--min-modes", "Fail when fewer modes are covered.")] = None,
    min_hq: Annotated[float | None, _limit("--min-hq", "2-D: fail when the high-quality share is below this.")] = None,
    max_w1: Annotated[float | None, _limit("--max-w1", "2-D: fail when W1 is above this.")] = None,
    device: Annotated[
        str | None, typer.Option("--device", help=f"{DEVICE_HELP} (default: cpu)", show_default=False)
    ] = None,
    json_output: Json = False,
) -> None:
    """Score a generator: its data's own metrics and, on images, FID, KID, precision/recall, density/coverage.

    On 2-D data: modes, high-quality share and W1 with a perfect generator's W1 beside it. On
    shapes: the judge's valid share and modes. On images, every number names its feature space:
    fid\\[inception] for the Inception-v3 of published FIDs (from --inception), fid\\[random-conv]
    for the weight-free fallback, which is not comparable to published FIDs.

    Exit 0 when every threshold holds, 1 when one is broken, 2 on bad input.
    """
    import time

    from ganctl.config import metric_list
    from ganctl.errors import ConfigError

    started = time.perf_counter()
    given = locals()
    limits = {flag: given[flag[2:].replace("-", "_")] for flag, _, _ in THRESHOLDS}
    if n < 2:
        raise ConfigError(f"--n must be at least 2, got {n}")
    if (source is None) == (fake is None):
        raise ConfigError("give a run folder or checkpoint, or --fake PATH with --data REAL (not both)")
    if fake is not None and data is None:
        raise ConfigError("--fake needs --data: the real data to score against")
    for flag, value in limits.items():
        if value is not None and not math.isfinite(value):
            raise ConfigError(f"{flag} must be a finite number, got {value}")
    chosen = metric_list(metrics)
    report = _run(source, fake, data, chosen, n, seed, features, inception, image_size, raw, device)
    report["thresholds"] = check(report["metrics"], limits)
    report["seconds"] = round(time.perf_counter() - started, 3)
    if json_output:
        print_json(report)
    else:
        _table(report)
    for line in report["thresholds"]["broken"]:
        stderr.print(f"threshold broken: {line}", markup=False, highlight=False, soft_wrap=True)
    if report["thresholds"]["broken"]:
        raise typer.Exit(EXIT_CHECK_FAILED)


def _run(
    source: Path | None,
    fake: Path | None,
    data: str | None,
    metrics: tuple[str, ...],
    n: int,
    seed: int,
    features: str,
    inception: str | None,
    image_size: int | None,
    raw: bool,
    device: str | None,
) -> dict:
    from ganctl.config import data_kind
    from ganctl.devices import resolve_device
    from ganctl.evaluation import choose_space, evaluate_checkpoint, evaluate_files

    target = resolve_device(device or "cpu")
    if source is not None:
        from ganctl.checkpoint import load

        nets = load(source, device=target)
        kind = data_kind(data or nets.cfg.data)
        space = choose_space(features, inception, target) if kind == "images" and metrics else None
        return evaluate_checkpoint(nets, metrics, space, n, seed, data, raw)
    space = choose_space(features, inception, target) if data_kind(data) == "images" and metrics else None
    return evaluate_files(fake, data, metrics, space, n, seed, image_size)


def check(values: dict[str, Any], limits: dict[str, float | None]) -> dict[str, Any]:
    """The broken thresholds, each as a sentence with the numbers. A threshold on a metric that
    was not measured is bad input."""
    from ganctl.errors import ConfigError

    broken = []
    for flag, name, direction in THRESHOLDS:
        limit = limits[flag]
        if limit is None:
            continue
        key = next((k for k in values if k == name or k.startswith(f"{name}[")), None)
        if key is None:
            raise ConfigError(f"{flag}: {name} was not measured here (measured: {', '.join(values) or 'nothing'})")
        value = float(values[key])
        bad = value > limit if direction == "max" else value < limit
        if bad or math.isnan(value):
            relation = ">" if direction == "max" else "<"
            broken.append(f"{key} {value:.6g} {relation} {flag} {limit} (by {abs(value - limit):.6g})")
    return {"limits": {f: v for f, v in limits.items() if v is not None}, "broken": broken, "passed": not broken}


def _fmt(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _table(report: dict[str, Any]) -> None:
    metrics = report["metrics"]
    space = report.get("feature_space")
    source = report["source"]
    what = source.get("fake") or f"{source['checkpoint']} (step {source['step']}, {source['generator']} generator)"
    heading = f"{what} against {report['data']}: {report['n_fake']} generated"
    heading += f", {report['n_real']} real" if "n_real" in report else ""
    if not stderr.is_terminal:  # plain, tab-separated, when piped
        print(heading, file=sys.stderr)
        for key, value in metrics.items():
            print(f"{key}\t{_fmt(value)}", file=sys.stderr)
    else:
        from rich.table import Table

        table = Table(title=heading)
        table.add_column("metric")
        table.add_column("value", justify="right")
        for key, value in metrics.items():
            table.add_row(key, _fmt(value))
        stderr.print(table)
    if space is not None:
        kind = (
            "the standard Inception-v3" if space["standard"] else f"{space['label']}: not comparable to published FIDs"
        )
        stderr.print(
            f"feature space: {kind} (weights sha256 {space['sha256'][:16]}...)",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
