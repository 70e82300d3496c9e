"""`ganctl gradnorm`: how Lipschitz a checkpoint's critic is, for people and for CI.

Exit codes: 0 every threshold holds, 1 a threshold is broken (the message says which and by
how much), 2 bad input.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ganctl import progress
from ganctl.cli.options import MEASURE_DEVICE, Device, Json, N, Raw, Seed, Threads
from ganctl.cli.output import Phases, finish, handle_errors, interactive, plain, print_json, say, table
from ganctl.errors import ConfigError
from ganctl.fileio import check_writable
from ganctl.lipschitz.defaults import TOL as DEFAULT_TOL
from ganctl.quality.thresholds import GRADNORM_THRESHOLDS, Gate, check_limits, gate, threshold
from ganctl.runfolder import run_dir_of

if TYPE_CHECKING:
    from ganctl.lipschitz.analysis import Report

COLUMNS = ("mean", "std", "min", "q05", "q50", "q95", "max", "above", "below", "vanishing")
SHARES = ("above", "below", "vanishing")


def _limit(flag: str) -> typer.models.OptionInfo:
    return typer.Option(flag, help=threshold(flag).help, show_default=False)


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
    n: N = None,
    seed: Seed = 0,
    tol: Annotated[
        float, typer.Option("--tol", help="Norms above 1 + tol are violations, below 1 - tol under-use.")
    ] = DEFAULT_TOL,
    raw: Raw = False,
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
    max_violation: Annotated[float | None, _limit("--max-violation")] = None,
    max_norm: Annotated[float | None, _limit("--max-norm")] = None,
    min_norm: Annotated[float | None, _limit("--min-norm")] = None,
    device: Device = None,
    threads: Threads = None,
    json_output: Json = False,
) -> None:
    """Measure the critic's input-gradient norm on real, generated and interpolated points.

    --n points per set (default 4096 for one checkpoint, 1024 per checkpoint of a trajectory);
    the seed draws the data, latents and interpolation. Exit 0 when every threshold holds, 1
    when one is broken, 2 on bad input. For a trajectory the thresholds apply to each run's
    last checkpoint.
    """
    # Imported when the command runs: `ganctl --help` must not import torch.
    from ganctl.devices import threads as cpu_threads

    if png is not None and (png.is_dir() or not png.parent.is_dir()):
        what = "is a folder" if png.is_dir() else f"is in a folder that does not exist ({png.parent})"
        raise ConfigError(f"--png {png}: {what}; give the picture's file name, for example {png.name or 'x'}.png")
    if png is not None:
        check_writable(png, "--png")  # before the measuring, which can take minutes
    limits = {"--max-violation": max_violation, "--max-norm": max_norm, "--min-norm": min_norm}
    check_limits(limits, GRADNORM_THRESHOLDS)
    asked = {
        "n": n,
        "seed": seed or 0,
        "tol": tol,
        "raw": raw,
        "data": data,
        "noise": noise,
        "device": device or MEASURE_DEVICE,
    }
    with cpu_threads(threads), Phases() as shown, progress.listening(shown):
        if len(paths) == 1 and not paths[0].is_dir():
            _one(paths[0], asked, limits, png, json_output)
        else:
            _trajectories(paths, asked, limits, png, json_output)


def _one(path: Path, asked: dict[str, Any], limits: dict, png: Path | None, json_output: bool) -> None:
    # Imported when the command runs: `ganctl --help` must not import torch.
    from ganctl.lipschitz.analysis import draw_histograms, grad_norms

    analysis = grad_norms(path, **asked)
    report = analysis.report
    result = gate(analysis.gate_values(), limits, GRADNORM_THRESHOLDS)
    report.thresholds = result.to_dict()
    if png is not None:
        draw_histograms(png, analysis.norms, report.step)
    if json_output:
        print_json(report.to_dict())
    else:
        _report(report, analysis.norms["interp"])
    finish(result)


def _report(report: Report, interp_norms: Any) -> None:
    """One checkpoint's report for people: the table, a text histogram and the sentences."""
    # Imported when the command runs: `ganctl --help` must not import torch.
    from ganctl.lipschitz.norms import histogram_bins

    sets = report.sets.items()
    if interactive():
        rows = [[name, *(f"{s[c]:.1%}" if c in SHARES else f"{s[c]:.4g}" for c in COLUMNS)] for name, s in sets]
        table(f"||grad D(x)||  step {report.step}  n={report.n}  tol={report.tol}", ["set", *COLUMNS], rows)
    else:  # plain, whitespace-separated columns when piped
        plain([["set", *COLUMNS], *([name, *(f"{s[c]:.6g}" for c in COLUMNS)] for name, s in sets)])
    bins = histogram_bins(interp_norms)
    top = max(count for _, _, count in bins) or 1
    for lo, hi, count in bins:
        say(f"interp {lo:8.3g}-{hi:<8.3g} {'#' * round(40 * count / top)}")
    lb, ub = report.lower_bound, report.upper_bound
    upper = "None" if ub["value"] is None else format(ub["value"], ".4g")
    certainty = "certified" if ub["certified"] else "not certified: some layer constants are estimated"
    say(
        f"Lipschitz lower bound {lb.value:.4g} (pairs {lb.pairs:.4g}, largest norm {lb.max_grad_norm:.4g});"
        f" upper bound {upper} ({certainty}; per layer in --json)"
    )
    if ub["certified"]:
        medians = ", ".join(f"{k} {v:.1%}" for k, v in ub["median_share"].items())
        say(
            f"certified: ||grad D(x)|| <= {ub['value']:.7g} at every x (each layer's constant exact or certified,"
            f" padding and strides included); the largest measured norm, {ub['largest_norm']:.4g}, is"
            f" {ub['margin']:.4g} below it; median norms as a share of the bound: {medians}"
        )
    w1 = report.w1_lower_bound
    if w1 is not None:
        exact = f"; the exact W1 of the same samples is {w1['w1_exact']:.4g}" if "w1_exact" in w1 else ""
        say(
            f"certified W1 lower bound {w1['value']:.4g} +/- {w1['se']:.2g} (critic gap {w1['critic_gap']:.4g} over its"
            f" certified Lipschitz constant {w1['lipschitz']:.6g}, {w1['n']} held-out pairs){exact}"
        )
    else:
        say("no certified W1 lower bound: the critic's Lipschitz constant is not certified (or it is conditional)")
    al = report.alignment
    say(
        f"alignment cos(grad D(x_hat), x_real - x_fake) on {al['pairs']} optimally coupled pairs:"
        f" mean {al['mean']:.3f}, median {al['q50']:.3f} (the optimal critic scores about 0.9 on this many"
        " pairs, and 0.15 to 0.66 on independent ones: docs/gradnorm.md)"
    )
    if report.augment is not None:
        aug = report.augment
        through = (
            f" (x {aug['lipschitz_factor']:g} for the augmentation: {aug['upper_bound']:.4g})"
            if "upper_bound" in aug
            else ""
        )
        say(
            f"measured through the run's augmentation ({aug['policy']}, p {aug['p']:.3g}), with respect to the"
            f" un-augmented points, as its penalties are; the upper bound above is the critic's alone{through}"
        )
    say(f"verdict: {report.verdict.status}: {report.verdict.detail}")
    if report.verdict.note:
        say(f"note: {report.verdict.note}")


