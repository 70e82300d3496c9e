"""What image evaluation costs: seconds per 1,000 images through each feature space at 32 and
64 px, and the metrics on top (FID, KID, precision/recall, density/coverage) at a given sample
count, on the CPU and on CUDA when present.

    python benchmarks/eval_bench.py                         # CPU (and CUDA when present)
    python benchmarks/eval_bench.py --images 200 --json eval.json

Inception-v3 runs with a randomly initialised state dict in torch-fidelity's layout: the same
network and arithmetic as the published weights (which these machines cannot download), so the
same time. The random-conv fallback needs no weights. Needs the `inception` extra.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from ganctl.analysis import features, fidelity


def random_inception_weights(folder: Path) -> Path:
    path = folder / "inception-random.pth"
    torch.save(features.random_inception_state(), path)
    return path


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def per_thousand(space: features.FeatureSpace, size: int, images: int) -> float:
    x = torch.rand(images, 3, size, size) * 2 - 1
    space.features(x[: min(8, images)])  # warm-up
    sync(space.device)
    started = time.perf_counter()
    space.features(x)
    sync(space.device)
    return (time.perf_counter() - started) / images * 1000


def metrics_time(dims: int, n: int) -> dict[str, float]:
    g = torch.Generator().manual_seed(0)
    real, fake = torch.randn(n, dims, generator=g), torch.randn(n, dims, generator=g) + 0.1
    out = {}
    for name in fidelity.METRICS:
        started = time.perf_counter()
        fidelity.compute(real, fake, (name,))
        out[name] = time.perf_counter() - started
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=200, help="images timed per (space, size); reported per 1,000")
    parser.add_argument("--inception-images", type=int, default=64, help="the same for Inception-v3 on the CPU")
    parser.add_argument("--n", type=int, default=2500, help="samples per set for the metrics' timing")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    results = {
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "features": [],
        "metrics": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        spaces = [("random-conv", lambda d: features.random_conv(d))]
        try:
            weights = random_inception_weights(Path(tmp))
            spaces.append(("inception", lambda d: features.inception(weights, d)))
        except ImportError:
            results["inception"] = "not timed: torch-fidelity is not installed (pip install 'ganctl[inception]')"
            print(results["inception"])
        for device in devices:
            for name, make in spaces:
                space = make(device)
                for size in (32, 64):
                    n = args.inception_images if name == "inception" and device.type == "cpu" else args.images
                    s = per_thousand(space, size, n)
                    results["features"].append({"device": str(device), "space": name, "size": size, "s_per_1000": s})
                    print(f"{device} {name} {size} px: {s:.2f} s per 1,000 images", flush=True)
    for dims in (240, 2048):
        results["metrics"][str(dims)] = metrics_time(dims, args.n)
        print(
            f"metrics at n={args.n}, {dims}-d: "
            + ", ".join(f"{k} {v:.2f} s" for k, v in results["metrics"][str(dims)].items())
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
