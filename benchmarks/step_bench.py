"""Time full training iterations (n_critic critic steps and one generator step) of ganctl's
engine against the textbook loop, interleaved in one process on the same models, batch and
device, and put the critic step's achieved FLOP/s next to the machine's measured matrix-multiply
throughput.

    python benchmarks/step_bench.py                       # CPU cases (and CUDA ones when present)
    python benchmarks/step_bench.py --device cuda --json results.json
    python benchmarks/step_bench.py --methods gp --models mlp --batches 256 --iters 30
    python benchmarks/step_bench.py --device cuda --models dcgan64 --amp bf16   # the engine in bf16

The textbook loop is the tutorial pattern for penalised critics, written here on purpose: three
critic forwards (real, fake, interpolates), `torch.autograd.grad(..., create_graph=True)` on the
interpolates, the penalty on the flattened per-sample norm, `zero_grad()`, one backward, a step
of torch.optim.Adam. A third loop, "single pass", is the same with one critic forward over
[real, fake, x_hat]. Where the critic is a plain ReLU MLP, which the engine steps through its
hand-written backward (`ganctl.training.fused_mlp`), a fourth loop is the engine forced onto its autograd
path, so that each part's share is visible. All start from identical weights and the method's
lr and betas, and draw their own batches.

Timing, and how it tames a shared machine's noise: the loops run in rounds; in each round every
loop runs one block of `--block` iterations (the order rotated from round to round, so no loop
always follows the same one), and each round gives one ratio per loop (textbook block time /
that loop's block time). A block of many iterations averages the scheduler's hiccups that made
single-iteration pairs range from 0.88 to 3.07; a ratio within one round compares loops that
ran seconds apart; the median over rounds (`--rounds`, at least 5) drops the rounds a burst of
other work landed in, and the spread of the round ratios (min, max) is reported beside it so a
noisy run shows itself. Reported: median seconds per iteration, the median round ratios
textbook / engine, textbook / single pass and textbook / engine's autograd path (above 1:
faster than the textbook) with their spread, peak
memory on CUDA, the critic step's FLOPs in the engine and the textbook (torch's per-operator
formulas), and the engine's critic-step FLOP/s as a share of the measured dense matmul FLOP/s.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from ganctl.config import TrainConfig
from ganctl.data import sample_shape
from ganctl.methods.resolve import resolve
from ganctl.models import build_models
from ganctl.training.engine import Trainer
from ganctl.training.state import OPTIMIZER_IMPLEMENTATION_FLAGS

MODELS = {  # name -> config changes
    "mlp": {"data": "8gaussians"},
    "mlp16": {"data": "shapes", "image_size": 16, "arch": "mlp"},  # the README's CPU image model, 16 px
    "dcgan32": {"data": "shapes", "image_size": 32},
    "dcgan64": {"data": "shapes", "image_size": 64},
}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def plain_copy(opt: torch.optim.Optimizer, params) -> torch.optim.Optimizer:
    """The same optimizer and hyperparameters with torch's default implementation."""
    settings = {k: v for k, v in opt.defaults.items() if k not in OPTIMIZER_IMPLEMENTATION_FLAGS}
    return type(opt)(params, **settings)


