"""25gaussians in 60 s: whole `ganctl train` processes, timed from launch to exit (start-up,
training and the final evaluation all count), two at a time on a 2-core machine with one
thread each, seeds 0 to 2 by default. The goal (docs/results.md, "Time to quality"): 25/25
PacGAN modes and at least 90 % high-quality samples on every seed in at most 60 s.

    python benchmarks/time_to_quality.py --setting 'b1024=--batch-size 1024 --n-critic 1 ...' --json t.json
    python benchmarks/time_to_quality.py --setting 'default=' --seeds 3 --jobs 2

Each setting's options are added to `ganctl train --data 25gaussians --lipschitz gp --threads 1
--seed S --eval-every 0 --sample-every 0 --json` (a setting may name another --lipschitz or
--data). Prints one row per setting (modes and high-quality per seed, the worst seed, wall
seconds) and writes every run's summary with --json.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

BASE = "--data 25gaussians --lipschitz gp --threads 1 --eval-every 0 --sample-every 0 --json"
GOAL_MODES, GOAL_HQ, GOAL_SECONDS = 25, 0.90, 60.0


def one(options: str, seed: int, root: Path) -> dict:
    out = root / f"s{seed}-{abs(hash(options)) % 10**8}"
    command = [sys.executable, "-m", "ganctl", "train", *shlex.split(BASE), "--seed", str(seed), "--out", str(out)]
    command += shlex.split(options)
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"ganctl train {options!r} seed {seed} failed:\n{done.stderr[-2000:]}")
    summary = json.loads(done.stdout)
    final = summary["final"]
    return {
        "seed": seed,
        "wall_s": wall,
        "steps": summary["step"],
        "modes": final["modes"],
        "hq": final["hq_share"],
        "s_per_step": summary["s_per_step"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--setting", action="append", required=True, metavar='NAME="TRAIN OPTIONS"')
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0, help="fresh seeds to check a setting picked on 0..2")
    parser.add_argument("--jobs", type=int, default=2, help="processes at once (one per core)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    settings = [s.split("=", 1) for s in args.setting]
    rows = []
    print("| setting | steps | modes (per seed) | high-quality (per seed) | worst seed | wall s | goal met |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(args.jobs) as pool:
        for name, options in settings:
            runs = list(
                pool.map(
                    lambda s, o=options: one(o, s, Path(tmp)), range(args.first_seed, args.first_seed + args.seeds)
                )
            )
            met = all(r["modes"] >= GOAL_MODES and r["hq"] >= GOAL_HQ and r["wall_s"] <= GOAL_SECONDS for r in runs)
            worst = min(runs, key=lambda r: (r["modes"], r["hq"]))
            rows.append({"name": name, "options": options, "runs": runs, "goal_met": met})
            modes = ", ".join(str(r["modes"]) for r in runs)
            hq = ", ".join(f"{r['hq']:.1%}" for r in runs)
            walls = [r["wall_s"] for r in runs]
            print(
                f"| {name} | {runs[0]['steps']} | {statistics.mean(r['modes'] for r in runs):.1f} ({modes}) |"
                f" {statistics.mean(r['hq'] for r in runs):.1%} ({hq}) | {worst['modes']}, {worst['hq']:.1%} |"
                f" {min(walls):.0f} to {max(walls):.0f} | {'yes' if met else 'no'} |",
                flush=True,
            )
    if args.json:
        args.json.write_text(json.dumps({"base": BASE, "settings": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
