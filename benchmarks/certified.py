"""What certification costs: the orthogonal-convolution critic (--lipschitz aoc) against spectral
normalisation and the gradient penalty, each with its own published recipe, on the same DCGAN
generator and critic layout, for the same CPU time.

For each data set (ganctl's `shapes` at 16 px, judged by its shape judge's valid share; and
scikit-learn's digits at 16 px, judged by benchmarks/real_digits.py's SVM's confident share), each
method and each seed, a run is trained for `--seconds` of this process's CPU time (one thread).
At `--points` evenly spaced times (not counted) it records:

- the judged quality of 1000 samples of the EMA generator;
- the critic's Lipschitz upper bound, layer by layer (`ganctl.lipschitz.bounds.upper_bound`:
  exact or certified per layer for all three critics here), and the certified W1 lower bound
  its gap gives on 1000 real and 1000 generated samples (gap / bound);
- the CPU seconds per training step (one step: n_critic critic updates and one generator update).

    pip install 'ganctl[bench,certified]'
    python benchmarks/certified.py --data shapes --seconds 150 --json benchmarks/results-cpu-certified-shapes.json
    python benchmarks/certified.py --data digits --seconds 150 --json benchmarks/results-cpu-certified-digits.json
    python benchmarks/certified.py --data digits --seconds 150 --seeds 2 --append --json ...  # a third seed
    python benchmarks/certified.py --plot benchmarks/results-cpu-certified-*.json --png docs/certified.png
    python benchmarks/certified.py --cost --json benchmarks/results-cpu-certified-cost.json   # where a step goes
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

METHODS = ("aoc", "sn", "gp")
OPTIONS = "--arch dcgan --image-size 16 --width 32"
N = 1000


def judge_of(data: str, seed: int):
    """(the data's --data value, a function giving the judged quality of images in [-1, 1])."""
    if data == "shapes":
        from ganctl.data.shapes import ShapesJudge

        judge = ShapesJudge(16)

        def shapes_quality(images: torch.Tensor) -> float:
            return float(judge.quality_of_modes(judge(images))["valid_share"])

        return "shapes", shapes_quality
    from real_digits import Judge, digits, write_folder

    images, labels = digits(16)
    folder = write_folder(Path("runs/certified-digits"), images, labels)
    svm = Judge(images, labels, seed)
    return str(folder), lambda x: svm.score(x)["confident"]


def checkpoint_row(trainer, quality, cpu: float, steps: int) -> dict:
    from ganctl.lipschitz.bounds import certified, upper_bound, w1_lower_bound

    nets = trainer.nets
    g = torch.Generator().manual_seed(12345)
    fake = nets.sample(N, g)
    real = nets.dataset.sample(N, g, "cpu")
    bound, table = upper_bound(nets.critic, tuple(real.shape[1:]))
    gap = w1_lower_bound(nets.critic, real, fake, 1.0)["critic_gap"]
    return {
        "cpu_seconds": cpu,
        "steps": steps,
        "quality": quality(fake),
        "lipschitz_bound": bound,
        "certified": certified(table) and math.isfinite(bound),
        "critic_gap": gap,
        "w1_lower_bound": gap / bound if math.isfinite(bound) and bound > 0 else 0.0,
    }


def race(data: str, method: str, seed: int, seconds: float, points: int, quality) -> dict:
    """One run for `seconds` of CPU time, measured at `points` times."""
    import shlex

    import typer.main

    from ganctl.cli import app
    from ganctl.config import field_names, from_dict
    from ganctl.methods.resolve import resolve
    from ganctl.training.engine import Trainer

    options = f"{OPTIONS} --lipschitz {method}"
    parsed = typer.main.get_command(app).commands["train"].make_context("train", shlex.split(options)).params
    values = {k: v for k, v in parsed.items() if k in field_names() and v is not None}
    cfg = resolve(from_dict({**values, "data": data, "seed": seed, "device": "cpu"}, where="certified.py"))
    trainer = Trainer(cfg)
    rows, cpu, steps = [checkpoint_row(trainer, quality, 0.0, 0)], 0.0, 0
    for k in range(1, points + 1):
        while cpu < seconds * k / points:
            started = time.process_time()
            trainer.train_step()
            cpu += time.process_time() - started
            steps += 1
        rows.append(checkpoint_row(trainer, quality, cpu, steps))
        print(json.dumps({"method": method, "seed": seed, **rows[-1]}), flush=True)
    return {"method": method, "seed": seed, "config": cfg.to_dict(), "rows": rows, "seconds_per_step": cpu / steps}


def summary(results: list[dict]) -> dict:
    """Per method: the final quality's mean and spread over seeds, s/step, the final bound."""
    out = {}
    for method in METHODS:
        runs = [r for r in results if r["method"] == method]
        if not runs:
            continue
        final = [r["rows"][-1] for r in runs]
        out[method] = {
            "quality": [f["quality"] for f in final],
            "quality_mean": float(np.mean([f["quality"] for f in final])),
            "seconds_per_step": [r["seconds_per_step"] for r in runs],
            "lipschitz_bound": [f["lipschitz_bound"] for f in final],
            "certified": [f["certified"] for f in final],
            "w1_lower_bound": [f["w1_lower_bound"] for f in final],
            "steps": [f["steps"] for f in final],
        }
    return out


def plot(paths: list[Path], png: Path) -> None:
    """Per data set, three charts against CPU seconds, one line per run: log10 of the critic's
    Lipschitz upper bound, the certified W1 lower bound (gap / bound), the judged quality."""
    from PIL import Image

    from ganctl.pictures import line_chart, save_image

    charts = []
    for result in (json.loads(p.read_text()) for p in paths):
        data = result["data"]
        for key, title, transform in (
            ("lipschitz_bound", f"{data}: log10 of the critic's Lipschitz upper bound", math.log10),
            ("w1_lower_bound", f"{data}: critic gap / bound (a W1 lower bound)", float),
            ("quality", f"{data}: {result['quality_name']}", float),
        ):
            series = {
                f"{r['method']} seed {r['seed']}": (
                    np.array([p["cpu_seconds"] for p in r["rows"]]),
                    np.array([transform(p[key]) if p[key] > 0 or transform is float else np.nan for p in r["rows"]]),
                )
                for r in result["runs"]
            }
            charts.append(line_chart(series, title, "against CPU seconds"))
    canvas = Image.new("RGB", (charts[0].width, sum(c.height for c in charts)), (255, 255, 255))
    for k, chart in enumerate(charts):
        canvas.paste(chart, (0, k * chart.height))
    save_image(png, canvas)


def cost(reps: int = 20) -> list[dict]:
    """Where an `aoc` critic's time goes (one thread, CPU time, mean of `reps`): building its
    orthogonal kernels (forward and backward, once a step whatever the batch), and its forward
    and backward on a batch of real and fake images, against the plain DCGAN critic's."""
    from torch import nn
    from torch.nn.utils import parametrize

    from ganctl.config import TrainConfig
    from ganctl.models.certified import orthogonal_convolutional
    from ganctl.models.dcgan import build_dcgan

    def timed(fn) -> float:
        fn()  # warm-up
        started = time.process_time()
        for _ in range(reps):
            fn()
        return (time.process_time() - started) / reps * 1000

    def one(size: int, width: int, batch: int) -> dict:
        cfg = TrainConfig(arch="dcgan", width=width, z_dim=8, critic_norm="none")
        aoc = orthogonal_convolutional(build_dcgan(cfg, (1, size, size))[1])
        plain = build_dcgan(cfg, (1, size, size))[1]
        x = torch.randn(2 * batch, 1, size, size)
        convs = [m for m in aoc.modules() if isinstance(m, nn.Conv2d)]

        def aoc_pass() -> None:
            with parametrize.cached():
                aoc(x).sum().backward()

        return {
            "size": size,
            "width": width,
            "batch": f"2 x {batch}",
            "kernels_ms": timed(lambda: sum(m.weight.sum() for m in convs).backward()),
            "aoc_critic_ms": timed(aoc_pass),
            "plain_critic_ms": timed(lambda: plain(x).sum().backward()),
        }

    rows = []
    for size, width, batch in ((16, 32, 64), (16, 32, 256), (32, 64, 64)):
        rows.append(one(size, width, batch))
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=("shapes", "digits"))
    parser.add_argument("--seconds", type=float, default=150.0, help="CPU seconds of training per run")
    parser.add_argument("--points", type=int, default=6, help="measurements over each run")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--append", action="store_true", help="add these runs to --json's (a method and seed run again replaces its)"
    )
    parser.add_argument("--plot", type=Path, nargs="*", help="draw these results files (no training)")
    parser.add_argument("--png", type=Path)
    parser.add_argument("--cost", action="store_true", help="only split an aoc critic's time (kernels, passes)")
    args = parser.parse_args()
    if args.plot:
        plot(args.plot, args.png or Path("certified.png"))
        return
    torch.set_num_threads(1)  # process time then counts one core's work
    if args.cost:
        rows = cost()
        if args.json:
            args.json.write_text(json.dumps({"machine": platform.platform(), "torch": torch.__version__, "rows": rows}))
        return
    data, quality = judge_of(args.data, 0)
    results = [
        race(data, method, int(seed), args.seconds, args.points, quality)
        for seed in args.seeds.split(",")
        for method in args.methods.split(",")
    ]
    if args.append and args.json and args.json.exists():
        earlier = json.loads(args.json.read_text())
        if earlier["data"] != args.data or earlier["seconds"] != args.seconds:
            raise SystemExit(f"{args.json}: runs of {earlier['data']} for {earlier['seconds']} s, not these")
        fresh = {(r["method"], r["seed"]) for r in results}  # a method and seed run again replaces its earlier run
        results = [r for r in earlier["runs"] if (r["method"], r["seed"]) not in fresh] + results
    out = {
        "machine": {"platform": platform.platform(), "torch": torch.__version__, "threads": 1},
        "data": args.data,
        "quality_name": "valid share (shape judge)" if args.data == "shapes" else "confident share (SVM judge)",
        "seconds": args.seconds,
        "options": OPTIONS,
        "runs": results,
        "summary": summary(results),
    }
    print(json.dumps(out["summary"], indent=1))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