class Textbook:
    """The tutorial WGAN-GP / R1 loop: its own copy of the models (built from the same config
    and seed, so the same initial weights; outside the engine its activations are plain
    torch ones) and the recipe's optimizer with torch's default implementation."""

    def __init__(self, trainer: Trainer):
        self.cfg, self.device, self.data = trainer.cfg, trainer.device, trainer.dataset
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(trainer.cfg.seed)
            generator, critic = build_models(trainer.cfg, sample_shape(trainer.cfg))
        self.G, self.D = generator.to(self.device), critic.to(self.device)
        self.opt_g = plain_copy(trainer.opt_g, self.G.parameters())
        self.opt_d = plain_copy(trainer.opt_d, self.D.parameters())
        if trainer.cfg.lipschitz not in ("gp", "r1"):
            raise SystemExit(f"the textbook loop is written for gp and r1, not {trainer.cfg.lipschitz}")
        self.weight = trainer.cfg.penalty_weight
        self.r1 = trainer.cfg.lipschitz == "r1"
        self.rng = torch.Generator(device=self.device).manual_seed(1)

    def z(self) -> torch.Tensor:
        return torch.randn(self.cfg.batch_size, self.cfg.z_dim, generator=self.rng, device=self.device)

    def critic_step(self) -> None:
        b = self.cfg.batch_size
        real = self.data.sample(b, self.rng, self.device)
        fake = self.G(self.z()).detach()
        if self.r1:  # zero-centred penalty on real points, non-saturating loss
            real.requires_grad_(True)
            d_real = self.D(real)
            (g,) = torch.autograd.grad(d_real.sum(), real, create_graph=True)
            d_fake = self.D(fake)
            loss = torch.nn.functional.softplus(-d_real).mean() + torch.nn.functional.softplus(d_fake).mean()
            loss = loss + self.weight / 2 * g.reshape(b, -1).pow(2).sum(1).mean()
        else:
            d_real, d_fake = self.D(real).mean(), self.D(fake).mean()
            loss = d_fake - d_real
            eps = torch.rand(b, *[1] * (real.dim() - 1), generator=self.rng, device=self.device)
            x_hat = (eps * real + (1 - eps) * fake).requires_grad_(True)
            (g,) = torch.autograd.grad(self.D(x_hat).sum(), x_hat, create_graph=True)
            loss = loss + self.weight * (g.reshape(b, -1).norm(2, dim=1) - 1).pow(2).mean()
        self.opt_d.zero_grad()
        loss.backward()
        self.opt_d.step()

    def generator_step(self) -> None:
        out = self.D(self.G(self.z()))
        loss = torch.nn.functional.softplus(-out).mean() if self.r1 else -out.mean()
        self.opt_g.zero_grad()
        loss.backward()
        self.opt_g.step()

    def train_step(self) -> None:
        for _ in range(self.cfg.n_critic):
            self.critic_step()
        self.generator_step()


class SinglePass(Textbook):
    """The textbook loop with one critic forward over every point set, [real, fake, x_hat]
    (R1: [real, fake] with real a leaf), the penalty's input gradient taken from that pass.
    Both backward passes of the penalty then run over all the rows, not just the penalised
    ones: this is what the engine measured slower, and why it runs two passes instead."""

    def critic_step(self) -> None:
        b = self.cfg.batch_size
        real = self.data.sample(b, self.rng, self.device)
        fake = self.G(self.z()).detach()
        if self.r1:
            real.requires_grad_(True)
            out = self.D(torch.cat([real, fake]))
            (g,) = torch.autograd.grad(out.sum(), real, create_graph=True)
            d_real, d_fake = out[:b], out[b:]
            loss = torch.nn.functional.softplus(-d_real).mean() + torch.nn.functional.softplus(d_fake).mean()
            loss = loss + self.weight / 2 * g.reshape(b, -1).pow(2).sum(1).mean()
        else:
            eps = torch.rand(b, *[1] * (real.dim() - 1), generator=self.rng, device=self.device)
            x_hat = (eps * real + (1 - eps) * fake).requires_grad_(True)
            out = self.D(torch.cat([real, fake, x_hat]))
            (g,) = torch.autograd.grad(out.sum(), x_hat, create_graph=True)
            loss = out[b : 2 * b].mean() - out[:b].mean()
            loss = loss + self.weight * (g.reshape(b, -1).norm(2, dim=1) - 1).pow(2).mean()
        self.opt_d.zero_grad()
        loss.backward()
        self.opt_d.step()


def matmul_flops(device: torch.device, n: int = 2048, repeats: int = 10) -> float:
    """Measured dense float32 matmul throughput (FLOP/s): the hardware's practical ceiling."""
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    a @ b
    sync(device)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        sync(device)
        times.append(time.perf_counter() - t)
    return 2 * n**3 / statistics.median(times)


