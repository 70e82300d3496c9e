"""What running a comparison's jobs at once buys, and what a Ray task costs.

A comparison (gp and sn, two seeds each: four jobs on 8gaussians) runs as whole `ganctl compare`
processes, one after another in one script so machine noise hits all alike, `--rounds` times:

- `--jobs 1` with torch's own thread count (the default: one run using every core),
- `--jobs 1 --threads 1` (one run, one core),
- `--jobs 2` (two runs at once, one thread each on a 2-core machine),
- `--launcher ray --jobs 2` on a local Ray instance this script starts (with the cores it has).

Then Ray on its own: the round trip of an empty task, and a comparison's extra wall time per
job over `--jobs 2` (the Ray instance's start is timed apart). Every comparison also checks that
its final checkpoints match the `--jobs 1 --threads 1` run's bitwise.

    python benchmarks/parallel_compare.py --json parallel.json
    python benchmarks/parallel_compare.py --steps 300 --rounds 1      # a quick look

Needs the `ray` extra for the Ray rows (they are left out without it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

RUNS = ("gp-seed0", "gp-seed1", "sn-seed0", "sn-seed1")


def comparison(steps: int) -> list[str]:
    return (
        f"--data 8gaussians --methods gp,sn --seeds 2 --steps {steps} --device cpu --eval-every 0"
        f" --sample-every 0 --ckpt-every {steps} --log-every {steps}"
    ).split()


def timed(out: Path, steps: int, extra: list[str], env: dict[str, str]) -> float:
    command = [sys.executable, "-m", "ganctl", "compare", *comparison(steps), "--out", str(out), *extra]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(extra)}: exit {result.returncode}\n{result.stderr[-2000:]}")
    return wall


def same(a: Path, b: Path, steps: int) -> bool:
    name = f"checkpoints/step-{steps:07d}.safetensors"
    for run in RUNS:
        x, y = load_file(a / run / name), load_file(b / run / name)
        if x.keys() != y.keys() or any(not torch.equal(x[k], y[k]) for k in x):
            return False
    return True


def ray_task_round_trip(ray, n: int = 50) -> float:
    @ray.remote(num_cpus=1)
    def empty() -> None:
        return None

    ray.get(empty.remote())  # a worker started
    started = time.perf_counter()
    for _ in range(n):
        ray.get(empty.remote())
    return (time.perf_counter() - started) / n


def start_ray(temp: str, env: dict[str, str]) -> float | None:
    ray_bin = Path(sys.executable).with_name("ray")
    if not ray_bin.exists():
        return None
    cpus = str(os.cpu_count() or 1)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    started = time.perf_counter()
    command = [str(ray_bin), "start", "--head", "--num-cpus", cpus, "--port", port]
    command += ["--include-dashboard", "false", "--disable-usage-stats"]
    subprocess.run(command, env=env, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--no-ray", action="store_true", help="leave out the Ray rows")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="parallel-"))
    ray_temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # Ray's socket paths must stay short
    env = {**os.environ, "RAY_TMPDIR": ray_temp}
    env.pop("OMP_NUM_THREADS", None)
    settings = {
        "jobs 1": ["--jobs", "1"],
        "jobs 1, 1 thread": ["--jobs", "1", "--threads", "1"],
        "jobs 2": ["--jobs", "2"],
    }
    ray_start = None if args.no_ray else start_ray(ray_temp, env)
    if ray_start is not None:
        settings["ray, jobs 2"] = ["--launcher", "ray", "--ray-address", "auto", "--jobs", "2"]
    walls: dict[str, list[float]] = {name: [] for name in settings}
    bitwise: dict[str, bool] = {}
    try:
        for r in range(args.rounds):
            for name, extra in settings.items():
                out = work / f"{r}-{name.replace(' ', '').replace(',', '-')}"
                walls[name].append(timed(out, args.steps, extra, env))
                reference = work / f"{r}-jobs1-1thread"
                if "jobs 2" in name:  # one thread per run, like the reference
                    bitwise[name] = bitwise.get(name, True) and same(reference, out, args.steps)
                print(f"round {r}: {name}: {walls[name][-1]:.1f} s", flush=True)
        round_trip = None
        if ray_start is not None:
            import ray

            ray.init(address="auto", log_to_driver=False, logging_level="ERROR")
            round_trip = ray_task_round_trip(ray)
            ray.shutdown()
    finally:
        if ray_start is not None:
            ray_bin = Path(sys.executable).with_name("ray")
            subprocess.run([str(ray_bin), "stop", "--force"], env=env, capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(ray_temp, ignore_errors=True)

    result = report(walls, bitwise, args, ray_start, round_trip)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


def report(walls, bitwise, args, ray_start, round_trip) -> dict:
    base = min(walls["jobs 1"])
    print(f"\n4 jobs x {args.steps} steps, best of {args.rounds} (wall s; ratio: jobs 1's time over this one's)")
    for name, times in walls.items():
        check = "" if name not in bitwise else ("  bitwise equal" if bitwise[name] else "  NOT bitwise equal")
        print(f"{name:18s} {min(times):7.1f}  {base / min(times):5.2f}x{check}")
    per_job = None
    if "ray, jobs 2" in walls:
        per_job = (min(walls["ray, jobs 2"]) - min(walls["jobs 2"])) / len(RUNS)
        print(f"ray start {ray_start:.1f} s, empty task round trip {round_trip * 1000:.2f} ms,")
        print(f"ray's extra wall time per job over --jobs 2: {per_job:.2f} s")
    return {
        "machine": {"cpus": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version()},
        "steps": args.steps,
        "jobs": len(RUNS),
        "walls_s": walls,
        "bitwise_equal_to_jobs1_1thread": bitwise,
        "ray_start_s": ray_start,
        "ray_empty_task_s": round_trip,
        "ray_extra_s_per_job": per_job,
    }


if __name__ == "__main__":
    main()
