"""How well do the image metrics track the truth? On `shapes` the judge says exactly which
generated images are valid and which modes they cover; this scores every checkpoint of the given
runs with `ganctl eval`'s library and prints the Spearman rank correlation of each image metric
with the judge's valid share and mode count, over all checkpoints together.

    python examples/fid_vs_judge.py runs/shapes-sn runs/shapes-gp --n 2000 --json fid_vs_judge.json

This is the script behind the correlation table of docs/eval.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from ganctl.nets.checkpoint import load
from ganctl.quality.evaluate import Request, evaluate_checkpoint
from ganctl.quality.features import feature_space
from ganctl.quality.scores import Spaces
from ganctl.runfolder import list_checkpoints

METRICS = ("fid", "kid", "pr", "dc")
JUDGE = ("valid_share", "modes")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--inception", default=None, help="Inception-v3 weights (default: the random-conv space)")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from scipy.stats import spearmanr

    space = feature_space(args.inception)
    request = Request(METRICS, Spaces(space), n=args.n, seed=0)
    rows = []
    for run in args.runs:
        for path in list_checkpoints(run):
            report = evaluate_checkpoint(load(path), request)
            rows.append({"run": str(run), "step": report["source"]["step"], **report["metrics"]})
            print(json.dumps(rows[-1]), flush=True)
    # kid_std is KID's own noise, not a score of the generator
    names = [k for k in rows[0] if k.endswith(f"[{space.label}]") and not k.startswith("kid_std")]
    table = {}
    print(f"\nSpearman rank correlation over {len(rows)} checkpoints ({space.label} features, n = {args.n})")
    print("| metric | " + " | ".join(JUDGE) + " |")
    print("|---|" + "---|" * len(JUDGE))
    for name in names:
        table[name] = {j: float(spearmanr([r[name] for r in rows], [r[j] for r in rows]).statistic) for j in JUDGE}
        print(f"| {name} | " + " | ".join(f"{table[name][j]:+.2f}" for j in JUDGE) + " |")
    if args.json:
        args.json.write_text(
            json.dumps({"space": space.describe(), "n": args.n, "rows": rows, "spearman": table}, indent=2) + "\n"
        )


if __name__ == "__main__":
    main()
