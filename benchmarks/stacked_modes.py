"""Mode counting on stacked digits, the VEEGAN / PacGAN protocol on data a pip package ships:
scikit-learn's digits at 16 px stacked three to an image (1000 modes), every Lipschitz method
trained by `ganctl compare` with the same data, seeds, architecture and steps, then each run's
generator judged by `ganctl eval --classifier auto` on 26,000 samples: the modes covered (of
1000) and the KL of the mode histogram to uniform, beside held-out real stacks' own.

    pip install 'ganctl[bench]'
    python benchmarks/stacked_modes.py --steps 4000 --seeds 2 --jobs 2 \
        --json benchmarks/results-cpu-stacked-digits.json

The eval's draw noise is measured too: one run's generator scored again with other sample seeds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from real_digits import digits, write_folder  # noqa: E402

METHODS = "clip,gp,zgp,r1,sn,gn,bjorck"
SETTING = ["--arch", "mlp", "--n-critic", "2"]  # the README's CPU image family (docs/results.md, real digits)


def ganctl(*args: str) -> dict:
    """`python -m ganctl ARGS --json`, its JSON (exit 1, a broken threshold, is a result too)."""
    done = subprocess.run([sys.executable, "-m", "ganctl", *args, "--json"], capture_output=True, text=True)
    if done.returncode not in (0, 1):
        raise SystemExit(f"ganctl {' '.join(args)} failed:\n{done.stderr}")
    return json.loads(done.stdout)


def judged(run: Path, seed: int = 0) -> dict:
    started = time.time()
    report = ganctl("eval", str(run), "--classifier", "auto", "--metrics", "none", "--seed", str(seed))
    label = report["classifier"]["label"]
    pick = {k.split("[")[0]: v for k, v in report["metrics"].items() if k.endswith(f"[{label}]")}
    return {
        "modes": pick["modes_covered"],
        "kl": pick["modes_kl"],
        "confident": pick["confident_share"],
        "n": report["n_fake"],
        "ceiling": {k.split("[")[0]: v for k, v in report["ceiling"].items()},
        "classifier": label,
        "eval_seconds": round(time.time() - started, 1),
        "train_seconds": json.loads((run / "summary.json").read_text()).get("wall_s")
        if (run / "summary.json").exists()
        else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, default=Path("runs/digits16"), help="where the digits are written")
    parser.add_argument("--out", type=Path, default=Path("runs/stacked-digits"), help="the compare's folder")
    parser.add_argument("--methods", default=METHODS)
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--noise-draws", type=int, default=3, help="extra sample seeds for one run's eval noise")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()

    images, labels = digits()
    write_folder(args.folder, images, labels)
    data = f"stacked:{args.folder}"
    started = time.time()
    ganctl(
        "compare", "--data", data, *SETTING, "--methods", args.methods, "--steps", str(args.steps),
        "--seeds", str(args.seeds), "--jobs", str(args.jobs), "--threads", "1", "--eval-every", "0",
        "--out", str(args.out),
    )  # fmt: skip
    trained = time.time() - started
    rows = []
    for run in sorted(p for p in args.out.iterdir() if (p / "config.json").exists()):
        method, seed = run.name.rsplit("-seed", 1)
        rows.append({"method": method, "seed": int(seed), **judged(run)})
        print(f"{run.name}: {rows[-1]['modes']} modes, KL {rows[-1]['kl']:.3f}", flush=True)
    first = sorted(p for p in args.out.iterdir() if (p / "config.json").exists())[0]
    noise = [judged(first, seed) for seed in range(1, 1 + args.noise_draws)]
    result = {
        "protocol": "VEEGAN/PacGAN stacked modes: 128,000 training stacks, 26,000 samples, argmax per channel",
        "data": "scikit-learn digits, 8 px upscaled to 16 px, stacked three to an image (1000 modes)",
        "setting": " ".join(SETTING),
        "steps": args.steps,
        "seeds": args.seeds,
        "train_seconds": round(trained, 1),
        "rows": rows,
        "draw_noise": {"run": first.name, "draws": [{k: d[k] for k in ("modes", "kl")} for d in noise]},
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
    }
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}, indent=1))


if __name__ == "__main__":
    main()
