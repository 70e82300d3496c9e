"""Pick each method's 2-D recipe from `ganctl compare --tune` on several 2-D data sets.

Every tuning draws the same K trials per method (the Halton sequence is fixed), so trial k is
the same setting on every data set. Scores on different sets have different scales; each is
divided by that set's W1 floor (a perfect generator's W1 at the same size), and the trial with
the lowest mean ratio over the sets is the method's recipe. This is how the 2-D recipes of
`ganctl.methods.registry` were chosen (docs/results.md).

    python examples/pick_recipes.py runs/tuned-8 runs/tuned-25
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("tunings", nargs="+", type=Path, help="--out folders of `ganctl compare --tune`")
    args = parser.parse_args()
    tunings = [json.loads((t / "tune.json").read_text()) for t in args.tunings]
    floors = []
    for folder in args.tunings:  # every run of a set has the same floor: read it off any summary
        summary = next(folder.glob("tune/*/trial-0-seed*/summary.json"))
        floors.append(json.loads(summary.read_text())["final"]["w1_floor"])
    methods = tunings[0]["methods"]
    print("| method | trial | " + " | ".join(f"{t.name} W1 / floor" for t in args.tunings) + " | mean | setting |")
    print("|---|---|" + "---|" * len(args.tunings) + "---|---|")
    for method in methods:
        trials = range(len(methods[method]["trials"]))
        ratios = {k: [t["methods"][method]["trials"][k]["score"] / f for t, f in zip(tunings, floors)] for k in trials}
        best = min(trials, key=lambda k: sum(ratios[k]) / len(ratios[k]))
        setting = methods[method]["trials"][best]["setting"]
        mean = sum(ratios[best]) / len(ratios[best])
        print(f"| {method} | {best} | " + " | ".join(f"{r:.2f}" for r in ratios[best]) + f" | {mean:.2f} | {setting} |")


if __name__ == "__main__":
    main()
