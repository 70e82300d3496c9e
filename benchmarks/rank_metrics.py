"""Do ganctl's scores rank generators as an outside judge would? Generators of many qualities on
real digits, each scored by the SVM judge of benchmarks/real_digits.py (confident share) and by
ganctl's own numbers; the Spearman rank correlation of each number with the judge.

The generators: each contender of real_digits.py (the PyTorch-GAN script as written, and ganctl
settings) trained on scikit-learn's digits at 16 px for `--seconds` of CPU, its samples taken at
`--at` fractions of that time, so early, middling and late generators of several methods are
ranked together. The numbers: FID in the weight-free random-conv space (ganctl's fallback), and
the scores of `ganctl eval --classifier auto` (a classifier trained on 90 % of the real digits):
confident share, classes covered, class-histogram KL and FID in its feature space; with
`--w1-bound`, also `ganctl eval --w1-bound`'s certified W1 lower bound (its default protocol). Every
generator's samples are written to an .npy and scored through `ganctl eval --fake`, as a user
with another program's samples would score them.

    pip install 'ganctl[bench]'
    python benchmarks/rank_metrics.py --seconds 60 --json benchmarks/results-cpu-digits-rank.json
    python benchmarks/rank_metrics.py --seconds 60 --w1-bound --json benchmarks/results-cpu-digits-rank-w1.json
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from real_digits import Judge, digits, ganctl_run, textbook, write_folder  # noqa: E402

SETTINGS = {  # ganctl contenders: the README's CPU image setting, spectral norm, and clipping
    "gp": "--arch mlp --lipschitz gp",
    "sn": "--arch mlp --lipschitz sn",
    "clip": "--arch mlp --lipschitz clip",
}
# Which way each number is better (+1 higher), to turn it into a rank that agrees with the judge's.
DIRECTION = {"fid_random_conv": -1, "confident": +1, "classes": +1, "class_kl": -1, "fid_classifier": -1}
W1_DIRECTION = {"w1_bound": -1, "w1_bound_train": -1}  # a distance: smaller is better


def snapshots(step, sample, seconds: float, at: list[float], n: int) -> list[torch.Tensor]:
    """n samples at each fraction `at` of `seconds` of this process's CPU time spent training."""
    out, trained = [], 0.0
    for fraction in at:
        while trained < fraction * seconds:
            started = time.process_time()
            step()
            trained += time.process_time() - started
        out.append(sample(n, torch.Generator().manual_seed(12345)))
    return out


def scores(images: torch.Tensor, judge: Judge, folder: Path, w1: bool = False) -> dict[str, float]:
    """The judge's confident share, and ganctl's numbers, of n images in [-1, 1] (n, C, 16, 16):
    the samples are written to an .npy and scored as a user would, by `ganctl eval --fake FILE
    --data FOLDER --classifier auto --json` (its classifier trained once, then read from the cache)."""
    grey = images.float().mean(dim=1, keepdim=True).clamp(-1, 1)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "samples.npy"
        np.save(path, grey.numpy())
        command = [sys.executable, "-m", "ganctl", "eval", "--fake", str(path), "--data", str(folder)]
        command += ["--classifier", "auto", "--metrics", "fid", "--n", str(len(grey)), "--json"]
        command += ["--w1-bound"] if w1 else []
        done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)}: exit {done.returncode}\n{done.stderr}")
    report = json.loads(done.stdout)
    label = report["classifier"]["label"]
    return {
        "judge": judge.score(grey)["confident"],
        "fid_random_conv": report["metrics"]["fid[random-conv]"],
        "confident": report["metrics"][f"confident_share[{label}]"],
        "classes": report["metrics"][f"classes_covered[{label}]"],
        "class_kl": report["metrics"][f"class_kl[{label}]"],
        "fid_classifier": report["metrics"][f"fid[{label}]"],
        "classifier": label,
        **(
            {
                "w1_bound": report["w1_bound"]["value"],
                "w1_bound_se": report["w1_bound"]["se"],
                "w1_bound_train": report["w1_bound"]["train_value"],
                "w1_bound_seconds": report["w1_bound"]["seconds"],
            }
            if w1
            else {}
        ),
    }


