"""`ganctl eval`: how good a generator is, for any data, with CI thresholds.

Exit codes: 0 every threshold holds, 1 a threshold is broken (the message says which and by
how much), 2 bad input.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer

from ganctl import progress
from ganctl.cli.options import MEASURE_DEVICE, Device, Json, N, Raw, Seed, Threads, escape
from ganctl.cli.output import Phases, finish, handle_errors, interactive, plain, print_json, say, table
from ganctl.config import FIDELITY_METRICS
from ganctl.quality.thresholds import EVAL_THRESHOLDS, check_limits, gate, threshold


def _limit(flag: str) -> typer.models.OptionInfo:
    return typer.Option(flag, help=threshold(flag).help, show_default=False)


@handle_errors
def eval_command(
    source: Annotated[
        Path | None,
        typer.Argument(
            help="A run folder (its latest checkpoint) or a checkpoint file.", show_default=False, metavar="CKPT_OR_RUN"
        ),
    ] = None,
    fake: Annotated[
        Path | None,
        typer.Option(
            "--fake",
            help="Score samples of any generator instead: a folder of images, or an .npy/.npz array (images,"
            " or (N, 2) points for 2-D data). Needs --data or --ref-stats.",
            show_default=False,
        ),
    ] = None,
    data: Annotated[
        str | None,
        typer.Option("--data", help=escape("The real data. [default: the checkpoint's]"), show_default=False),
    ] = None,
    metrics: Annotated[
        str,
        typer.Option(
            "--metrics",
            help=f"Image metrics, comma-separated: {', '.join(FIDELITY_METRICS)} (is: with Inception-v3), all"
            " (every one the feature spaces allow), or none.",
        ),
    ] = "all",
    n: N = None,
    seed: Seed = 0,
    features: Annotated[
        str,
        typer.Option(
            "--features",
            help="auto (Inception-v3 when a weights file is given, else random-conv) | random-conv | inception"
            " | dinov2 (FD-DINOv2, Stein et al. 2023; from --dinov2).",
        ),
    ] = "auto",
    inception: Annotated[
        str | None,
        typer.Option(
            "--inception",
            help=escape(
                "Inception-v3 weights in torch-fidelity's layout (the published file: pt_inception-2015-12-05 with"
                " hash 6726825d)."
                " [default: $GANCTL_INCEPTION]"
            ),
            show_default=False,
        ),
    ] = None,
    vgg: Annotated[
        str | None,
        typer.Option(
            "--vgg",
            help=escape(
                "VGG-16 weights in torchvision's layout (vgg16-397923af.pth, torch-fidelity's prc): precision/recall"
                " and density/coverage in VGG-16 space, labelled [vgg16]. [default: $GANCTL_VGG]"
            ),
            show_default=False,
        ),
    ] = None,
    dinov2: Annotated[
        str | None,
        typer.Option(
            "--dinov2",
            help=escape(
                "DINOv2 weights in Meta's layout (dinov2_vits14_pretrain.pth, or b, l, g) for --features dinov2:"
                " FID, KID and precision/recall on its class token, labelled [dinov2-vit-s-14]."
                " [default: $GANCTL_DINOV2]"
            ),
            show_default=False,
        ),
    ] = None,
    dinov2_resize: Annotated[
        str,
        typer.Option(
            "--dinov2-resize",
            help="Whose preprocessing for --features dinov2: torch-fidelity (0.4's TF1 bilinear resize to 224) or"
            " dgm-eval (Stein et al. 2023's code: PIL bicubic; its leaderboard uses ViT-L/14). They differ.",
        ),
    ] = "torch-fidelity",
    ref_stats: Annotated[
        Path | None,
        typer.Option(
            "--ref-stats",
            help="FID against a real set's mu/sigma .npz (TTUR and pytorch-fid's layout, or --save-stats') instead"
            " of real images.",
            show_default=False,
        ),
    ] = None,
    save_stats: Annotated[
        Path | None,
        typer.Option(
            "--save-stats",
            help="With --data alone: write the real images' mu/sigma .npz in the feature space, with its weights"
            " hash, the image count and resolution.",
            show_default=False,
        ),
    ] = None,
    image_size: Annotated[
        int | None,
        typer.Option(
            "--image-size",
            help=escape(
                "Resize both sides to this side first (the result is then not standard)."
                " [default: each side's own size]"
            ),
            show_default=False,
        ),
    ] = None,
    raw: Raw = False,
    max_fid: Annotated[float | None, _limit("--max-fid")] = None,
    max_kid: Annotated[float | None, _limit("--max-kid")] = None,
    min_is: Annotated[float | None, _limit("--min-is")] = None,
    min_precision: Annotated[float | None, _limit("--min-precision")] = None,
    min_recall: Annotated[float | None, _limit("--min-recall")] = None,
    min_density: Annotated[float | None, _limit("--min-density")] = None,
    min_coverage: Annotated[float | None, _limit("--min-coverage")] = None,
    min_valid: Annotated[float | None, _limit("--min-valid")] = None,
    min_modes: Annotated[float | None, _limit("--min-modes")] = None,
    min_hq: Annotated[float | None, _limit("--min-hq")] = None,
    max_w1: Annotated[float | None, _limit("--max-w1")] = None,
    w1_bound: Annotated[
        bool,
        typer.Option(
            "--w1-bound",
            help="Train a critic that is 1-Lipschitz by construction (orthogonal convolutions) to tell the real"
            " samples from the generated ones, and report the certified lower bound on W1 it gives, on held-out"
            " samples (docs/eval.md: its protocol). Needs the certified extra.",
        ),
    ] = False,
    w1_steps: Annotated[
        int | None,
        typer.Option("--w1-steps", help=escape("--w1-bound's critic steps. [default: 1000]"), show_default=False),
    ] = None,
    max_w1_bound: Annotated[float | None, _limit("--max-w1-bound")] = None,
    min_class_consistency: Annotated[float | None, _limit("--min-class-consistency")] = None,
    max_intra_fid: Annotated[float | None, _limit("--max-intra-fid")] = None,
    classifier: Annotated[
        str | None,
        typer.Option(
            "--classifier",
            help="Judge the samples with a classifier of the real labelled data: auto (trained on 90 % of it,"
            " cached) or a TorchScript file; classes covered, confident share, class KL, GAN-test and GAN-train"
            " (conditional), FID/KID/precision-recall in its feature space, each beside the held-out real data's.",
            show_default=False,
        ),
    ] = None,
    min_classes: Annotated[float | None, _limit("--min-classes")] = None,
    max_class_kl: Annotated[float | None, _limit("--max-class-kl")] = None,
    min_confident: Annotated[float | None, _limit("--min-confident")] = None,
    min_gan_test: Annotated[float | None, _limit("--min-gan-test")] = None,
    min_gan_train: Annotated[float | None, _limit("--min-gan-train")] = None,
    min_modes_covered: Annotated[float | None, _limit("--min-modes-covered")] = None,
    max_modes_kl: Annotated[float | None, _limit("--max-modes-kl")] = None,
    holdout: Annotated[
        Path | None,
        typer.Option(
            "--holdout",
            help="Real images the generator never trained on (a folder or array, at the training images' size):"
            " whether the samples copy the training images (--data, or the checkpoint's). A run trained with"
            " --holdout uses its own. Gives the share of samples nearer a training image than an unseen one (beside"
            " the held-out images' own, about 0.5) and Meehan et al. 2020's C_T (near 0; copying well below).",
            show_default=False,
        ),
    ] = None,
    copying_features: Annotated[
        str,
        typer.Option(
            "--copying-features",
            help="The space the copying scores measure nearness in: pixels | random-conv | inception | dinov2 |"
            " classifier (with --classifier).",
        ),
    ] = "pixels",
    copies: Annotated[
        Path | None,
        typer.Option(
            "--copies",
            help="Draw the most copied samples here (PNG), each beside its nearest training and held-out image.",
            show_default=False,
        ),
    ] = None,
    max_copying: Annotated[float | None, _limit("--max-copying")] = None,
    device: Device = None,
    threads: Threads = None,
    json_output: Json = False,
) -> None:
    """Score a generator: its data's own metrics and, on images, FID, KID, IS, precision/recall, density/coverage.

    --n generated samples (default 10000; 26000, PacGAN's, on stacked data), scored against as
    many real ones (all of a smaller set). On 2-D data: modes, high-quality share and W1 with a
    perfect generator's W1 beside it. On shapes: the judge's valid share and modes. On stacked
    data, with --classifier: the modes covered and their KL to uniform. On images, at each
    side's own resolution, every number names its feature space: fid\\[inception] and is\\[inception] for the
    Inception-v3 of published numbers (from --inception), precision\\[vgg16] with --vgg,
    fid\\[dinov2-vit-s-14] with --features dinov2 (FD-DINOv2),
    fid\\[random-conv] for the weight-free fallback, which is not comparable to published
    numbers; "standard" says whether a result may be set beside a paper's.

    Exit 0 when every threshold holds, 1 when one is broken, 2 on bad input.
    """

    # Imported when the command runs: `ganctl --help` must not import torch.
    from ganctl.devices import threads as cpu_threads
    from ganctl.quality.evaluate import evaluate

    started = time.perf_counter()
    given = locals()
    limits = {t.flag: given[t.flag[2:].replace("-", "_")] for t in EVAL_THRESHOLDS}
    check_limits(limits, EVAL_THRESHOLDS)
    with cpu_threads(threads), Phases() as shown, progress.listening(shown):
        report = evaluate(
            source,
            fake=fake,
            data=data,
            metrics=metrics,
            n=n,
            seed=seed or 0,
            features=features,
            inception=inception,
            vgg=vgg,
            dinov2=dinov2,
            dinov2_resize=dinov2_resize,
            ref_stats=ref_stats,
            save_stats=save_stats,
            image_size=image_size,
            raw=raw,
            classifier=classifier,
            holdout=holdout,
            copying_features=copying_features,
            copies=copies,
            w1_bound=w1_bound,
            w1_steps=w1_steps,
            device=device or MEASURE_DEVICE,
        ).to_dict()
    for line in report.get("warnings", []):
        say(f"warning: {line}")
    for line in report.get("notes", []):
        say(f"note: {line}")
    result = gate(report.get("metrics", {}), limits, EVAL_THRESHOLDS)
    report["thresholds"] = result.to_dict()
    report["seconds"] = round(time.perf_counter() - started, 3)
    if json_output:
        print_json(report)
    elif save_stats is not None:
        saved, label = report["saved"], report["feature_space"]["label"]
        say(f"wrote {saved['file']}: {saved['n']} images of {data}, {_side(saved['resolution'])}, in the {label} space")
    else:
        _table(report)
    finish(result)


def _side(hw: list[int] | None) -> str:
    return "?" if hw is None else f"{hw[0]} x {hw[1]}"


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
        say(f"feature space: {space['label']} (weights sha256 {space['sha256'][:16]}...)")
    pr_space = report.get("pr_feature_space")
    if pr_space is not None:
        say(f"precision/recall space: {pr_space['label']} (weights sha256 {pr_space['sha256'][:16]}...)")
    if "standard" in report:
        res = report["resolution"]
        sides = f"real {_side(res['real'])}, generated {_side(res['fake'])}"
        if report["standard"]:
            checked = "; ".join(f"{label}: {what}" for label, what in report["checked"].items())
            say(f"standard, both sides at their own resolution ({sides}); checked: {checked}")
        else:
            say(f"not standard ({sides}): " + "; ".join(report["not_standard_because"]))
    if "classifier" in report:
        c = report["classifier"]
        ceiling = ", ".join(f"{k} {_fmt(v)}" for k, v in report["ceiling"].items())
        held = f"{c['held_out']} samples"
        if "stacks" in c:
            held = f"{c['stacks']} stacks of its {c['held_out']} held-out grey images"
        say(f"{c['label']} ({c['source']}): the held-out real data's own, {held}: {ceiling}")
        for what in report["not_measured"]:
            say(f"not measured: {what}")
    if "copying" in report:
        say(copying_line(report))
    if "w1_bound" in report:
        say(w1_line(report["w1_bound"]))


def w1_line(found: dict[str, Any]) -> str:
    """The certified W1 lower bound in words."""
    p = found["protocol"]
    return (
        f"certified W1 lower bound {found['value']:.4g} +- {found['se']:.2g} on held-out samples"
        f" ({found['n_held'][0]} real, {found['n_held'][1]} generated; on the training parts"
        f" {found['train_value']:.4g}): the critic's gap over its certified Lipschitz constant"
        f" {found['lipschitz']:.7g}, trained {p['steps']} steps from seed {p['seed']}. W1 is at least this"
        " (within its error): a weak critic understates the distance, none can overstate it"
    )


def copying_line(report: dict[str, Any]) -> str:
    """What the copying scores say, in words."""
    c, metrics = report["copying"], report["metrics"]
    space = c["space"]
    share, held = metrics[f"nearer_seen[{space}]"], metrics[f"held_nearer_seen[{space}]"]
    cells = c["c_t"]
    line = (
        f"copying ({space}; {c['n_train']} training, {c['n_held']} held-out images from {c['holdout']}):"
        f" {share:.1%} of samples are nearer a training image than an unseen one (held-out real images:"
        f" {held:.1%} +- {c['held_nearer_seen_se']:.1%}); C_T {metrics[f'c_t[{space}]']:.3g} over"
        f" {cells['cells_counted']} of {cells['cells']} k-means cells (0: as far as unseen data; -3 and below: copying)"
    )
    return line + (f"; the most copied: {c['picture']}" if "picture" in c else "")
