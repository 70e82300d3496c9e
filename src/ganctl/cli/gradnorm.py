"""`ganctl gradnorm`: how Lipschitz a checkpoint's critic is, for people and for CI.

Exit codes: 0 every threshold holds, 1 a threshold is broken (the message says which and by
how much), 2 bad input.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from ganctl.analysis.defaults import GRADNORM_N as DEFAULT_N
from ganctl.analysis.defaults import TOL as DEFAULT_TOL
from ganctl.analysis.defaults import TRAJECTORY_N
from ganctl.cli.options import DEVICE_HELP, Json
from ganctl.cli.output import EXIT_CHECK_FAILED, handle_errors, print_json, stderr


def check_thresholds(
    report: dict[str, Any], max_violation: float | None, max_norm: float | None, min_norm: float | None
) -> list[str]:
    """The broken thresholds, each as a sentence with the numbers."""
    interp = report["sets"]["interp"]
    broken = []
    if max_violation is not None and interp["above"] > max_violation:
        broken.append(
            f"violation share {interp['above']:.4f} > --max-violation {max_violation} (by "
            f"{interp['above'] - max_violation:.4f})"
        )
    largest = max(s["max"] for s in report["sets"].values())
    if max_norm is not None and largest > max_norm:
        broken.append(f"largest gradient norm {largest:.4f} > --max-norm {max_norm} (by {largest - max_norm:.4f})")
    if min_norm is not None and interp["mean"] < min_norm:
        broken.append(
            f"mean interpolate norm {interp['mean']:.4f} < --min-norm {min_norm} (by {min_norm - interp['mean']:.4f})"
        )
    return broken


def _table(report: dict[str, Any]) -> None:
    cols = ("mean", "std", "min", "q05", "q50", "q95", "max", "above", "below", "vanishing")
    if not stderr.is_terminal:  # plain, whitespace-separated columns when piped
        print("\t".join(("set", *cols)), file=sys.stderr)
        for name, s in report["sets"].items():
            print("\t".join((name, *(f"{s[c]:.6g}" for c in cols))), file=sys.stderr)
        return
    from rich.table import Table

    table = Table(title=f"||grad D(x)||  step {report['step']}  n={report['n']}  tol={report['tol']}")
    table.add_column("set")
    for c in cols:
        table.add_column(c, justify="right")
    for name, s in report["sets"].items():
        table.add_row(name, *(f"{s[c]:.1%}" if c in ("above", "below", "vanishing") else f"{s[c]:.4g}" for c in cols))
    stderr.print(table)


def _histogram(norms: Any, width: int = 40, bins: int = 12) -> list[str]:
    import torch

    x = norms.double().cpu()
    hi = max(float(x.max()), 1e-12)
    counts = torch.histc(x, bins=bins, min=0.0, max=hi)
    top = float(counts.max()) or 1.0
    edges = [hi * i / bins for i in range(bins + 1)]
    return [f"{edges[i]:8.3g}-{edges[i + 1]:<8.3g} {'#' * round(width * float(c) / top)}" for i, c in enumerate(counts)]


@handle_errors
def gradnorm(
    paths: Annotated[
        list[Path],
        typer.Argument(
            help="A checkpoint file (one report), or run folders / checkpoints whose every checkpoint is measured (a "
            "trajectory over steps).",
            show_default=False,
            metavar="CKPT_OR_RUN",
        ),
    ],
    n: Annotated[
        int | None,
        typer.Option(
            "--n",
            help=f"Points per set (default: {DEFAULT_N} for one checkpoint, {TRAJECTORY_N} per checkpoint of a "
            f"trajectory).",
            show_default=False,
        ),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed for data, latents and interpolation.")] = 0,
    tol: Annotated[
        float, typer.Option("--tol", help="Norms above 1 + tol are violations, below 1 - tol under-use.")
    ] = DEFAULT_TOL,
    raw: Annotated[
        bool, typer.Option("--raw", help="Generated points from the raw generator instead of the EMA one.")
    ] = False,
    data: Annotated[
        str | None,
        typer.Option(
            "--data",
            help="Real points from this data (a built-in set, folder or array) instead of the checkpoint's.",
            show_default=False,
        ),
    ] = None,
    noise: Annotated[
        float | None,
        typer.Option("--noise", help="Also measure at real points plus N(0, noise^2) noise.", show_default=False),
    ] = None,
    png: Annotated[
        Path | None,
        typer.Option(
            "--png",
            help="Draw the overlaid histograms (one checkpoint) or the quantiles against step (a trajectory) to this "
            "PNG.",
            show_default=False,
        ),
    ] = None,
    max_violation: Annotated[
        float | None,
        typer.Option(
            "--max-violation",
            help="Fail (exit 1) when the interpolates' violation share exceeds this.",
            show_default=False,
        ),
    ] = None,
    max_norm: Annotated[
        float | None, typer.Option("--max-norm", help="Fail when any measured norm exceeds this.", show_default=False)
    ] = None,
    min_norm: Annotated[
        float | None,
        typer.Option("--min-norm", help="Fail when the interpolates' mean norm is below this.", show_default=False),
    ] = None,
    device: Annotated[
        str | None, typer.Option("--device", help=f"{DEVICE_HELP} (default: cpu)", show_default=False)
    ] = None,
    json_output: Json = False,
) -> None:
    """Measure the critic's input-gradient norm on real, generated and interpolated points.

    Exit 0 when every threshold holds, 1 when one is broken, 2 on bad input. For a trajectory
    the thresholds apply to each run's last checkpoint.
    """
    from ganctl.devices import resolve_device
    from ganctl.errors import ConfigError

    if n is not None and n <= 0:
        raise ConfigError(f"--n must be > 0, got {n}")
    if not (tol >= 0 and math.isfinite(tol)):
        raise ConfigError(f"--tol must be a finite number >= 0, got {tol}")
    if noise is not None and not (noise > 0 and math.isfinite(noise)):
        raise ConfigError(f"--noise must be a finite number > 0, got {noise}")
    device_name = str(resolve_device(device or "cpu"))
    limits = (max_violation, max_norm, min_norm)
    if len(paths) == 1 and not paths[0].is_dir():
        _one(paths[0], n or DEFAULT_N, seed, tol, raw, data, noise, png, limits, device_name, json_output)
    else:
        _trajectories(paths, n or TRAJECTORY_N, seed, tol, raw, data, noise, png, limits, device_name, json_output)


def _thresholds(reports: dict[str, dict[str, Any]], limits: tuple) -> dict[str, Any]:
    broken = [
        f"{name}: {line}" if name else line
        for name, report in reports.items()
        for line in check_thresholds(report, *limits)
    ]
    max_violation, max_norm, min_norm = limits
    return {
        "max_violation": max_violation,
        "max_norm": max_norm,
        "min_norm": min_norm,
        "broken": broken,
        "passed": not broken,
    }


def _finish(thresholds: dict[str, Any]) -> None:
    for line in thresholds["broken"]:
        stderr.print(f"threshold broken: {line}", markup=False, highlight=False, soft_wrap=True)
    if thresholds["broken"]:
        raise typer.Exit(EXIT_CHECK_FAILED)


def _one(
    path: Path,
    n: int,
    seed: int,
    tol: float,
    raw: bool,
    data: str | None,
    noise: float | None,
    png: Path | None,
    limits: tuple,
    device: str,
    json_output: bool,
) -> None:
    from ganctl.analysis.gradnorm import analyse, real_points
    from ganctl.checkpoint import load

    nets = load(path, device=device)
    real = real_points(nets, n, seed, data) if data is not None else None
    report = analyse(nets, n=n, seed=seed, tol=tol, raw=raw, noise_std=noise, real=real)
    norms = report.pop("_norms")
    report["checkpoint"] = str(nets.path)
    report["data"] = data or nets.cfg.data
    report["thresholds"] = _thresholds({"": report}, limits)
    if png is not None:
        from ganctl.render import histograms

        histograms(png, {k: v.cpu().numpy() for k, v in norms.items()}, f"||grad D||  step {report['step']}")
    if json_output:
        print_json(report)
    else:
        _table(report)
        for line in _histogram(norms["interp"]):
            stderr.print(f"interp {line}", markup=False, highlight=False)
        lb, ub = report["lower_bound"], report["upper_bound"]
        stderr.print(
            f"Lipschitz lower bound {lb['value']:.4g} (pairs {lb['pairs']:.4g}, largest norm "
            f"{lb['max_grad_norm']:.4g});"
            f" upper bound {ub['value'] if ub['value'] is None else format(ub['value'], '.4g')}"
            f" ({'certified' if ub['certified'] else 'not certified: some layer constants are estimated'};"
            " per layer in --json)",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        al = report["alignment"]
        stderr.print(
            f"alignment cos(grad D(x_hat), x_real - x_fake) on {al['pairs']} optimally coupled pairs:"
            f" mean {al['mean']:.3f}, median {al['q50']:.3f} (the optimal critic scores about 0.9 on this many"
            " pairs, and 0.15 to 0.66 on independent ones: docs/gradnorm.md)",
            markup=False,
            highlight=False,
        )
        v = report["verdict"]
        stderr.print(f"verdict: {v['status']}: {v['detail']}", markup=False, highlight=False, soft_wrap=True)
    _finish(report["thresholds"])


TRAJECTORY_COLUMNS = (
    ("step", "step"),
    ("interp mean", "mean"),
    ("q05", "q05"),
    ("q50", "q50"),
    ("q95", "q95"),
    ("above", "above"),
    ("vanishing", "vanishing"),
    ("align", None),
    ("lower", None),
    ("verdict", None),
)


def _row(report: dict[str, Any]) -> list[str]:
    s = report["sets"]["interp"]
    return [
        str(report["step"]),
        *(f"{s[k]:.4g}" for k in ("mean", "q05", "q50", "q95")),
        f"{s['above']:.1%}",
        f"{s['vanishing']:.1%}",
        f"{report['alignment']['mean']:.3f}",
        f"{report['lower_bound']['value']:.4g}",
        report["verdict"]["status"],
    ]


def _trajectories(
    paths: list[Path],
    n: int,
    seed: int,
    tol: float,
    raw: bool,
    data: str | None,
    noise: float | None,
    png: Path | None,
    limits: tuple,
    device: str,
    json_output: bool,
) -> None:
    import time

    from ganctl.analysis.gradnorm import trajectory

    started = time.perf_counter()
    names = _names(paths)
    runs = {
        name: trajectory(path, n=n, seed=seed, tol=tol, raw=raw, device=device, data=data, noise_std=noise)
        for name, path in zip(names, paths)
    }
    thresholds = _thresholds({name: rows[-1] for name, rows in runs.items()}, limits)
    if png is not None:
        import numpy as np

        from ganctl.render import quantile_trajectories

        series = {
            name: {
                "step": np.array([r["step"] for r in rows]),
                **{q: np.array([r["sets"]["interp"][q] for r in rows]) for q in ("q05", "q50", "q95")},
            }
            for name, rows in runs.items()
        }
        quantile_trajectories(
            png, series, "||grad D(x_hat)|| at interpolates, by step: median (thick), q05 and q95 (thin)"
        )
    if json_output:
        print_json(
            {
                "runs": [
                    {"run": str(path), "name": name, "checkpoints": runs[name]} for name, path in zip(names, paths)
                ],
                "n": n,
                "seed": seed,
                "tol": tol,
                "thresholds": thresholds,
                "seconds": round(time.perf_counter() - started, 3),
            }
        )
    elif stderr.is_terminal:
        from rich.table import Table

        for name, rows in runs.items():
            table = Table(title=f"{name}: ||grad D(x_hat)|| on interpolates, n={n}, tol={tol}")
            for label, _ in TRAJECTORY_COLUMNS:
                table.add_column(label, justify="left" if label == "verdict" else "right")
            for report in rows:
                table.add_row(*_row(report))
            stderr.print(table)
    else:
        print("\t".join(("run", *(label.replace(" ", "_") for label, _ in TRAJECTORY_COLUMNS))), file=sys.stderr)
        for name, rows in runs.items():
            for report in rows:
                print("\t".join((name, *_row(report))), file=sys.stderr)
    _finish(thresholds)


def _names(paths: list[Path]) -> list[str]:
    """Short distinct names for the runs: their folder names, or the full paths when two
    share a name."""
    from ganctl.runfolder import run_dir_of

    names = [(run_dir_of(p) if p.parent.name == "checkpoints" or p.is_dir() else p).name or str(p) for p in paths]
    return names if len(set(names)) == len(names) else [str(p) for p in paths]
