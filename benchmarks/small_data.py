"""Small data on a CPU: does augmentation help, and does R3GAN's recipe beat gp's? Real digits
(scikit-learn's, 16 px) at 10 %, 25 % and 100 % of the 1797 images, several seeds, every
contender trained for the same CPU seconds, judged from outside ganctl by real_digits.py's SVM
(confident share, classes covered, KL of its class histogram from the real one) and by `ganctl
eval --classifier auto`'s scores (a classifier of all the real digits: classes covered, class KL
and FID in its feature space), on samples of the final EMA generator.

    pip install 'ganctl[bench]'
    python benchmarks/small_data.py --seconds 60 --seeds 3 --workers 2 \
        --json benchmarks/results-cpu-small-data.json

The subsets are drawn once (seed 0) from the shuffled digits; the judge is trained on 80 % of
all 1797 (its own split, whatever subset a generator saw). ADA's probability is recorded along
each adaptive run.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from real_digits import Judge, digits, write_folder  # noqa: E402

AUGMENT = "--augment color,translation,cutout"  # DiffAugment's full policy, its low-shot setting
CONTENDERS = {
    "gp": "--arch mlp --lipschitz gp",  # the README's CPU image setting
    "gp+diffaugment": f"--arch mlp --lipschitz gp {AUGMENT}",
    "gp+ada": f"--arch mlp --lipschitz gp {AUGMENT} --ada-target 0.6",
    "r3gan": "--arch mlp --lipschitz r3gan --batch-size 64",
    "r3gan+ada": f"--arch mlp --lipschitz r3gan --batch-size 64 {AUGMENT} --ada-target 0.6",
    "r3gan+diffaugment": f"--arch mlp --lipschitz r3gan --batch-size 64 {AUGMENT}",
    "gp+ada-0.3": f"--arch mlp --lipschitz gp {AUGMENT} --ada-target 0.3",  # a lower target than ADA's
    # levers against copying (issue 40's search)
    "r3gan+translation": "--arch mlp --lipschitz r3gan --batch-size 64 --augment translation",
    "r3gan+translation+cutout": "--arch mlp --lipschitz r3gan --batch-size 64 --augment translation,cutout",
    "r3gan+diffaugment-p0.5": f"--arch mlp --lipschitz r3gan --batch-size 64 {AUGMENT} --augment-p 0.5",
    "gp+translation+cutout": "--arch mlp --lipschitz gp --augment translation,cutout",
    "dcgan-gp+diffaugment": f"--arch dcgan --lipschitz gp {AUGMENT}",
    "dcgan-r3gan+diffaugment": f"--arch dcgan --lipschitz r3gan --batch-size 64 {AUGMENT}",
    # with 20 % of the images held out: what a user can stop on, and ADA's validation heuristic
    "gp/holdout": "--arch mlp --lipschitz gp --holdout 0.2",
    "gp+diffaugment/holdout": f"--arch mlp --lipschitz gp {AUGMENT} --holdout 0.2",
    "gp+ada-rv-0.3": f"--arch mlp --lipschitz gp {AUGMENT} --holdout 0.2 --ada-heuristic validation --ada-target 0.3",
    "gp+ada-rv-0.6": f"--arch mlp --lipschitz gp {AUGMENT} --holdout 0.2 --ada-heuristic validation --ada-target 0.6",
    "r3gan+translation/holdout": "--arch mlp --lipschitz r3gan --batch-size 64 --augment translation --holdout 0.2",
    "gp+ema-0.9999": "--arch mlp --lipschitz gp --ema-decay 0.9999",
    "gp+color": "--arch mlp --lipschitz gp --augment color",
    "r3gan+color": "--arch mlp --lipschitz r3gan --batch-size 64 --augment color",
    "gp+diffaugment+ema-0.9999": f"--arch mlp --lipschitz gp {AUGMENT} --ema-decay 0.9999",
}
DEFAULT_CONTENDERS = ("gp", "gp+diffaugment", "gp+ada", "r3gan", "r3gan+ada")  # the 60-second table's
FRACTIONS = (0.1, 0.25, 1.0)
N = 2000  # samples judged per generator
_WORKER: dict = {}


def subsets(root: Path, fractions: tuple[float, ...]) -> dict[float, Path]:
    images, labels = digits()
    order = np.random.default_rng(0).permutation(len(images))
    found = {}
    for fraction in fractions:
        keep = order[: int(round(fraction * len(images)))]  # 0.1: 180 digits; 0.2782: 500
        folder = root / f"digits16-{int(fraction * 100)}pct"
        if not folder.exists():
            write_folder(folder, images[keep], labels[keep])
        found[fraction] = folder
    write_folder(root / "digits16-all", images, labels) if not (root / "digits16-all").exists() else None
    return found


def _init(root: str) -> None:
    torch.set_num_threads(1)  # process time then counts one core's work
    from ganctl.config import TrainConfig
    from ganctl.data import load_dataset
    from ganctl.quality import classifier

    images, labels = digits()
    _WORKER["judge"] = Judge(images, labels, 0)
    _WORKER["prior"] = np.bincount(labels, minlength=10) / len(labels)
    _WORKER["all"] = load_dataset(TrainConfig(data=str(Path(root) / "digits16-all")))
    _WORKER["classifier"] = classifier.auto(_WORKER["all"], seed=0)


def _trainer(folder: str, options: str, seed: int):
    import typer.main

    from ganctl.cli import app
    from ganctl.config import field_names, from_dict
    from ganctl.methods.resolve import resolve
    from ganctl.training.engine import Trainer

    parsed = typer.main.get_command(app).commands["train"].make_context("train", shlex.split(options)).params
    values = {k: v for k, v in parsed.items() if k in field_names() and v is not None}
    cfg = resolve(from_dict({**values, "data": folder, "seed": seed, "device": "cpu"}, where="small_data"))
    return Trainer(cfg)


def _scores(images: torch.Tensor) -> dict[str, float]:
    from ganctl.quality import classifier

    judge, clf = _WORKER["judge"], _WORKER["classifier"]
    grey = images.float().mean(dim=1, keepdim=True).clamp(-1, 1)
    found = judge.score(grey)
    pixels = ((grey[:, 0] + 1) / 2).clamp(0, 1).numpy().reshape(len(grey), -1)
    hist = np.bincount(judge.svm.predict(pixels), minlength=10) / len(grey)
    hit = hist > 0
    found["kl"] = float((hist[hit] * np.log(hist[hit] / _WORKER["prior"][hit])).sum())
    scored = classifier.score(clf, grey, None, ("fid",))["metrics"]
    pick = {k.split("[")[0]: v for k, v in scored.items()}
    found.update(clf_classes=pick["classes_covered"], clf_kl=pick["class_kl"], clf_fid=pick["fid"])
    return found


def memorised(trainer, samples: torch.Tensor) -> dict[str, float]:
    """Whether the critic memorised its images, and whether the generator copies them.

    The critic, as stylegan2-ada's Figure 1 shows it: its mean output on the images it trained
    on, on the digits it never saw and on the generator's samples, each as training shows them
    (through the run's augmentation at its p), and `overfit`, the share of the real-fake gap
    that separates seen from unseen real digits: about 0 while the critic judges digits, 1 when
    it rates an unseen digit as it rates a sample. The generator: `nearer_seen`, the share of its
    samples whose nearest seen image (in pixels) is nearer than their nearest of as many unseen
    ones: 0.5 when seen and unseen digits are alike to it, towards 1 as it copies its set."""
    from ganctl.nets.augment import as_trained
    from ganctl.nets.networks import eval_mode

    seen = trainer.dataset.images
    everything = _WORKER["all"].images
    if everything.shape[1:] != seen.shape[1:]:
        return {}
    g = torch.Generator().manual_seed(54321)
    unseen = unseen_digits(seen, everything, g)
    if unseen is None:  # the whole set: nothing held out
        return {}
    nets, n = trainer.nets, min(len(seen), len(unseen), 500)
    critic = as_trained(nets.critic, nets.augment, g)

    def pixels(images: torch.Tensor) -> torch.Tensor:
        return images[:n].float().div(127.5).sub(1.0)  # the loader's scale

    def mean_d(x: torch.Tensor) -> float:
        with eval_mode(nets.critic), torch.no_grad():
            return critic(x).mean().item()

    d_seen, d_unseen = mean_d(pixels(seen)), mean_d(pixels(unseen))
    d_fake = mean_d(nets.sample(n, g, raw=True))
    gap = d_seen - d_fake
    return {
        "d_seen": d_seen,
        "d_unseen": d_unseen,
        "d_fake": d_fake,
        "overfit": (d_seen - d_unseen) / gap if gap else 0.0,
        "nearer_seen": nearer_seen(samples, pixels(seen), pixels(unseen)),
        "c_t": c_t(samples, pixels(seen), pixels(unseen)),
    }


def c_t(samples: torch.Tensor, seen: torch.Tensor, unseen: torch.Tensor) -> float:
    """Meehan et al.'s C_T (`ganctl.quality.copying`) in grey pixels, as `ganctl eval --holdout`
    measures it: near 0 for fresh digits, -3 and below for copies."""
    from ganctl.quality import copying

    flat = [x.float().mean(dim=1).flatten(1) for x in (samples, seen, unseen)]
    return copying.data_copying(*flat)["c_t"]


def unseen_digits(seen: torch.Tensor, everything: torch.Tensor, g: torch.Generator) -> torch.Tensor | None:
    """The images of `everything` not in `seen` (uint8, compared byte for byte), shuffled by
    `g`; None when every one was seen."""
    known = {bytes(image.numpy().tobytes()) for image in seen}
    unseen = [image for image in everything if bytes(image.numpy().tobytes()) not in known]
    return torch.stack(unseen)[torch.randperm(len(unseen), generator=g)] if unseen else None


def nearer_seen(samples: torch.Tensor, seen: torch.Tensor, unseen: torch.Tensor) -> float:
    """The share of samples (in [-1, 1]) whose nearest seen image is nearer than their nearest
    unseen one, in grey pixels, as the judges see them."""
    flat = [x.float().mean(dim=1).flatten(1) for x in (samples, seen, unseen)]
    nearest = [torch.cdist(flat[0], images).min(dim=1).values for images in flat[1:]]
    return float((nearest[0] < nearest[1]).float().mean())


def real_nearer_seen(seen_folder: Path, all_folder: Path) -> float:
    """`nearer_seen` of real digits the generator never saw either (those left after the unseen
    comparison set `memorised` draws): what a generator that draws fresh digits would score,
    0.5 in expectation, here measured with its sampling noise."""
    from ganctl.config import TrainConfig
    from ganctl.data import load_dataset

    seen = load_dataset(TrainConfig(data=str(seen_folder))).images
    everything = load_dataset(TrainConfig(data=str(all_folder))).images
    unseen = unseen_digits(seen, everything, torch.Generator().manual_seed(54321)).float().div(127.5) - 1
    n = min(len(seen), len(unseen), 500)
    return nearer_seen(unseen[n : n + N], seen[:n].float().div(127.5) - 1, unseen[:n])


def along(trainer, trained: float, steps: int) -> dict:
    """One point of a run's trajectory (--trajectory): the judge's confident share and the
    copying measures of the EMA generator's samples so far, and where the run holds images out
    (--holdout) the copying score `ganctl train` logs against them, the only one a user could
    stop on."""
    from ganctl.quality import copying

    samples = trainer.nets.sample(N, torch.Generator().manual_seed(12345))
    point = {"seconds": round(trained, 1), "steps": steps, "confident": _WORKER["judge"].score(samples)["confident"]}
    point.update({k: v for k, v in memorised(trainer, samples).items() if k in ("nearer_seen", "c_t")})
    held = getattr(trainer.dataset, "held_out", None)
    if held is not None:
        flat = [x.float().div(127.5).sub(1).flatten(1) for x in (trainer.dataset.images, held.images)]
        point["own_copying"] = copying.nearer_seen(samples.flatten(1), *flat)["nearer_seen"]
    return point


def run(job: tuple[float, str, int, str, str, float, int]) -> dict:
    fraction, name, seed, folder, options, seconds, points = job
    trainer = _trainer(folder, options, seed)
    trained, steps, p_curve, next_mark, trajectory = 0.0, 0, [], 0.0, []
    next_point = seconds / points if points else math.inf
    while trained < seconds:
        started = time.process_time()
        trainer.train_step()
        trained += time.process_time() - started
        steps += 1
        if trainer.ada is not None and trained >= next_mark:
            p_curve.append([round(trained, 1), round(trainer.ada.p, 4), trainer.ada.last])
            next_mark += seconds / 12
        if trained >= next_point and trained < seconds:
            trajectory.append(along(trainer, trained, steps))
            next_point += seconds / points
    samples = trainer.nets.sample(N, torch.Generator().manual_seed(12345))
    result = {"fraction": fraction, "images": trainer.dataset.length, "contender": name, "seed": seed}
    result.update(steps=steps, seconds=round(trained, 1))
    if folder != "shapes":  # the digits' judges; shapes is only there for ADA's p
        result.update(_scores(samples))
        result.update(memorised(trainer, samples))
    if trainer.ada is not None:
        result.update(ada_p=trainer.ada.p, ada_curve=p_curve)
    if points:
        result["trajectory"] = trajectory + [along(trainer, trained, steps)]
    print(json.dumps({k: v for k, v in result.items() if k not in ("ada_curve", "trajectory")}), flush=True)
    return result


def summary(rows: list[dict]) -> list[dict]:
    wanted = ("confident", "classes", "kl", "clf_classes", "clf_kl", "clf_fid", "overfit", "nearer_seen", "c_t")
    table = []
    for fraction in sorted({r["fraction"] for r in rows}):
        for name in CONTENDERS:
            mine = [r for r in rows if r["fraction"] == fraction and r["contender"] == name and "confident" in r]
            if mine:
                keys = [k for k in wanted if all(k in r for r in mine)]  # overfit: only where digits were held out
                stats = {k: [float(np.mean([r[k] for r in mine])), float(np.std([r[k] for r in mine], ddof=1))]
                         if len(mine) > 1 else [float(mine[0][k]), 0.0] for k in keys}  # fmt: skip
                table.append({"fraction": fraction, "contender": name, "seeds": len(mine), **stats})
    return table


def draw_p(rows: list[dict], path: Path) -> None:
    """ADA's probability against CPU seconds, for each adaptive run of seed 0."""
    from ganctl.pictures import line_chart, save_image

    series = {}
    for r in rows:
        if r.get("ada_curve") and r["seed"] == 0:
            where = "shapes" if r["fraction"] == 0.0 else str(r["images"])
            points = np.array([[t, p] for t, p, _ in r["ada_curve"]] + [[r["seconds"], r["ada_p"]]])
            series[f"{r['contender'].split('+')[0]} {where}"] = (points[:, 0], points[:, 1])
    title = "ADA's p against CPU seconds (seed 0; digits by count, shapes endless)"
    save_image(path, line_chart(series, title, "p", size=(900, 320)))


def draw_frontier(rows: list[dict], path: Path) -> None:
    """Each run's path through (confident share, samples nearer a seen digit) as it trains, for
    the runs of seed 0 with a trajectory: the goal is right of gp's share and below 0.6."""
    from ganctl.pictures import line_chart, save_image

    series = {}
    for r in rows:
        if r.get("trajectory") and r["seed"] == 0:
            points = np.array([[p["confident"], p["nearer_seen"]] for p in r["trajectory"]])
            short = r["contender"].replace("/holdout", "").replace("diffaugment", "DA").replace("translation", "tr")
            series[f"{short.replace('+cutout', '+co')} {r['images']}"] = (points[:, 0], points[:, 1])
    title = "copying (y) against the SVM's confident share (x), every 60 CPU-s (seed 0)"
    save_image(path, line_chart(series, title, "samples nearer a seen digit", size=(900, 420)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="CPU seconds of training per run")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0, help="seeds first-seed .. first-seed + seeds - 1")
    parser.add_argument("--workers", type=int, default=2, help="runs at once, one thread each")
    parser.add_argument("--contenders", default=",".join(DEFAULT_CONTENDERS), help=f"of {', '.join(CONTENDERS)}")
    parser.add_argument("--fractions", default=",".join(map(str, FRACTIONS)))
    parser.add_argument("--root", type=Path, default=Path("runs/small-data"))
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--trajectory", type=int, default=0, help="also score each run at this many points along its seconds"
    )
    parser.add_argument("--png", type=Path, help="draw ADA's p along the adaptive runs here")
    parser.add_argument(
        "--redraw", help="only draw --png (ADA's p) and --frontier from these results JSONs (comma-separated)"
    )
    parser.add_argument(
        "--frontier", type=Path, help="draw each run's trajectory (--trajectory) as copying against confident share"
    )
    parser.add_argument(
        "--endless", action="store_true", help="also the adaptive contenders on shapes, a set drawn fresh (ADA's p)"
    )
    args = parser.parse_args()
    if args.redraw:
        rows = [row for name in args.redraw.split(",") for row in json.loads(Path(name).read_text())["runs"]]
        if args.png:
            draw_p(rows, args.png)
        if args.frontier:
            draw_frontier(rows, args.frontier)
        return
    fractions = tuple(float(f) for f in args.fractions.split(","))
    folders = subsets(args.root, fractions)
    jobs = [
        (fraction, name, seed, str(folders[fraction]), CONTENDERS[name], args.seconds, args.trajectory)
        for seed in range(args.first_seed, args.first_seed + args.seeds)
        for fraction in fractions
        for name in args.contenders.split(",")
    ]
    if args.endless:  # a set that cannot be memorised: where ADA's p should stay near 0
        adaptive = [n for n in args.contenders.split(",") if "ada" in n]
        jobs += [(0.0, name, 0, "shapes", CONTENDERS[name] + " --image-size 16", args.seconds, 0) for name in adaptive]
    started = time.time()
    with multiprocessing.get_context("spawn").Pool(args.workers, _init, (str(args.root),)) as pool:
        rows = pool.map(run, jobs, chunksize=1)
    result = {
        "machine": {"platform": platform.platform(), "torch": torch.__version__, "cpus": os.cpu_count()},
        "seconds": args.seconds,
        "n": N,
        "contenders": {k: CONTENDERS[k] for k in args.contenders.split(",")},
        "wall_seconds": round(time.time() - started, 1),
        "table": summary(rows),
        "real_nearer_seen": {  # fresh real digits' nearer_seen, for each held-out split
            str(f): real_nearer_seen(folders[f], args.root / "digits16-all") for f in fractions if 0 < f < 1
        },
        "runs": rows,
    }
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    if args.png:
        draw_p(rows, args.png)
    if args.frontier:
        draw_frontier(rows, args.frontier)
    for row in result["table"]:
        shown = [k for k in ("confident", "classes", "kl", "clf_kl", "nearer_seen", "c_t") if k in row]
        cells = " | ".join(f"{row[k][0]:.3g} ± {row[k][1]:.2g}" for k in shown)
        print(f"| {row['fraction']:.0%} | {row['contender']} | {cells} |")


if __name__ == "__main__":
    main()
