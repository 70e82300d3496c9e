"""Where a training iteration's time goes: torch.profiler over full iterations (n_critic critic
steps and one generator step) of ganctl's engine, each operator's own CPU time put in one of

- matmul: matrix products and convolutions, forward and backward (aten::mm, addmm, bmm,
  convolution kernels and their backward);
- optimizer: everything inside torch.optim's `Optimizer.step`, and the fused Adam kernel with
  its step count where ganctl calls it directly (`ganctl.training.adam`);
- data: sampling the real batch (the dataset's `sample`);
- autograd: every other operator run by the autograd engine (backward's elementwise work,
  gradient accumulation);
- other ops: every other operator (forward elementwise work, random numbers, cat, copies);
- Python and dispatch: the iteration's wall time that no operator's own time covers (the
  interpreter, module calls, the dispatcher between operators, the profiler's own cost).

    python benchmarks/profile_step.py                          # the cases below, 2 threads
    python benchmarks/profile_step.py --cases 2d-gp,digits16-mlp --threads 1 --json profile.json

The profiler adds its own overhead per operator, so shares are what to read, not seconds: the
script also times the same iterations unprofiled and prints both.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from ganctl.config import TrainConfig  # noqa: E402
from ganctl.methods.resolve import resolve  # noqa: E402
from ganctl.training.engine import Trainer  # noqa: E402

CASES = {  # name -> TrainConfig fields (images: scikit-learn's digits, written by real_digits.py)
    "2d-gp": {"data": "25gaussians", "lipschitz": "gp"},
    "2d-gp-autograd": {"data": "25gaussians", "lipschitz": "gp", "_fused": False},
    "digits16-mlp": {"data": "DIGITS16", "image_size": 16, "arch": "mlp", "lipschitz": "r3gan", "batch_size": 64},
    "digits32-mlp": {"data": "DIGITS32", "image_size": 32, "arch": "mlp", "lipschitz": "r3gan", "batch_size": 64},
    "digits16-dcgan": {"data": "DIGITS16", "image_size": 16, "arch": "dcgan", "lipschitz": "r3gan", "batch_size": 64},
    "digits32-dcgan": {"data": "DIGITS32", "image_size": 32, "arch": "dcgan", "lipschitz": "r3gan", "batch_size": 64},
}
MATMUL = {
    "aten::mm",
    "aten::addmm",
    "aten::bmm",
    "aten::baddbmm",
    "aten::mkldnn_convolution",
    "aten::convolution_backward",
    "aten::_slow_conv2d_forward",
    "aten::_slow_conv2d_backward",
    "aten::slow_conv_transpose2d",
    "aten::mkldnn_convolution_backward",
    "aten::_convolution",
}
OPTIMIZER = {"aten::_fused_adam_", "aten::_fused_adamw_", "aten::_foreach_add_"}


def digits_folder(size: int) -> str:
    """scikit-learn's digits at `size` px, written once under runs/ (real_digits.py's layout)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import real_digits

    folder = Path(f"runs/digits{size}")
    if not folder.exists():
        real_digits.write_folder(folder, *real_digits.digits(size))
    return str(folder)


def trainer(case: str) -> Trainer:
    fields = dict(CASES[case])
    fused = fields.pop("_fused", None)
    data = fields["data"]
    if data.startswith("DIGITS"):
        fields["data"] = digits_folder(int(data[len("DIGITS") :]))
    cfg = TrainConfig(device="cpu", **fields)
    return Trainer(resolve(cfg), fused=fused)


def categorise(events, data_ranges: str = "ganctl.data") -> dict[str, float]:
    """Own CPU time (s) per category; an event's category is the first that fits of: inside
    Optimizer.step, inside the data range, a matrix product, run by autograd, other."""
    totals = dict.fromkeys(("matmul", "optimizer", "data", "autograd", "other ops"), 0.0)
    for e in events:
        if e.device_type != torch.autograd.DeviceType.CPU:
            continue
        chain, parent = [], e
        while parent is not None:
            chain.append(parent.name)
            parent = parent.cpu_parent
        own = e.self_cpu_time_total / 1e6
        if e.name in OPTIMIZER or any(n.startswith("Optimizer.step") for n in chain):
            totals["optimizer"] += own
        elif data_ranges in chain:
            totals["data"] += own
        elif e.name in MATMUL:
            totals["matmul"] += own
        elif any(n.startswith("autograd::engine") for n in chain):
            totals["autograd"] += own
        else:  # every other event's own time, named aten:: or not (detach, profiler ranges)
            totals["other ops"] += own
    return totals


def run(case: str, iters: int, warmup: int) -> dict:
    t = trainer(case)
    sample = t.dataset.sample

    def labelled(*args, **kwargs):
        with record_function("ganctl.data"):
            return sample(*args, **kwargs)

    object.__setattr__(t.dataset, "sample", labelled)  # a frozen dataclass: labelled for this profile only
    for _ in range(warmup):
        t.train_step()
    plain = []
    for _ in range(iters):
        start = time.perf_counter()
        t.train_step()
        plain.append(time.perf_counter() - start)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        for _ in range(iters):
            t.train_step()
        wall = time.perf_counter() - start
    totals = categorise(prof.events())
    totals["Python and dispatch"] = max(0.0, wall - sum(totals.values()))
    top = sorted(prof.key_averages(), key=lambda a: a.self_cpu_time_total, reverse=True)[:8]
    return {
        "case": case,
        "config": dict(CASES[case]),
        "n_critic": t.cfg.n_critic,
        "batch": t.cfg.batch_size,
        "fused_mlp_step": t.uses_fused_step,
        "unprofiled_s_per_iter": statistics.median(plain),
        "profiled_s_per_iter": wall / iters,
        "share": {k: v / wall for k, v in totals.items()},
        "top_ops": [(a.key, a.self_cpu_time_total / 1e6 / iters, a.count // iters) for a in top],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    cats = ("matmul", "autograd", "other ops", "optimizer", "data", "Python and dispatch")
    print("| case | batch | n_critic | s/iter (profiled) | " + " | ".join(cats) + " |")
    print("|---|---|---|---|" + "---|" * len(cats))
    results = []
    for case in args.cases.split(","):
        r = run(case, args.iters, args.warmup)
        results.append(r)
        shares = " | ".join(f"{r['share'][c]:.0%}" for c in cats)
        print(
            f"| {case} | {r['batch']} | {r['n_critic']} | {r['unprofiled_s_per_iter'] * 1e3:.1f} ms"
            f" ({r['profiled_s_per_iter'] * 1e3:.1f}) | {shares} |",
            flush=True,
        )
        for name, seconds, count in r["top_ops"]:
            print(f"    {name}: {seconds * 1e3:.2f} ms/iter, {count} calls/iter")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
