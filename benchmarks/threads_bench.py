"""One torch thread or two for the 2-D MLP? Times full training iterations of each method's 2-D
default with 1 and with N threads, alternating iteration by iteration in one process so that
machine noise hits both alike, and reports the medians and their ratio.

    python benchmarks/threads_bench.py                        # 1 against 2 threads, every method
    python benchmarks/threads_bench.py --methods gp --iters 300 --json threads.json

`ganctl train` uses the faster as its default for 2-D data on the CPU (`--threads`).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from ganctl.config import TrainConfig
from ganctl.methods.resolve import resolve
from ganctl.training.engine import Trainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default="clip,gp,zgp,r1,sn")
    parser.add_argument("--data", default="25gaussians")
    parser.add_argument("--many", type=int, default=2, help="the thread count compared with one")
    parser.add_argument("--iters", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    rows = []
    print(f"torch {torch.__version__}; iterations of each method's {args.data} default, 1 against {args.many} threads")
    print(f"| method | 1 thread s/it | {args.many} threads s/it | 1 thread faster by |")
    print("|---|---|---|---|")
    for method in args.methods.split(","):
        trainers = {
            t: Trainer(resolve(TrainConfig(data=args.data, lipschitz=method, device="cpu"))) for t in (1, args.many)
        }
        times: dict[int, list[float]] = {1: [], args.many: []}
        for i in range(args.warmup + args.iters):
            for threads, trainer in trainers.items():
                torch.set_num_threads(threads)
                started = time.perf_counter()
                trainer.train_step()
                if i >= args.warmup:
                    times[threads].append(time.perf_counter() - started)
        one, many = statistics.median(times[1]), statistics.median(times[args.many])
        rows.append({"method": method, "one_s": one, "many_s": many, "threads": args.many, "ratio": many / one})
        print(f"| {method} | {one:.4f} | {many:.4f} | {many / one:.2f}x |", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"torch": torch.__version__, "data": args.data, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
