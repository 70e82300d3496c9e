"""`ganctl train`: parse options, build a config, call `ganctl.training.loop.train`, show the result.

Every option defaults to "not given" so that precedence is simple: flags override the
--config file, which overrides the method's published recipe, which overrides ganctl's
defaults. Parameter names equal `TrainConfig` field names.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from ganctl.cli.options import Json, Overwrite, Seed, TrainDevice
from ganctl.cli.output import TrainProgress, fail, handle_errors, print_json, print_summary
from ganctl.config import POINT_DATA, choices
from ganctl.methods.registry import available_methods, describe_default

_MODEL = "Model"
_METHOD = "Lipschitz method"
_OPTIM = "Optimisation (default: the method's recipe; see docs/results.md)"
_SCHEDULE = "Schedule (in generator steps; 0 disables)"
_COND = "Class conditioning"


def _opt(*names: str, help: str, field: str, panel: str | None = None) -> typer.models.OptionInfo:
    """An option whose help ends with the default that `ganctl.methods.registry.resolve` applies."""
    return typer.Option(
        *names, help=f"{help} (default: {describe_default(field)})", rich_help_panel=panel, show_default=False
    )


_DATA = " | ".join((*POINT_DATA, "shapes"))


@handle_errors
def train(
    data: Annotated[
        str | None, _opt("--data", help=f"{_DATA}, a folder of images, or FILE.npy/.npz.", field="data")
    ] = None,
    image_size: Annotated[
        int | None,
        _opt(
            "--image-size",
            help="Images: side in pixels; images of another size are resized and centre-cropped.",
            field="image_size",
        ),
    ] = None,
    channels: Annotated[
        int | None, _opt("--channels", help="Images: 1 (grayscale) or 3 (RGB).", field="channels")
    ] = None,
    split: Annotated[str | None, _opt("--split", help="CIFAR-10 as distributed: train | test.", field="split")] = None,
    hflip: Annotated[
        bool | None, _opt("--hflip/--no-hflip", help="Images: random horizontal flips.", field="hflip")
    ] = None,
    conditional: Annotated[
        bool | None,
        _opt(
            "--conditional/--no-conditional",
            help="Condition generator and critic on the data's class labels (2-D mixtures, shapes, class"
            " sub-folders, an .npz's y or labels, CIFAR-10).",
            field="conditional",
            panel=_COND,
        ),
    ] = None,
    cond: Annotated[
        str | None,
        _opt(
            "--cond",
            help="The critic's conditioning: projection (Miyato & Koyama 2018) | acgan (an auxiliary classifier,"
            " as WGAN-GP's conditional code) | concat (a label embedding beside an MLP's input).",
            field="cond",
            panel=_COND,
        ),
    ] = None,
    acgan_scale: Annotated[
        float | None,
        _opt("--acgan-scale", help="acgan: the critic's cross-entropy weight.", field="acgan_scale", panel=_COND),
    ] = None,
    acgan_scale_g: Annotated[
        float | None,
        _opt(
            "--acgan-scale-g", help="acgan: the generator's cross-entropy weight.", field="acgan_scale_g", panel=_COND
        ),
    ] = None,
    lipschitz: Annotated[
        str | None, _opt("--lipschitz", help=" | ".join(available_methods()) + ".", field="lipschitz", panel=_METHOD)
    ] = None,
    clip: Annotated[float | None, _opt("--clip", help="clip: weight bound c.", field="clip", panel=_METHOD)] = None,
    penalty_weight: Annotated[
        float | None,
        _opt(
            "--lambda",
            "--gamma",
            help="gp, zgp: lambda in lambda E[.]; r1, r2: gamma in gamma/2 E||grad D||^2, Mescheder et al.'s"
            " convention (GAN_stability's reg_param 10, added with no 1/2, is --gamma 20).",
            field="penalty_weight",
            panel=_METHOD,
        ),
    ] = None,
    gp_target: Annotated[
        float | None, _opt("--gp-target", help="gp: target norm k.", field="gp_target", panel=_METHOD)
    ] = None,
    one_sided: Annotated[
        bool | None,
        _opt(
            "--one-sided/--two-sided",
            help="gp: penalise only norms above k (WGAN-LP).",
            field="one_sided",
            panel=_METHOD,
        ),
    ] = None,
    penalty_at: Annotated[
        str | None,
        _opt(
            "--penalty-at",
            help="Where the penalty looks: interp | real | fake | real+fake.",
            field="penalty_at",
            panel=_METHOD,
        ),
    ] = None,
    reg_every: Annotated[
        int | None,
        _opt(
            "--reg-every",
            help="Apply the penalty every N critic steps with weight N (lazy regularisation).",
            field="reg_every",
            panel=_METHOD,
        ),
    ] = None,
    loss: Annotated[
        str | None, _opt("--loss", help=" | ".join(choices("loss")) + ".", field="loss", panel=_OPTIM)
    ] = None,
    optimizer: Annotated[
        str | None, _opt("--optimizer", help=" | ".join(choices("optimizer")) + ".", field="optimizer", panel=_OPTIM)
    ] = None,
    lr_g: Annotated[float | None, _opt("--lr-g", help="Generator learning rate.", field="lr_g", panel=_OPTIM)] = None,
    lr_d: Annotated[float | None, _opt("--lr-d", help="Critic learning rate.", field="lr_d", panel=_OPTIM)] = None,
    beta1: Annotated[float | None, _opt("--beta1", help="Adam beta1.", field="beta1", panel=_OPTIM)] = None,
    beta2: Annotated[float | None, _opt("--beta2", help="Adam beta2.", field="beta2", panel=_OPTIM)] = None,
    n_critic: Annotated[
        int | None, _opt("--n-critic", help="Critic steps per generator step.", field="n_critic", panel=_OPTIM)
    ] = None,
    batch_size: Annotated[
        int | None, _opt("--batch-size", help="Batch size.", field="batch_size", panel=_OPTIM)
    ] = None,
    steps: Annotated[int | None, _opt("--steps", help="Generator iterations.", field="steps", panel=_OPTIM)] = None,
    lr_decay: Annotated[
        str | None,
        _opt(
            "--lr-decay",
            help="none | linear (to 0 at the last step, as WGAN-GP's CIFAR code).",
            field="lr_decay",
            panel=_OPTIM,
        ),
    ] = None,
    amp: Annotated[
        str | None,
        _opt(
            "--amp",
            help="Mixed precision: none | bf16 | fp16 (fp16 with a gradient scaler).",
            field="amp",
            panel=_OPTIM,
        ),
    ] = None,
    ema_decay: Annotated[
        float | None,
        _opt(
            "--ema-decay",
            help="Generator EMA decay, used for samples and evaluation; 0 disables.",
            field="ema_decay",
            panel=_OPTIM,
        ),
    ] = None,
    arch: Annotated[
        str | None,
        _opt(
            "--arch",
            help=" | ".join(choices("arch")) + " (mlp on images: flattened pixels; dcgan: 16 to 256 px and 28;"
            " resnet: 16, 28, 32 px).",
            field="arch",
            panel=_MODEL,
        ),
    ] = None,
    width: Annotated[
        int | None, _opt("--width", help="MLP hidden units; dcgan/resnet base channels.", field="width", panel=_MODEL)
    ] = None,
    depth: Annotated[
        int | None,
        _opt(
            "--depth",
            help="MLP hidden layers (images: the generator's, doubling up to --width; the critic has half).",
            field="depth",
            panel=_MODEL,
        ),
    ] = None,
    gen_norm: Annotated[
        str | None,
        _opt("--gen-norm", help="Generator normalisation: batch | layer | none.", field="gen_norm", panel=_MODEL),
    ] = None,
    z_dim: Annotated[int | None, _opt("--z-dim", help="Latent size.", field="z_dim", panel=_MODEL)] = None,
    critic_norm: Annotated[
        str | None,
        _opt(
            "--critic-norm", help="none | layer | batch (refused under a penalty).", field="critic_norm", panel=_MODEL
        ),
    ] = None,
    compile: Annotated[
        bool | None,
        _opt(
            "--compile/--no-compile",
            help="torch.compile every forward that allows it; penalised critic passes stay eager (no double backward "
            "under torch.compile).",
            field="compile",
        ),
    ] = None,
    tf32: Annotated[
        bool | None,
        _opt(
            "--tf32/--no-tf32",
            help="On CUDA: TensorFloat-32 matrix products and convolutions (10-bit mantissa inputs, float32 sums); "
            "--no-tf32 for full float32, which is StyleGAN2-ADA's default.",
            field="tf32",
        ),
    ] = None,
    threads: Annotated[int | None, _opt("--threads", help="CPU threads for the run.", field="threads")] = None,
    dist_timeout: Annotated[
        float | None,
        _opt(
            "--dist-timeout",
            help="Several processes: seconds a training step's collective waits for a peer before the run"
            " stops with the newest checkpoint (rank 0's evaluations and checkpoints are waited for apart).",
            field="dist_timeout",
        ),
    ] = None,
    seed: Seed = None,
    device: TrainDevice = None,
    log_every: Annotated[
        int | None, _opt("--log-every", help="Training scalars to metrics.jsonl.", field="log_every", panel=_SCHEDULE)
    ] = None,
    eval_every: Annotated[
        int | None, _opt("--eval-every", help="Quality metrics.", field="eval_every", panel=_SCHEDULE)
    ] = None,
    sample_every: Annotated[
        int | None, _opt("--sample-every", help="Pictures.", field="sample_every", panel=_SCHEDULE)
    ] = None,
    ckpt_every: Annotated[
        int | None,
        _opt(
            "--ckpt-every", help="Checkpoints (one is always written at the end).", field="ckpt_every", panel=_SCHEDULE
        ),
    ] = None,
    keep_last: Annotated[
        int | None,
        _opt(
            "--keep-last",
            help="Keep only the newest N checkpoints, deleting older ones once a newer one is safely on disk;"
            " 0 keeps all.",
            field="keep_last",
            panel=_SCHEDULE,
        ),
    ] = None,
    on_nonfinite: Annotated[
        str | None,
        _opt(
            "--on-nonfinite",
            help="stop | skip | rollback: on a NaN or Inf in a loss, penalty or gradient, stop naming it and the "
            "last good checkpoint (exit 1), drop that update and count it, or reload the last checkpoint with a "
            "fresh random stream (at most 3 times).",
            field="on_nonfinite",
            panel=_SCHEDULE,
        ),
    ] = None,
    eval_samples: Annotated[
        int | None,
        _opt("--eval-samples", help="Generated points per evaluation.", field="eval_samples", panel=_SCHEDULE),
    ] = None,
    eval_metrics: Annotated[
        str | None,
        _opt(
            "--eval-metrics",
            help="Images: metrics at eval steps, comma-separated: fid, kid, is (Inception Score, with --eval-features"
            " inception), pr (precision/recall), dc (density/coverage), or none.",
            field="eval_metrics",
            panel=_SCHEDULE,
        ),
    ] = None,
    eval_features: Annotated[
        str | None,
        _opt(
            "--eval-features",
            help="Images: the feature space of those metrics: random-conv (no weights; not comparable to"
            " published FIDs) or inception (Inception-v3 of published FIDs, from --inception).",
            field="eval_features",
            panel=_SCHEDULE,
        ),
    ] = None,
    inception: Annotated[
        str | None,
        _opt(
            "--inception",
            help="Inception-v3 weights file in torch-fidelity's layout (pt_inception-2015-12-05-6726825d.pth).",
            field="inception",
            panel=_SCHEDULE,
        ),
    ] = None,
    vgg: Annotated[
        str | None,
        _opt(
            "--vgg",
            help="VGG-16 weights in torchvision's layout (vgg16-397923af.pth, torch-fidelity's prc): precision/"
            "recall and density/coverage in the VGG-16 space they were published in.",
            field="vgg",
            panel=_SCHEDULE,
        ),
    ] = None,
    tensorboard: Annotated[
        bool | None,
        _opt(
            "--tensorboard/--no-tensorboard",
            help="Also write TensorBoard events under RUN/tensorboard (pip install 'ganctl\\[tensorboard]').",
            field="tensorboard",
            panel=_SCHEDULE,
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="The run folder. (default: runs/DATA-METHOD-seedSEED, DATA the data's file or folder name)",
            show_default=False,
        ),
    ] = None,
    config_file: Annotated[
        Path | None,
        typer.Option("--config", help="TOML file of settings (keys as the flags, without '--'); flags override it."),
    ] = None,
    resume: Annotated[
        Path | None,
        typer.Option(
            "--resume", help="Continue from a checkpoint file or run folder; only schedule settings may change."
        ),
    ] = None,
    overwrite: Overwrite = False,
    nproc: Annotated[
        int | None,
        typer.Option(
            "--nproc",
            help="Train data-parallel on N processes (one per GPU on CUDA, gloo on the CPU) by launching torchrun "
            "with these same options; --batch-size is per process.",
            show_default=False,
        ),
    ] = None,
    max_restarts: Annotated[
        int,
        typer.Option(
            "--max-restarts",
            help="With --nproc: restart the whole group up to K times when a process fails; every process"
            " resumes from the run folder's newest readable checkpoint (as under torchrun --max-restarts).",
        ),
    ] = 0,
    json_output: Json = False,
) -> None:
    """Train a generator against a critic kept Lipschitz by --lipschitz."""
    from ganctl.config import from_dict
    from ganctl.runfolder import run_dir_of

    values = settings(locals(), config_file)
    if resume is not None:
        kwargs = {"resume": resume, "overrides": values, "out": out or run_dir_of(resume)}
    else:
        config = from_dict(values, where="options")
        name = Path(config.data).stem or "data"
        kwargs = {"config": config, "out": out or Path("runs") / f"{name}-{config.lipschitz}-seed{config.seed}"}
    if nproc is not None or max_restarts:
        _launch(nproc, max_restarts, kwargs["out"])
    from ganctl.training.loop import train as run_train

    if os.environ.get("RANK", "0") != "0":  # a torchrun rank other than 0: rank 0 reports
        run_train(**kwargs, overwrite=overwrite)
        return
    with TrainProgress() as progress:
        summary = run_train(**kwargs, overwrite=overwrite, on_event=progress)
    if json_output:
        print_json(summary)
    print_summary(summary)


def settings(given: dict[str, Any], config_file: Path | None) -> dict[str, Any]:
    """The config values of parsed `train` options: the --config file's, then every option
    given (parameter names are `TrainConfig` field names)."""
    from ganctl.config import field_names, load_toml

    flags = {name: given[name] for name in field_names() if given.get(name) is not None}
    return {**(load_toml(config_file) if config_file else {}), **flags}


def parse_train_options(args: list[str], command: str) -> tuple[dict[str, Any], list[str]]:
    """`ganctl train`'s options among `args` as config values, by train's own parser, and the
    words that are not options (another command that trains takes train's options this way).
    Options of train that are not settings (--resume, --out, --json...) are refused."""
    import typer.main

    from ganctl.errors import ConfigError

    app = typer.Typer()
    app.command()(train)
    parser = typer.main.get_command(app)
    try:
        ctx = parser.make_context(command, list(args), allow_extra_args=True)
    except Exception as exc:  # the parser's UsageError (typer's or click's, by version)
        raise ConfigError(_usage_message(exc, command)) from None
    extra = sorted(name for name, value in ctx.params.items() if name in _NOT_SETTINGS and value not in (None, False))
    if extra:
        flags = ", ".join(next(p.opts[0] for p in parser.params if p.name == name) for name in extra)
        raise ConfigError(f"{command}: {flags} is an option of ganctl train only")
    return settings(ctx.params, ctx.params.get("config_file")), list(ctx.args)


_NOT_SETTINGS = ("out", "resume", "overwrite", "nproc", "max_restarts", "json_output")


def _usage_message(exc: Exception, command: str) -> str:
    from ganctl.config import field_names, field_type

    option = getattr(exc, "option_name", None)
    if option:  # no such option
        return f"{command}: unknown option {option}; any option of `ganctl train` is accepted (see ganctl train --help)"
    param = getattr(exc, "param", None)
    if param is not None and getattr(param, "opts", None) and param.name in field_names():
        return f"{command}: {param.opts[0]} must be {field_type(param.name).__name__} ({exc.format_message()})"  # type: ignore[attr-defined]
    formatted = getattr(exc, "format_message", None)
    return f"{command}: {formatted() if formatted else exc}"


def _launch(nproc: int | None, max_restarts: int, out: Path) -> None:
    """Re-run this command under torchrun on `nproc` processes (restarting the group up to
    `max_restarts` times) and exit with its status; a failed group is one line."""
    import sys

    from ganctl.errors import ConfigError
    from ganctl.fleet.launch import launch

    if nproc is None:
        raise ConfigError("--max-restarts restarts a group of processes: give --nproc N as well")
    if nproc < 1:
        raise ConfigError(f"--nproc must be >= 1, got {nproc}")
    if max_restarts < 0:
        raise ConfigError(f"--max-restarts must be >= 0, got {max_restarts}")
    if os.environ.get("WORLD_SIZE"):
        raise ConfigError("--nproc: already running under torchrun; drop --nproc (and use torchrun's --max-restarts)")
    args, argv, i = [], sys.argv[1:], 0
    while i < len(argv):  # the same command line without --nproc and --max-restarts
        if argv[i] in ("--nproc", "--max-restarts"):
            i += 2
            continue
        if not argv[i].startswith(("--nproc=", "--max-restarts=")):
            args.append(argv[i])
        i += 1
    outcome = launch(args, nproc, max_restarts, out)
    if outcome.message is not None:
        raise fail(outcome.message, outcome.code)
    raise typer.Exit(outcome.code)
