"""`ganctl eval`: how good a generator is, for any data, with CI thresholds.

Exit codes: 0 every threshold holds, 1 a threshold is broken (the message says which and by
how much), 2 bad input.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ganctl.analysis.defaults import EVAL_N
from ganctl.cli.options import MEASURE_DEVICE, Device, Json, N, Raw, Seed
from ganctl.cli.output import finish, handle_errors, interactive, plain, print_json, say, table
from ganctl.config import FIDELITY_METRICS
from ganctl.metrics import EVAL_THRESHOLDS, threshold


def _limit(flag: str) -> typer.models.OptionInfo:
    return typer.Option(flag, help=threshold(flag).help, show_default=False)


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
    n: N = EVAL_N,
    seed: Seed = 0,
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
    raw: Raw = False,
    max_fid: Annotated[float | None, _limit("--max-fid")] = None,
    max_kid: Annotated[float | None, _limit("--max-kid")] = None,
    min_precision: Annotated[float | None, _limit("--min-precision")] = None,
    min_recall: Annotated[float | None, _limit("--min-recall")] = None,
    min_density: Annotated[float | None, _limit("--min-density")] = None,
    min_coverage: Annotated[float | None, _limit("--min-coverage")] = None,
    min_valid: Annotated[float | None, _limit("--min-valid")] = None,
    min_modes: Annotated[float | None, _limit("--min-modes")] = None,
    min_hq: Annotated[float | None, _limit("--min-hq")] = None,
    max_w1: Annotated[float | None, _limit("--max-w1")] = None,
    device: Device = None,
    json_output: Json = False,
) -> None:
    """Score a generator: its data's own metrics and, on images, FID, KID, precision/recall, density/coverage.

    --n generated samples (default 10000), scored against as many real ones (all of a smaller
    set). On 2-D data: modes, high-quality share and W1 with a perfect generator's W1 beside it.
    On shapes: the judge's valid share and modes. On images, every number names its feature
    space: fid\\[inception] for the Inception-v3 of published FIDs (from --inception),
    fid\\[random-conv] for the weight-free fallback, which is not comparable to published FIDs.

    Exit 0 when every threshold holds, 1 when one is broken, 2 on bad input.
    """
    import time

    from ganctl.checkpoint import load
    from ganctl.config import data_kind, metric_list
    from ganctl.devices import resolve_device
    from ganctl.errors import ConfigError
    from ganctl.evaluation import choose_space, evaluate_checkpoint, evaluate_files
    from ganctl.metrics import check_limits, gate

    started = time.perf_counter()
    given = locals()
    limits = {t.flag: given[t.flag[2:].replace("-", "_")] for t in EVAL_THRESHOLDS}
    if n < 2:
        raise ConfigError(f"--n must be at least 2, got {n}")
    if (source is None) == (fake is None):
        raise ConfigError("give a run folder or checkpoint, or --fake PATH with --data REAL (not both)")
    if fake is not None and data is None:
        raise ConfigError("--fake needs --data: the real data to score against")
    check_limits(limits, EVAL_THRESHOLDS)
    chosen = metric_list(metrics)
    target = resolve_device(device or MEASURE_DEVICE)
    nets = load(source, device=target) if source is not None else None
    images = data_kind(data or nets.cfg.data) == "images"
    space = choose_space(features, inception, target) if images and chosen else None
    if nets is not None:
        report = evaluate_checkpoint(nets, chosen, space, n, seed or 0, data, raw)
    else:
        report = evaluate_files(fake, data, chosen, space, n, seed or 0, image_size)
    result = gate(report["metrics"], limits, EVAL_THRESHOLDS)
    report["thresholds"] = result.to_dict()
    report["seconds"] = round(time.perf_counter() - started, 3)
    if json_output:
        print_json(report)
    else:
        _table(report)
    finish(result)


def _fmt(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _table(report: dict[str, Any]) -> None:
    metrics = report["metrics"]
    space = report.get("feature_space")
    source = report["source"]
    what = source.get("fake") or f"{source['checkpoint']} (step {source['step']}, {source['generator']} generator)"
    heading = f"{what} against {report['data']}: {report['n_fake']} generated"
    heading += f", {report['n_real']} real" if "n_real" in report else ""
    rows = [[key, _fmt(value)] for key, value in metrics.items()]
    if interactive():
        table(heading, ["metric", "value"], rows)
    else:  # plain, tab-separated, when piped
        say(heading)
        plain(rows)
    if space is not None:
        kind = (
            "the standard Inception-v3" if space["standard"] else f"{space['label']}: not comparable to published FIDs"
        )
        say(f"feature space: {kind} (weights sha256 {space['sha256'][:16]}...)")