class FlopCount(TorchDispatchMode):
    """Theoretical FLOPs of the operators that run (torch's own per-operator formulas).
    torch's FlopCounterMode would do, but its module tracker refuses autograd.grad on leaves."""

    def __init__(self) -> None:
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            self.total += formula(*args, **kwargs, out_val=out)
        return out


def step_flops(step, *objects) -> float:
    """FLOPs of one call of `step`, leaving every module and optimizer in `objects` as it was."""
    states = [copy.deepcopy(o.state_dict()) for o in objects]
    with FlopCount() as counter:
        step()
    for o, state in zip(objects, states):
        o.load_state_dict(state)
    return float(counter.total)


def repeat(step, n: int):
    """A call that runs `step` n times."""

    def run() -> None:
        for _ in range(n):
            step()

    return run


def timed(step, device: torch.device) -> float:
    sync(device)
    t = time.perf_counter()
    step()
    sync(device)
    return time.perf_counter() - t


def bench(
    method: str,
    model: str,
    batch: int,
    device: str,
    iters: int,
    warmup: int,
    peak: float,
    reg_every: int = 1,
    compile: bool = False,
    amp: str = "none",
    block: int = 10,
) -> dict:
    cfg = TrainConfig(
        lipschitz=method,
        batch_size=batch,
        device=device,
        ema_decay=0.0,
        reg_every=reg_every,
        compile=compile,
        amp=amp,
        **MODELS[model],
    )
    engine = Trainer(resolve(cfg))
    if engine.device.type == "cuda":  # every loop at the engine's precision (its --tf32 covers its own steps only)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = engine.cfg.tf32
    loops = {
        "engine": engine.train_step,
        "textbook": Textbook(engine).train_step,
        "single_pass": SinglePass(engine).train_step,
    }
    autograd = None
    if engine.uses_fused_step:  # a plain MLP critic: also its autograd path, to show what each part gives
        autograd = Trainer(resolve(cfg), fused=False)
        loops["engine_autograd"] = autograd.train_step
    dev = engine.device
    for _ in range(warmup):
        for step in loops.values():
            step()
    times: dict[str, list[float]] = {name: [] for name in loops}  # seconds per iteration, per round
    names = list(loops)
    for r in range(iters):  # rounds: one block of each loop, the order rotated
        for name in names[r % len(names) :] + names[: r % len(names)]:
            times[name].append(timed(repeat(loops[name], block), dev) / block)
    rounds = {name: [t / e for t, e in zip(times["textbook"], times[name])] for name in loops}
    memory = {}
    if dev.type == "cuda":
        for name, step in loops.items():
            torch.cuda.reset_peak_memory_stats(dev)
            step()
            sync(dev)
            memory[f"peak_mib_{name}"] = torch.cuda.max_memory_allocated(dev) / 2**20
    textbook = loops["textbook"].__self__
    flops = step_flops(engine.critic_step, engine.critic, engine.opt_d)
    textbook_flops = step_flops(textbook.critic_step, textbook.D, textbook.opt_d)
    critic = statistics.median(timed(engine.critic_step, dev) for _ in range(iters))
    median = {name: statistics.median(t) for name, t in times.items()}
    if autograd is not None:
        extra = {
            "engine_autograd_s": median["engine_autograd"],
            "autograd_speedup": statistics.median(rounds["engine_autograd"]),
            "autograd_critic_step_gflop": step_flops(autograd.critic_step, autograd.critic, autograd.opt_d) / 1e9,
        }
    else:
        extra = {}
    return {
        "method": method,
        "model": model,
        "batch": batch,
        "device": str(dev),
        "n_critic": engine.cfg.n_critic,
        "reg_every": reg_every,
        "compile": compile,
        "amp": amp,
        "engine_s": median["engine"],
        "textbook_s": median["textbook"],
        "single_pass_s": median["single_pass"],
        "rounds": iters,
        "block": block,
        "speedup": statistics.median(rounds["engine"]),
        "speedup_range": [min(rounds["engine"]), max(rounds["engine"])],
        "round_speedups": rounds["engine"],
        "single_pass_speedup": statistics.median(rounds["single_pass"]),
        "critic_step_gflop": flops / 1e9,
        "textbook_critic_step_gflop": textbook_flops / 1e9,
        "critic_step_s": critic,
        "critic_gflops_per_s": flops / critic / 1e9,
        "share_of_matmul_peak": flops / critic / peak,
        **extra,
        **memory,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cpu, and cuda when present)")
    parser.add_argument("--methods", default="gp,r1", help="penalised methods: gp, r1")
    parser.add_argument("--models", default="mlp,dcgan32,dcgan64")
    parser.add_argument(
        "--batches",
        default=None,
        help="comma-separated (default: 256,2048 for mlp; 16,64 for dcgan on CPU, 64,256 on CUDA)",
    )
    parser.add_argument(
        "--reg-every",
        default="1",
        help="comma-separated lazy-regularisation intervals for the engine"
        " (the textbook loop always penalises every step), e.g. 1,4",
    )
    parser.add_argument("--compile", action="store_true", help="the engine with --compile (warm-up compiles it)")
    parser.add_argument(
        "--amp",
        default="none",
        choices=["none", "bf16", "fp16"],
        help="the engine's mixed precision (the textbook loops stay in float32)",
    )
    parser.add_argument("--rounds", "--iters", dest="iters", type=int, default=11, help="rounds (at least 5)")
    parser.add_argument("--block", type=int, default=10, help="iterations of each loop per round")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--json", type=Path, default=None, help="also write every number here")
    args = parser.parse_args()
    if args.iters < 5:
        parser.error("--rounds: at least 5")
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = [args.device] if args.device else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    if any(d.startswith("cuda") for d in devices):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    results = []
    print(
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {torch.get_num_threads()} CPU "
        f"threads" + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else "")
    )
    print(
        "| device | model | method | reg every | batch | engine s/it | textbook s/it | speed-up (round min-max) |"
        " single pass | "
        "engine, autograd path | critic GFLOP engine / textbook | critic GFLOP/s | of matmul peak | peak MiB (engine "
        "/ textbook) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for device in devices:
        peak = matmul_flops(torch.device(device))
        for model in args.models.split(","):
            if args.batches:
                batches = [int(b) for b in args.batches.split(",")]
            else:
                batches = [256, 2048] if model == "mlp" else ([16, 64] if device == "cpu" else [64, 256])
            for method in args.methods.split(","):
                for batch, reg in ((b, int(r)) for b in batches for r in args.reg_every.split(",")):
                    r = bench(
                        method,
                        model,
                        batch,
                        device,
                        args.iters,
                        args.warmup,
                        peak,
                        reg,
                        args.compile,
                        args.amp,
                        args.block,
                    )
                    r["matmul_gflops_per_s"] = peak / 1e9
                    results.append(r)
                    mem = (
                        f"{r['peak_mib_engine']:.0f} / {r['peak_mib_textbook']:.0f}" if "peak_mib_engine" in r else "-"
                    )
                    auto = f"{r['autograd_speedup']:.2f}x" if "autograd_speedup" in r else "-"
                    label = device if args.amp == "none" else f"{device} ({args.amp})"
                    print(
                        f"| {label} | {model} | {method} | {reg} | {batch} | {r['engine_s']:.4f} | "
                        f"{r['textbook_s']:.4f} | "
                        f"{r['speedup']:.2f}x ({r['speedup_range'][0]:.2f}-{r['speedup_range'][1]:.2f}) |"
                        f" {r['single_pass_speedup']:.2f}x | {auto} | "
                        f"{r['critic_step_gflop']:.3f} / {r['textbook_critic_step_gflop']:.3f} | "
                        f"{r['critic_gflops_per_s']:.1f} | "
                        f"{r['share_of_matmul_peak']:.1%} | {mem} |",
                        flush=True,
                    )
        print(f"measured {device} float32 matmul: {peak / 1e9:.1f} GFLOP/s")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