TRAJECTORY_COLUMNS = ("step", "interp mean", "q05", "q50", "q95", "above", "vanishing", "align", "lower", "verdict")


def _row(report: Report) -> list[str]:
    s = report.sets["interp"]
    return [
        str(report.step),
        *(f"{s[k]:.4g}" for k in ("mean", "q05", "q50", "q95")),
        f"{s['above']:.1%}",
        f"{s['vanishing']:.1%}",
        f"{report.alignment['mean']:.3f}",
        f"{report.lower_bound.value:.4g}",
        report.verdict.status,
    ]


def _trajectories(paths: list[Path], asked: dict[str, Any], limits: dict, png: Path | None, json_output: bool) -> None:
    # Imported when the command runs: `ganctl --help` must not import torch.
    from ganctl.lipschitz.analysis import draw_trajectories, gate_values, grad_norm_trajectory

    started = time.perf_counter()
    names = _names(paths)
    runs = {name: grad_norm_trajectory(path, **asked) for name, path in zip(names, paths)}
    rows_n = next(iter(runs.values()))[0].n
    result = Gate()
    for name, rows in runs.items():  # each run's last checkpoint; the sentences name the run
        gate(gate_values(rows[-1]), limits, GRADNORM_THRESHOLDS, where=name, into=result)
    if png is not None:
        draw_trajectories(png, runs)
    if json_output:
        print_json(
            {
                "runs": [
                    {"run": str(p), "name": name, "checkpoints": [r.to_dict() for r in runs[name]]}
                    for name, p in zip(names, paths)
                ],
                "n": rows_n,
                "seed": asked["seed"],
                "tol": asked["tol"],
                "thresholds": result.to_dict(),
                "seconds": round(time.perf_counter() - started, 3),
            }
        )
    elif interactive():
        for name, rows in runs.items():
            title = f"{name}: ||grad D(x_hat)|| on interpolates, n={rows_n}, tol={asked['tol']}"
            table(title, list(TRAJECTORY_COLUMNS), [_row(r) for r in rows], left=(len(TRAJECTORY_COLUMNS) - 1,))
    else:
        header = ["run", *(label.replace(" ", "_") for label in TRAJECTORY_COLUMNS)]
        plain([header, *([name, *_row(r)] for name, rows in runs.items() for r in rows)])
    if not json_output:
        for name, rows in runs.items():  # what a run's own settings say of its last verdict
            if rows[-1].verdict.note:
                say(f"note on {name}: {rows[-1].verdict.note}")
    finish(result)


def _names(paths: list[Path]) -> list[str]:
    """Short distinct names for the runs: their folder names, or the full paths when two
    share a name."""

    names = [(run_dir_of(p) if p.parent.name == "checkpoints" or p.is_dir() else p).name or str(p) for p in paths]
    return names if len(set(names)) == len(names) else [str(p) for p in paths]