def spearman(rows: list[dict], key: str) -> float:
    """Spearman's rho of the judge's confident share and the number (NaN where either is constant)."""
    import warnings

    from scipy.stats import spearmanr

    judge = [r["judge"] for r in rows]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a constant input: rho is NaN, and said so
        return float(spearmanr(judge, [DIRECTION[key] * r[key] for r in rows]).statistic)


def bootstrap(rows: list[dict], key: str, draws: int = 2000, seed: int = 0) -> list[float] | None:
    """The 95 % interval of `spearman` over generators resampled with replacement."""
    rng = np.random.default_rng(seed)
    found = []
    for _ in range(draws):
        picked = [rows[i] for i in rng.integers(0, len(rows), len(rows))]
        if len({r["judge"] for r in picked}) >= 3:  # a rank correlation needs some spread
            rho = spearman(picked, key)
            if np.isfinite(rho):
                found.append(rho)
    return [float(v) for v in np.percentile(found, [2.5, 97.5])] if found else None  # too few generators


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="CPU seconds of training per contender")
    parser.add_argument("--at", default="0.02,0.1,0.3,1.0", help="fractions of --seconds to take samples at")
    parser.add_argument("--n", type=int, default=2000, help="samples per generator")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--contenders", default=",".join(["textbook", *SETTINGS]), help="comma-separated")
    parser.add_argument("--w1-bound", action="store_true", help="also eval --w1-bound's certified W1 lower bound")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--folder", type=Path, default=Path("runs/digits-rank"))
    args = parser.parse_args()
    if args.w1_bound:
        DIRECTION.update(W1_DIRECTION)
    torch.set_num_threads(1)  # process time then counts one core's work
    images, labels = digits()
    folder = write_folder(args.folder, images, labels)
    judge = Judge(images, labels, args.seed)

    from ganctl.config import TrainConfig
    from ganctl.data import load_dataset
    from ganctl.quality import classifier

    clf = classifier.auto(load_dataset(TrainConfig(data=str(folder))), seed=0)
    at = [float(a) for a in args.at.split(",")]
    names = args.contenders.split(",")
    contenders = {}
    if "textbook" in names:
        contenders["textbook"] = textbook(torch.from_numpy(images[:, None] * 2 - 1).float(), args.seed)
    contenders.update({n: ganctl_run(folder, SETTINGS[n], args.seed)[:2] for n in names if n in SETTINGS})
    rows = []
    for name, (step, sample) in contenders.items():
        for fraction, samples in zip(at, snapshots(step, sample, args.seconds, at, args.n)):
            rows.append({"generator": f"{name} at {fraction:g}", **scores(samples, judge, folder, args.w1_bound)})
            print(json.dumps(rows[-1]), flush=True)
    rows.append({"generator": "held-out real digits", **scores(clf.held_out[0], judge, folder, args.w1_bound)})
    correlation = {key: spearman(rows[:-1], key) for key in DIRECTION}
    result = {
        "machine": {"platform": platform.platform(), "torch": torch.__version__, "threads": 1},
        "seconds": args.seconds,
        "at": at,
        "n": args.n,
        "judge_accuracy": judge.accuracy,
        "classifier_accuracy": float((clf.predict(clf.held_out[0])[0].argmax(1) == clf.held_out[1]).double().mean()),
        "generators": rows,
        "spearman_with_judge": correlation,
        "spearman_bootstrap_95": {key: bootstrap(rows[:-1], key) for key in DIRECTION},
    }
    print("| number | Spearman rank correlation with the judge's confident share |")
    print("|---|---|")
    for key, rho in correlation.items():
        print(f"| {key} | {rho:.3f} |")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
