"""Where a run's resident memory goes: each scenario in a fresh process, its resident set size
read after each phase (importing torch, building the trainer, the first steps, the evaluation,
the end) and its peak.

    python benchmarks/memory.py                      # 2-D and 16 px image runs of 300 steps
    python benchmarks/memory.py --json memory.json

What it measured is in docs/benchmarks.md ("Memory"). The numbers depend on the torch build
more than on ganctl: a CUDA build maps its CUDA libraries even on a machine without a GPU.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

SCENARIOS = {
    "2-D, 300 steps": {"data": "25gaussians", "steps": 300},
    "shapes 16 px, 300 steps": {"data": "shapes", "image_size": 16, "steps": 300},
}


def resident_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize() / 2**20


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def scenario(settings: dict, out: str) -> dict:
    """One run in this process, the resident memory after each phase."""
    phases = {"python": resident_mb()}
    import torch

    phases["import torch"] = resident_mb()
    from ganctl.config import TrainConfig
    from ganctl.training.events import Ended, Started
    from ganctl.training.loop import train

    phases["import ganctl"] = resident_mb()

    def on(event: object) -> None:
        if isinstance(event, Started):
            phases["trainer, evaluator and first evaluation inputs"] = resident_mb()
        elif isinstance(event, Ended):
            phases["training and the final evaluation"] = resident_mb()

    train(TrainConfig(**settings), out, overwrite=True, on_event=on)
    phases["end"] = resident_mb()
    return {"torch": torch.__version__, "phases_mb": phases, "peak_mb": peak_mb()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # a scenario, in the child process
    args = parser.parse_args()
    if args.one is not None:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
        with tempfile.TemporaryDirectory() as out:
            print(json.dumps(scenario(SCENARIOS[args.one], out)))
        return
    results = {}
    for name in SCENARIOS:
        done = subprocess.run(
            [sys.executable, __file__, "--one", name], capture_output=True, text=True, check=True
        ).stdout
        results[name] = json.loads(done.strip().splitlines()[-1])
        r = results[name]
        steps = ", ".join(f"{phase} {mb:.0f}" for phase, mb in r["phases_mb"].items())
        print(f"{name} (torch {r['torch']}): peak {r['peak_mb']:.0f} MB; after each phase (MB): {steps}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
