"""What image evaluation costs: seconds per 1,000 images through each feature space at 32 and
64 px (Inception-v3 gives its pool features and IS logits in one pass; VGG-16 resizes every
image to 224 px, so its cost hardly depends on the size), the metrics on top (FID, KID, IS,
precision/recall, density/coverage) at a given sample count, and what the WGAN-GP paper's
CIFAR-10 protocol (IS on 50,000 samples, FID-50k against the training set's statistics) costs
at these speeds, on the CPU and on CUDA when present.

    python benchmarks/eval_bench.py                         # CPU (and CUDA when present)
    python benchmarks/eval_bench.py --images 200 --json eval.json

Inception-v3 and VGG-16 run with He-normal state dicts in torch-fidelity's and torchvision's
layouts: the same networks and arithmetic as the published weights (which these machines cannot
download), so the same time. The random-conv fallback needs no weights. Needs the `inception`
extra.
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

from ganctl.quality import features, fidelity


def random_weights(folder: Path) -> dict[str, Path]:
    paths = {"inception": folder / "inception-random.pth", "vgg16": folder / "vgg16-random.pth"}
    torch.save(features.random_inception_state(), paths["inception"])
    torch.save(features.random_vgg16_state(), paths["vgg16"])
    return paths


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
    logits = torch.randn(n, 1008, generator=g) * 3
    out = {}
    for name in fidelity.METRICS:
        started = time.perf_counter()
        if name == "is":
            fidelity.inception_score(logits)
        else:
            fidelity.compute(real, fake, (name,))
        out[name] = time.perf_counter() - started
    return out


def protocol_cost(results: dict) -> dict[str, float]:
    """The WGAN-GP table's CIFAR-10 protocol at the measured speeds (32 px Inception): 50,000
    generated images through Inception-v3 once (IS and FID share the pass), plus 50,000 real
    training images once to write the reference statistics; in hours, per device."""
    out = {}
    for f in results["features"]:
        if f["space"] == "inception" and f["size"] == 32:
            out[f["device"]] = {
                "generated_50k_h": 50 * f["s_per_1000"] / 3600,
                "reference_50k_h": 50 * f["s_per_1000"] / 3600,
            }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=200, help="images timed per (space, size); reported per 1,000")
    parser.add_argument("--inception-images", type=int, default=64, help="the same for Inception-v3 on the CPU")
    parser.add_argument("--vgg-images", type=int, default=32, help="the same for VGG-16 on the CPU")
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
            weights = random_weights(Path(tmp))
            spaces.append(("inception", lambda d: features.inception(weights["inception"], d)))
            spaces.append(("vgg16", lambda d: features.vgg16(weights["vgg16"], d)))
        except ImportError:
            results["inception"] = "not timed: torch-fidelity is not installed (pip install 'ganctl[inception]')"
            print(results["inception"])
        few = {"inception": args.inception_images, "vgg16": args.vgg_images}
        for device in devices:
            for name, make in spaces:
                space = make(device)
                for size in (32, 64):
                    n = few.get(name, args.images) if device.type == "cpu" else args.images
                    s = per_thousand(space, size, n)
                    results["features"].append({"device": str(device), "space": name, "size": size, "s_per_1000": s})
                    print(f"{device} {name} {size} px: {s:.2f} s per 1,000 images", flush=True)
    for dims in (240, 2048):
        results["metrics"][str(dims)] = metrics_time(dims, args.n)
        print(
            f"metrics at n={args.n}, {dims}-d: "
            + ", ".join(f"{k} {v:.2f} s" for k, v in results["metrics"][str(dims)].items())
        )
    results["protocol"] = protocol_cost(results)
    for device, cost in results["protocol"].items():
        print(
            f"{device}: the WGAN-GP CIFAR-10 protocol (IS and FID-50k) takes {cost['generated_50k_h']:.2f} h per"
            f" generator, and the training set's statistics {cost['reference_50k_h']:.2f} h once"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
