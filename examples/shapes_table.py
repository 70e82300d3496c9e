"""Train each Lipschitz method on the procedural `shapes` images and print a markdown table
of modes covered and valid share (judged analytically, see `ganctl.data.shapes`) with wall
time; save each method's final grid and a grid of real images under --out.

    python examples/shapes_table.py --methods clip,gp,zgp,r1,sn --set width=16 --set steps=600

`--set KEY=VALUE` overrides a TrainConfig field for every run. This is the script behind the
README's shapes table.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch

import ganctl
from ganctl.config import from_dict
from ganctl.data.shapes import ShapesSet
from ganctl.pictures import image_grid, save_image


def parse_sets(items: list[str]) -> dict:
    values = {}
    for item in items:
        key, _, raw = item.partition("=")
        try:
            values[key] = json.loads(raw)
        except ValueError:
            values[key] = raw
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default="clip,gp,zgp,r1,sn")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", type=Path, default=Path("runs/shapes_table"))
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    overrides = {"data": "shapes", "device": "cpu", "ckpt_every": 0, "seed": args.seed, **parse_sets(args.set)}
    args.out.mkdir(parents=True, exist_ok=True)
    real = ShapesSet(overrides.get("image_size", 32)).sample(64, torch.Generator().manual_seed(0), "cpu")
    save_image(args.out / "real.png", image_grid(real.numpy(), columns=8))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, overrides {json.dumps(overrides)}")
    print("| method | loss | steps | modes (of 20) | modes hit | valid | s / step | wall s |")
    print("|---|---|---|---|---|---|---|---|")
    for method in args.methods.split(","):
        config = from_dict({"lipschitz": method, **overrides})
        run = args.out / method
        s = ganctl.train(config, run, overwrite=True).to_dict()
        f = s["final"]
        shutil.copyfile(run / "samples" / "final.png", args.out / f"{method}.png")
        print(
            f"| {method} | {s['config']['loss']} | {s['step']} | {f['modes']} | {f['modes_hit']} | "
            f"{f['valid_share']:.1%}"
            f" | {s['s_per_step']:.3f} | {s['wall_s']:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
