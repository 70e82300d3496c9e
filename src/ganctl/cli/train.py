"""`ganctl train`: parse options, build a config, call `ganctl.run.train`, show the result.

Every option defaults to "not given" so that precedence is simple: flags override the
--config file, which overrides the method's published recipe, which overrides ganctl's
defaults. Parameter names equal `TrainConfig` field names.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from ganctl.cli.options import Device, Json, Out, Seed
from ganctl.cli.output import TrainProgress, handle_errors, print_json, print_summary

_MODEL = "Model"
_METHOD = "Lipschitz method"
_OPTIM = "Optimisation (default: the method's published recipe)"
_SCHEDULE = "Schedule (in generator steps; 0 disables)"


def _opt(*names: str, help: str, panel: str | None = None) -> typer.models.OptionInfo:
    return typer.Option(*names, help=help, rich_help_panel=panel, show_default=False)


@handle_errors
def train(
    data: Annotated[Optional[str], _opt("--data", help="8gaussians | 25gaussians | swissroll | ring | checkerboard | shapes, a folder of images, or FILE.npy/.npz. (default: 25gaussians)")] = None,
    image_size: Annotated[Optional[int], _opt("--image-size", help="Images: side in pixels, resized and centre-cropped. (default: 32 for shapes, 64 for folders, an array's own)")] = None,
    channels: Annotated[Optional[int], _opt("--channels", help="Images: 1 (grayscale) or 3 (RGB). (default: the source's)")] = None,
    hflip: Annotated[Optional[bool], typer.Option("--hflip/--no-hflip", help="Images: random horizontal flips. (default: no)", show_default=False)] = None,
    lipschitz: Annotated[Optional[str], _opt("--lipschitz", help="clip | gp | zgp | r1 | r2 | sn | none. (default: gp)", panel=_METHOD)] = None,
    clip: Annotated[Optional[float], _opt("--clip", help="clip: weight bound c. (default: 0.01)", panel=_METHOD)] = None,
    penalty_weight: Annotated[Optional[float], _opt("--lambda", "--gamma", help="gp, zgp: lambda; r1, r2: gamma (penalty gamma/2 E||grad||^2). (default: 10)", panel=_METHOD)] = None,
    gp_target: Annotated[Optional[float], _opt("--gp-target", help="gp: target norm k. (default: 1)", panel=_METHOD)] = None,
    one_sided: Annotated[Optional[bool], typer.Option("--one-sided/--two-sided", help="gp: penalise only norms above k (WGAN-LP). (default: two-sided)", rich_help_panel=_METHOD, show_default=False)] = None,
    penalty_at: Annotated[Optional[str], _opt("--penalty-at", help="zgp: interp | real | fake | real+fake. (default: interp)", panel=_METHOD)] = None,
    reg_every: Annotated[Optional[int], _opt("--reg-every", help="Apply the penalty every N critic steps with weight N (lazy regularisation). (default: 1)", panel=_METHOD)] = None,
    loss: Annotated[Optional[str], _opt("--loss", help="wasserstein | hinge | ns | lsgan. (default: the method's)", panel=_OPTIM)] = None,
    optimizer: Annotated[Optional[str], _opt("--optimizer", help="adam | rmsprop.", panel=_OPTIM)] = None,
    lr_g: Annotated[Optional[float], _opt("--lr-g", help="Generator learning rate.", panel=_OPTIM)] = None,
    lr_d: Annotated[Optional[float], _opt("--lr-d", help="Critic learning rate.", panel=_OPTIM)] = None,
    beta1: Annotated[Optional[float], _opt("--beta1", help="Adam beta1.", panel=_OPTIM)] = None,
    beta2: Annotated[Optional[float], _opt("--beta2", help="Adam beta2.", panel=_OPTIM)] = None,
    n_critic: Annotated[Optional[int], _opt("--n-critic", help="Critic steps per generator step.", panel=_OPTIM)] = None,
    batch_size: Annotated[Optional[int], _opt("--batch-size", help="Batch size. (default: 256)", panel=_OPTIM)] = None,
    steps: Annotated[Optional[int], _opt("--steps", help="Generator iterations. (default: 3000)", panel=_OPTIM)] = None,
    lr_decay: Annotated[Optional[str], _opt("--lr-decay", help="none | linear (to 0 at the last step, as WGAN-GP's CIFAR code). (default: none)", panel=_OPTIM)] = None,
    amp: Annotated[Optional[str], _opt("--amp", help="Mixed precision: none | bf16 | fp16 (fp16 with a gradient scaler). (default: none)", panel=_OPTIM)] = None,
    ema_decay: Annotated[Optional[float], _opt("--ema-decay", help="Generator EMA decay, used for samples and evaluation; 0 disables. (default: 0.999)", panel=_OPTIM)] = None,
    arch: Annotated[Optional[str], _opt("--arch", help="mlp | dcgan | resnet (32 px). (default: mlp for 2-D data, dcgan for images)", panel=_MODEL)] = None,
    width: Annotated[Optional[int], _opt("--width", help="MLP hidden units; dcgan/resnet base channels. (default: 128 / 64 / 128)", panel=_MODEL)] = None,
    depth: Annotated[Optional[int], _opt("--depth", help="MLP hidden layers. (default: 3)", panel=_MODEL)] = None,
    z_dim: Annotated[Optional[int], _opt("--z-dim", help="Latent size. (default: 2 for 2-D data, 128 for images)", panel=_MODEL)] = None,
    critic_norm: Annotated[Optional[str], _opt("--critic-norm", help="none | layer | batch (refused under a penalty). (default: none)", panel=_MODEL)] = None,
    compile: Annotated[Optional[bool], typer.Option("--compile/--no-compile", help="torch.compile every forward that allows it; penalised critic passes stay eager (no double backward under torch.compile). (default: no)", show_default=False)] = None,
    tf32: Annotated[Optional[bool], typer.Option("--tf32/--no-tf32", help="On CUDA: TensorFloat-32 matrix products and convolutions (10-bit mantissa inputs, float32 sums); --no-tf32 for full float32, which is StyleGAN2-ADA's default. (default: yes)", show_default=False)] = None,
    seed: Seed = None,
    device: Device = None,
    log_every: Annotated[Optional[int], _opt("--log-every", help="(default: 50)", panel=_SCHEDULE)] = None,
    eval_every: Annotated[Optional[int], _opt("--eval-every", help="Quality metrics. (default: 500)", panel=_SCHEDULE)] = None,
    sample_every: Annotated[Optional[int], _opt("--sample-every", help="Pictures. (default: 500)", panel=_SCHEDULE)] = None,
    ckpt_every: Annotated[Optional[int], _opt("--ckpt-every", help="Checkpoints (one is always written at the end). (default: 1000)", panel=_SCHEDULE)] = None,
    on_nonfinite: Annotated[Optional[str], _opt("--on-nonfinite", help="stop | skip | rollback: on a NaN or Inf in a loss, penalty or gradient, stop naming it and the last good checkpoint (exit 1), drop that update and count it, or reload the last checkpoint with a fresh random stream (at most 3 times). (default: stop)", panel=_SCHEDULE)] = None,
    eval_samples: Annotated[Optional[int], _opt("--eval-samples", help="Generated points per evaluation. (default: 2500)", panel=_SCHEDULE)] = None,
    out: Out = None,
    config_file: Annotated[Optional[Path], typer.Option("--config", help="TOML file of settings (keys as the flags, without '--'); flags override it.")] = None,
    resume: Annotated[Optional[Path], typer.Option("--resume", help="Continue from a checkpoint file or run folder; only schedule settings may change.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace the checkpoints already in --out.")] = False,
    nproc: Annotated[Optional[int], typer.Option("--nproc", help="Train data-parallel on N processes (one per GPU on CUDA, gloo on the CPU) by launching torchrun with these same options; --batch-size is per process.", show_default=False)] = None,
    json_output: Json = False,
) -> None:
    """Train a generator against a critic kept Lipschitz by --lipschitz."""
    if nproc is not None:
        _launch(nproc)
    from ganctl.config import field_names, from_dict, load_toml
    from ganctl.run import run_dir_of
    from ganctl.run import train as run_train

    given = locals()
    flags = {name: given[name] for name in field_names() if given.get(name) is not None}
    values = {**(load_toml(config_file) if config_file else {}), **flags}

    if resume is not None:
        kwargs = {"resume": resume, "overrides": values, "out": out or run_dir_of(resume)}
    else:
        config = from_dict(values, where="options")
        name = Path(config.data).stem or "data"
        kwargs = {"config": config, "out": out or Path("runs") / f"{name}-{config.lipschitz}-seed{config.seed}"}
    if os.environ.get("RANK", "0") != "0":  # a torchrun rank other than 0: rank 0 reports
        run_train(**kwargs, overwrite=overwrite)
        return
    with TrainProgress() as progress:
        summary = run_train(**kwargs, overwrite=overwrite, on_event=progress)
    if json_output:
        print_json(summary)
    print_summary(summary)


def _launch(nproc: int) -> None:
    """Re-run this command under torchrun on `nproc` processes and exit with its status."""
    import subprocess
    import sys

    from ganctl.errors import ConfigError

    if nproc < 1:
        raise ConfigError(f"--nproc must be >= 1, got {nproc}")
    if os.environ.get("WORLD_SIZE"):
        raise ConfigError("--nproc: already running under torchrun; drop --nproc")
    args, argv, i = [], sys.argv[1:], 0
    while i < len(argv):  # the same command line without --nproc
        if argv[i] == "--nproc":
            i += 2
            continue
        if not argv[i].startswith("--nproc="):
            args.append(argv[i])
        i += 1
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", "-m", "ganctl", *args]
    raise typer.Exit(subprocess.call(command))
