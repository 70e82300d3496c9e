"""Train each Lipschitz method on the 2-D toy sets with ganctl's defaults and print a markdown
table of what each reaches (modes, high-quality share, W1) with its wall time.

    python examples/toy_table.py --data 8gaussians,25gaussians --methods clip,gp,zgp,r1,sn
    python examples/toy_table.py --data 25gaussians --methods gp --set penalty_weight=0.1 --set width=512

`--set KEY=VALUE` overrides a TrainConfig field for every run (the value is parsed as JSON
when it can be, so numbers and booleans work). This is the script behind the README table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

import ganctl
from ganctl.config import from_dict


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
    parser.add_argument("--data", default="8gaussians,25gaussians")
    parser.add_argument("--methods", default="clip,gp,zgp,r1,sn")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--label", default="", help="a name for this configuration in the table")
    parser.add_argument("--out", type=Path, default=Path("runs/toy_table"))
    parser.add_argument("--threads", type=int, default=0, help="CPU threads per run (0: ganctl's default, --threads)")
    args = parser.parse_args()

    overrides = {"device": "cpu", "sample_every": 0, "ckpt_every": 0, "threads": args.threads, **parse_sets(args.set)}
    print(f"torch {torch.__version__}, overrides {json.dumps(overrides)}")
    print("| data | method | config | seed | steps | modes | high-quality | W1 (perfect: floor ± sd) | wall s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for data in args.data.split(","):
        for method in args.methods.split(","):
            for seed in map(int, args.seeds.split(",")):
                config = from_dict({"data": data, "lipschitz": method, "seed": seed, **overrides})
                out = args.out / f"{data}-{method}-{args.label or 'default'}-seed{seed}"
                s = ganctl.train(config, out, overwrite=True).to_dict()
                f = s["final"]
                modes = f"{f['modes']}/{f['modes_total']}" if "modes" in f else "-"
                hq = f"{f['hq_share']:.1%}" if "hq_share" in f else "-"
                print(
                    f"| {data} | {method} | {args.label or 'default'} | {seed} | {s['step']} | {modes} | {hq}"
                    f" | {f['w1']:.3f} ({f['w1_floor']:.3f} ± {f['w1_floor_sd']:.3f}) | {s['wall_s']:.0f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
