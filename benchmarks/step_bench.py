"""Time full training iterations (n_critic critic steps and one generator step) of ganctl's
engine against the textbook loop, interleaved in one process on the same models, batch and
device, and put the critic step's achieved FLOP/s next to the machine's measured matrix-multiply
throughput.

    python benchmarks/step_bench.py                       # CPU cases (and CUDA ones when present)
    python benchmarks/step_bench.py --device cuda --json results.json
    python benchmarks/step_bench.py --methods gp --models mlp --batches 256 --iters 30

The textbook loop is the tutorial pattern for penalised critics, written here on purpose: three
critic forwards (real, fake, interpolates), `torch.autograd.grad(..., create_graph=True)` on the
interpolates, the penalty on the flattened per-sample norm, `zero_grad()`, one backward, a step.
Both sides start from identical weights and optimizer settings (the engine's recipe for the
method), draw their own batches, and alternate iteration by iteration, so machine noise hits
both alike. Reported: median seconds per iteration of each, their ratio (textbook / engine:
above 1 means the engine is faster), peak memory on CUDA, and the engine's critic-step FLOP/s
(counted by torch's FlopCounterMode) as a share of the measured dense matmul FLOP/s.
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

from ganctl.config import TrainConfig  # noqa: E402
from ganctl.engine import Trainer  # noqa: E402

MODELS = {  # name -> config changes
    "mlp": {"data": "8gaussians"},
    "dcgan32": {"data": "shapes", "image_size": 32},
    "dcgan64": {"data": "shapes", "image_size": 64},
}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Textbook:
    """The tutorial WGAN-GP / R1 loop over copies of the engine's modules and optimizers."""

    def __init__(self, trainer: Trainer):
        self.cfg, self.device, self.data = trainer.cfg, trainer.device, trainer.dataset
        self.G, self.D = copy.deepcopy(trainer.generator), copy.deepcopy(trainer.critic)
        self.opt_g = type(trainer.opt_g)(self.G.parameters(), **trainer.opt_g.defaults)
        self.opt_d = type(trainer.opt_d)(self.D.parameters(), **trainer.opt_d.defaults)
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


def critic_step_flops(trainer: Trainer) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    state = copy.deepcopy(trainer.critic.state_dict()), copy.deepcopy(trainer.opt_d.state_dict())
    with FlopCounterMode(display=False) as counter:
        trainer._critic_step()
    trainer.critic.load_state_dict(state[0])
    trainer.opt_d.load_state_dict(state[1])
    return float(counter.get_total_flops())


def timed(step, device: torch.device) -> float:
    sync(device)
    t = time.perf_counter()
    step()
    sync(device)
    return time.perf_counter() - t


def bench(method: str, model: str, batch: int, device: str, iters: int, warmup: int, peak: float,
          reg_every: int = 1) -> dict:
    cfg = TrainConfig(lipschitz=method, batch_size=batch, device=device, ema_decay=0.0, reg_every=reg_every, **MODELS[model])
    engine = Trainer(cfg)
    textbook = Textbook(engine)
    dev = engine.device
    for _ in range(warmup):
        engine.train_step()
        textbook.train_step()
    t_engine, t_textbook = [], []
    for _ in range(iters):  # interleaved: noise hits both alike
        t_engine.append(timed(engine.train_step, dev))
        t_textbook.append(timed(textbook.train_step, dev))
    memory = {}
    if dev.type == "cuda":
        for name, obj in (("engine", engine), ("textbook", textbook)):
            torch.cuda.reset_peak_memory_stats(dev)
            obj.train_step()
            sync(dev)
            memory[f"peak_mib_{name}"] = torch.cuda.max_memory_allocated(dev) / 2**20
    flops = critic_step_flops(engine)
    critic = statistics.median(timed(engine._critic_step, dev) for _ in range(iters))
    e, t = statistics.median(t_engine), statistics.median(t_textbook)
    return {
        "method": method, "model": model, "batch": batch, "device": str(dev), "n_critic": engine.cfg.n_critic,
        "reg_every": reg_every,
        "engine_s": e, "textbook_s": t, "speedup": t / e,
        "critic_step_gflop": flops / 1e9,
        "critic_step_s": critic,
        "critic_gflops_per_s": flops / critic / 1e9,
        "share_of_matmul_peak": flops / critic / peak,
        **memory,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cpu, and cuda when present)")
    parser.add_argument("--methods", default="gp,r1", help="penalised methods: gp, r1")
    parser.add_argument("--models", default="mlp,dcgan32,dcgan64")
    parser.add_argument("--batches", default=None, help="comma-separated (default: 256,2048 for mlp; 16,64 for dcgan on CPU, 64,256 on CUDA)")
    parser.add_argument("--reg-every", default="1", help="comma-separated lazy-regularisation intervals for the engine"
                        " (the textbook loop always penalises every step), e.g. 1,4")
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--json", type=Path, default=None, help="also write every number here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = [args.device] if args.device else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    if any(d.startswith("cuda") for d in devices):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    results = []
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {torch.get_num_threads()} CPU threads"
          + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""))
    print("| device | model | method | reg every | batch | engine s/it | textbook s/it | speed-up | critic GFLOP/s | of matmul peak | peak MiB (engine / textbook) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for device in devices:
        peak = matmul_flops(torch.device(device))
        for model in args.models.split(","):
            if args.batches:
                batches = [int(b) for b in args.batches.split(",")]
            else:
                batches = [256, 2048] if model == "mlp" else ([16, 64] if device == "cpu" else [64, 256])
            for method in args.methods.split(","):
                for batch, reg in ((b, int(r)) for b in batches for r in args.reg_every.split(",")):
                    r = bench(method, model, batch, device, args.iters, args.warmup, peak, reg)
                    r["matmul_gflops_per_s"] = peak / 1e9
                    results.append(r)
                    mem = f"{r['peak_mib_engine']:.0f} / {r['peak_mib_textbook']:.0f}" if "peak_mib_engine" in r else "-"
                    print(f"| {device} | {model} | {method} | {reg} | {batch} | {r['engine_s']:.4f} | {r['textbook_s']:.4f} | "
                          f"{r['speedup']:.2f}x | {r['critic_gflops_per_s']:.1f} | {r['share_of_matmul_peak']:.1%} | {mem} |", flush=True)
        print(f"measured {device} float32 matmul: {peak / 1e9:.1f} GFLOP/s")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
