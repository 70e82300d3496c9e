"""How good a generator is, without the training loop: the data's quality metrics (2-D mode
metrics, the `shapes` judge), image metrics in a feature space (FID, KID, precision/recall,
density/coverage), `ganctl gradnorm`'s interpolate summary, and the run's pictures.

`Evaluator` draws its real points, latents and interpolation coefficients once, from the
evaluation stream (`ganctl.streams`), so every evaluation of a run, resumed or not, and of its
checkpoints uses the same inputs. `score` is the same measurement for any generated samples
(`ganctl eval`). A real set's features are cached under the image cache folder, keyed by the
feature network's weights, the set's fingerprint, the sample count and the seed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from ganctl import streams
from ganctl.analysis import fidelity
from ganctl.analysis.defaults import EVAL_N
from ganctl.analysis.features import FeatureSpace, feature_space, inception, inception_path, random_conv
from ganctl.analysis.gradnorm import DEFAULT_TOL, gradient_norms, summarise
from ganctl.analysis.quality import W1_POINTS, mixture_quality, w1_floor, wasserstein1
from ganctl.checkpoint import Checkpoint
from ganctl.config import TrainConfig, metric_list
from ganctl.data import DataSource
from ganctl.errors import ConfigError, DataError
from ganctl.fileio import atomic_path
from ganctl.networks import Networks, eval_mode
from ganctl.penalties import interpolate
from ganctl.render import image_grid, save_image, scatter_over_field

FIELD_RESOLUTION = 128
PLOT_POINTS = 1000
GRID_IMAGES = 64  # an 8 x 8 grid from fixed latents
EVAL_BATCH = 500
GRADNORM_POINTS = 512  # interpolates measured at each eval (the gradnorm command's summary)
CHUNK = 500  # images per chunk through the generator and the feature network
FEATURES_FORMAT = "ganctl.features/1"


class Evaluator:
    """Fixed real samples and fixed latents, drawn once from their own seeded stream, so every
    evaluation and picture of a run (and of a resumed run) uses the same inputs."""

    def __init__(self, nets: Networks):
        self.nets = nets
        cfg = nets.cfg
        rng = nets.eval_generator(streams.EVAL_LATENTS)
        self.dataset = dataset = nets.dataset
        self.points = dataset.kind == "points"
        self.latents = nets.noise(cfg.eval_samples, rng)
        # Real points for the gradient-norm summary, from a stream of their own so that adding
        # them changed no other evaluation input.
        self.n_gradnorm = min(GRADNORM_POINTS, cfg.eval_samples)
        self.real_gradnorm = dataset.sample(
            self.n_gradnorm, nets.eval_generator(streams.EVAL_GRADNORM_REAL), nets.device
        )
        self.last_norms: Tensor | None = None  # the latest gradient-norm summary's norms (for histograms)
        self.metrics = () if self.points else metric_list(cfg.eval_metrics, "--eval-metrics")
        self._space: FeatureSpace | None = None
        self._real: RealFeatures | None = None
        if not self.points:
            return
        self.real = dataset.sample(cfg.eval_samples, rng, nets.device)
        self.n_w1 = min(W1_POINTS, cfg.eval_samples)
        self.real_w1 = dataset.sample(self.n_w1, rng, nets.device)
        self.mixture = dataset.mixture
        self.extent = plot_extent(self.real)
        # The W1 a perfect generator would still show at this sample size.
        self.w1_floor = floor_of(dataset, self.n_w1, cfg.seed)  # (mean, sd)

    @torch.no_grad()
    def fake(self, n: int | None = None) -> torch.Tensor:
        net = self.nets.sampler
        latents = self.latents[:n]
        with eval_mode(net):
            return torch.cat([net(z).float() for z in latents.split(EVAL_BATCH)])

    def evaluate(self) -> dict[str, Any]:
        fake = self.fake()
        result: dict[str, Any] = self.gradnorm(fake[: self.n_gradnorm])
        if not self.points:
            judge = self.dataset.judge
            return {**(judge.quality(fake) if judge is not None else {}), **self.image_metrics(fake), **result}
        result.update(
            {
                "w1": wasserstein1(fake[: self.n_w1], self.real_w1),
                "w1_floor": self.w1_floor[0],
                "w1_floor_sd": self.w1_floor[1],
                "w1_points": self.n_w1,
            }
        )
        if self.mixture is not None:
            result.update(mixture_quality(fake, self.mixture.centres_tensor(), self.mixture.std))
        return result

    def image_metrics(self, fake: Tensor) -> dict[str, float]:
        """The run's image metrics (--eval-metrics) of these samples against real images drawn
        once from the evaluation stream, in the run's feature space (--eval-features)."""
        if not self.metrics:
            return {}
        if self._space is None:
            self._space = run_feature_space(self.nets.cfg, self.nets.device)
            seed = streams.eval_seed(self.nets.cfg.seed, streams.EVAL_REAL_FEATURES)
            self._real = real_features(self._space, self.dataset, len(self.latents), seed)
        fake_features = self._space.features(fake)
        return labelled(self._space, fidelity.compute(self._real.features, fake_features, self.metrics))

    def measured_on(self) -> dict[str, Any] | None:
        """What the image metrics were measured on (feature space and its weights' hash, sample
        counts, the real set's fingerprint), once they have been; None before or without them."""
        if self._space is None or self._real is None:
            return None
        return {
            "feature_space": self._space.describe(),
            "n_fake": len(self.latents),
            "n_real": self._real.n,
            "real_fingerprint": self._real.fingerprint,
        }

    def gradnorm(self, fake: torch.Tensor) -> dict[str, float]:
        """`ganctl gradnorm`'s interpolate summary: ||grad D(x_hat)|| on fixed real points and
        the fixed latents' samples, with interpolation coefficients drawn the same every time."""
        x_hat = interpolate(
            self.real_gradnorm,
            fake.to(self.real_gradnorm.dtype),
            self.nets.eval_generator(streams.EVAL_GRADNORM_INTERP),
        )
        self.last_norms = gradient_norms(self.nets.critic, x_hat)[1]
        stats = summarise(self.last_norms, DEFAULT_TOL)
        return {
            "gradnorm_mean": stats["mean"],
            "gradnorm_q50": stats["q50"],
            "violation_share": stats["above"],
            "vanishing_share": stats["vanishing"],
        }

    def draw(self, path: Path | None, title: str) -> Image.Image:
        """The run's picture (a grid from fixed latents, or 2-D points over the critic's
        field), saved to `path` unless it is None, and returned."""
        if not self.points:
            grid = image_grid(self.fake(GRID_IMAGES).cpu().numpy(), columns=8)
            if path is not None:
                save_image(path, grid)
            return grid
        return draw_points(path, self.nets, self.real[:PLOT_POINTS], self.fake(PLOT_POINTS), title, self.extent)


def plot_extent(real: torch.Tensor) -> tuple[float, float, float, float]:
    """A square view around the central 99.8 % of the real points, with a margin."""
    lo = torch.quantile(real.float().cpu(), 0.001, dim=0)
    hi = torch.quantile(real.float().cpu(), 0.999, dim=0)
    centre, half = (lo + hi) / 2, float((hi - lo).max()) / 2 * 1.35
    return (float(centre[0]) - half, float(centre[0]) + half, float(centre[1]) - half, float(centre[1]) + half)


def draw_points(
    path: Path | None,
    nets: Networks,
    real: torch.Tensor,
    fake: torch.Tensor,
    title: str,
    extent: tuple[float, float, float, float] | None = None,
) -> Image.Image:
    """Real and generated 2-D points over the critic's value field, as a PNG."""
    xmin, xmax, ymin, ymax = extent = extent or plot_extent(real)
    xs = torch.linspace(xmin, xmax, FIELD_RESOLUTION, device=nets.device)
    ys = torch.linspace(ymin, ymax, FIELD_RESOLUTION, device=nets.device)
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1).reshape(-1, 2)
    field = nets.critic_values(grid).reshape(FIELD_RESOLUTION, FIELD_RESOLUTION)
    return scatter_over_field(
        path, extent, real.cpu().numpy(), fake.cpu().numpy(), field.cpu().numpy().astype(np.float64), title
    )


_FLOORS: dict[tuple[str, int, int], tuple[float, float]] = {}


def floor_of(dataset: DataSource, n: int, seed: int) -> tuple[float, float]:
    """The W1 floor of `dataset` at n points (mean, sd over draws), from a stream of its own; it
    depends on the data, n and the seed alone, so a process computes it once for many runs."""
    key = (dataset.name, n, seed)
    if key not in _FLOORS:
        g = torch.Generator().manual_seed(streams.eval_seed(seed, streams.EVAL_W1_FLOOR))
        _FLOORS[key] = w1_floor(lambda m: dataset.sample(m, g, "cpu"), n)
    return _FLOORS[key]


# --- image metrics ---------------------------------------------------------------------------
def run_feature_space(cfg: TrainConfig, device: torch.device) -> FeatureSpace:
    """A run's feature space for its evaluations: random-conv, or Inception-v3 from --inception
    (or $GANCTL_INCEPTION)."""
    if cfg.eval_features == "random-conv":
        return random_conv(device)
    path = inception_path(cfg.inception)
    if path is None:
        raise ConfigError("--eval-features inception needs the weights file: --inception PATH or $GANCTL_INCEPTION")
    return inception(path, device)


def labelled(space: FeatureSpace, values: dict[str, float]) -> dict[str, float]:
    """Metric names carry their feature space, so a fallback number is never read as a
    published FID: fid[random-conv], precision[inception], ..."""
    return {f"{k}[{space.label}]": v for k, v in values.items()}


@dataclass
class RealFeatures:
    features: Tensor  # (n, dims), CPU float32
    n: int
    fingerprint: str  # of the real set (`dataset.fingerprint()`)
    seed: int
    cache: str | None  # the cache file, where it could be written


def _cache_dir() -> Path:
    from ganctl.data.images import cache_dir

    return cache_dir()


def real_features(space: FeatureSpace, dataset: DataSource, n: int, seed: int) -> RealFeatures:
    """Features of n real images (all of a smaller finite set), read from the cache when the
    same network has seen the same images, else computed and cached."""
    n = min(n, dataset.length) if dataset.length is not None else n
    fingerprint = dataset.fingerprint()
    key = hashlib.sha256(f"{FEATURES_FORMAT}|{space.sha256}|{fingerprint}|{n}|{seed}".encode()).hexdigest()[:32]
    path = _cache_dir() / f"features-{key}.safetensors"
    cached = _read_features(path, n)
    if cached is None:
        generator = torch.Generator().manual_seed(seed)
        cached = torch.cat([space.features(chunk) for chunk in dataset.chunks(n, generator, CHUNK)])
        _write_features(
            path,
            cached,
            {"space": space.label, "sha256": space.sha256, "fingerprint": fingerprint, "n": n, "seed": seed},
        )
    return RealFeatures(cached, n, fingerprint, seed, str(path) if path.exists() else None)


def _read_features(path: Path, n: int) -> Tensor | None:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), "pt") as fh:
            if (fh.metadata() or {}).get("format") != FEATURES_FORMAT:
                return None
            features = fh.get_tensor("features")
    except (SafetensorError, OSError, ValueError, KeyError):
        return None  # absent or damaged: computed again
    return features if len(features) == n else None


def _write_features(path: Path, features: Tensor, meta: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    metadata = {"format": FEATURES_FORMAT, **{k: json.dumps(v) for k, v in meta.items()}}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            save_file({"features": features.contiguous()}, str(tmp), metadata=metadata)
    except OSError:
        pass  # the cache is an optimisation; an unwritable cache folder costs a recomputation


def generated_chunks(nets: Networks, n: int, seed: int, raw: bool = False) -> Iterator[Tensor]:
    """n samples of the EMA generator (the raw one with `raw`) from latents of their own seeded
    stream, in chunks."""
    g = torch.Generator(device=nets.device).manual_seed(seed)
    for start in range(0, n, CHUNK):
        yield nets.sample(min(CHUNK, n - start), g, raw=raw).float()


def score(
    dataset: DataSource,
    fake: Iterable[Tensor],
    metrics: tuple[str, ...],
    space: FeatureSpace | None,
    n_real: int,
    seed: int = 0,
) -> dict[str, Any]:
    """How good `fake` (chunks of samples shaped like the data's) is as a sample of `dataset`:
    the data's own metrics (2-D: modes, high-quality share, W1; shapes: the judge) and, for
    images, `metrics` in `space` against n_real real images. Returns the metrics and what they
    were measured on."""
    if dataset.kind == "points":
        return _score_points(dataset, torch.cat([c.cpu() for c in fake]), n_real, seed)
    judge = dataset.judge
    modes, feats, n_fake = [], [], 0
    for chunk in fake:
        if chunk.dim() != 4 or tuple(chunk.shape[1:]) != tuple(dataset.shape):
            raise DataError(
                f"generated images have shape {tuple(chunk.shape[1:])}, but the real images have {tuple(dataset.shape)}"
            )
        n_fake += len(chunk)
        if judge is not None:
            modes.append(judge(chunk))
        if metrics and space is not None:
            feats.append(space.features(chunk))
    result: dict[str, Any] = {"n_fake": n_fake, "metrics": {}}
    if judge is not None:
        result["metrics"].update(judge.quality_of_modes(torch.cat(modes)))
    if metrics and space is not None:
        real = real_features(space, dataset, n_real, seed)
        result["metrics"].update(labelled(space, fidelity.compute(real.features, torch.cat(feats), metrics, seed)))
        result.update({"n_real": real.n, "real_fingerprint": real.fingerprint, "feature_space": space.describe()})
    return result


def _score_points(dataset: DataSource, fake: Tensor, n_real: int, seed: int) -> dict[str, Any]:
    g = torch.Generator().manual_seed(seed)
    real = dataset.sample(min(n_real, len(fake)), g, "cpu")
    k = min(W1_POINTS, len(fake), len(real))
    floor, floor_sd = w1_floor(lambda m: dataset.sample(m, g, "cpu"), k)
    metrics: dict[str, Any] = {
        "w1": wasserstein1(fake[:k].float(), real[:k]),
        "w1_floor": floor,
        "w1_floor_sd": floor_sd,
        "w1_points": k,
    }
    if dataset.mixture is not None:
        metrics.update(mixture_quality(fake, dataset.mixture.centres_tensor(), dataset.mixture.std))
    return {"n_fake": len(fake), "n_real": len(real), "metrics": metrics}


def choose_space(name: str, weights: str | None, device: torch.device | str) -> FeatureSpace:
    """--features auto | random-conv | inception: auto takes Inception-v3 when a weights file is
    given (--inception or $GANCTL_INCEPTION), else the random-conv fallback."""
    if name == "auto":
        return feature_space(weights, device)
    if name == "random-conv":
        return random_conv(device)
    if name == "inception":
        path = inception_path(weights)
        if path is None:
            raise ConfigError("--features inception needs the weights file: --inception PATH or $GANCTL_INCEPTION")
        return inception(path, device)
    raise ConfigError(f"--features {name!r} is not one of: auto, random-conv, inception")


# --- ganctl eval ------------------------------------------------------------------------------


def evaluate_checkpoint(
    nets: Checkpoint,
    metrics: tuple[str, ...],
    space: FeatureSpace | None,
    n: int = EVAL_N,
    seed: int = 0,
    data: str | None = None,
    raw: bool = False,
) -> dict[str, Any]:
    """`ganctl eval CKPT`: n samples of the checkpoint's generator scored against its data (or
    `data`, which must have the same sample shape)."""
    from ganctl.data import load_dataset, sample_shape

    dataset = nets.dataset if data is None else load_dataset(nets.cfg.replace(data=data))
    if data is not None and tuple(dataset.shape) != sample_shape(nets.cfg):
        raise DataError(
            f"--data {data}: its samples have shape {tuple(dataset.shape)}, but this generator makes"
            f" {sample_shape(nets.cfg)} (the checkpoint was trained on {nets.cfg.data})"
        )
    chunks = generated_chunks(nets, n, seed, raw)
    report = score(dataset, chunks, metrics if dataset.kind == "images" else (), space, n, seed)
    source = {
        "checkpoint": str(nets.path),
        "step": nets.step,
        "generator": "raw" if raw or nets.ema is None else "ema",
    }
    return {"source": source, "data": data or nets.cfg.data, "seed": seed, **report}


def evaluate_files(
    fake: Path,
    data: str,
    metrics: tuple[str, ...],
    space: FeatureSpace | None,
    n: int = EVAL_N,
    seed: int = 0,
    image_size: int | None = None,
    channels: int | None = None,
) -> dict[str, Any]:
    """`ganctl eval --fake PATH --data REAL`: samples made by any generator, as a folder of images
    or an .npy/.npz array (images, or 2-D points for 2-D data), scored against `data`. A folder
    is decoded at the real images' size; an array must already have their shape."""
    from ganctl.data import images as image_files
    from ganctl.data import load_dataset

    dataset = load_dataset(TrainConfig(data=data, image_size=image_size, channels=channels))
    fake = Path(fake)
    if not fake.exists():
        raise DataError(f"--fake {fake}: no such file or folder")
    if dataset.kind == "points":
        chunks: Iterable[Tensor] = [_points_file(fake)[:n]]
    else:
        c, size, _ = dataset.shape
        if fake.is_dir():
            generated = image_files.load_folder(fake, size, c, use_cache=False)
        elif fake.suffix.lower() in (".npy", ".npz"):
            generated = image_files.load_array(fake, None, None)
        else:
            raise DataError(f"--fake {fake}: not a folder of images or an .npy/.npz array")
        chunks = generated.chunks(min(n, len(generated)), torch.Generator().manual_seed(seed), CHUNK)
    report = score(dataset, chunks, metrics if dataset.kind == "images" else (), space, n, seed)
    return {"source": {"fake": str(fake)}, "data": data, "seed": seed, **report}


def _points_file(path: Path) -> Tensor:
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"--fake {path}: not a readable .npy array of 2-D points ({exc})") from None
    if array.ndim != 2 or array.shape[1] != 2 or not np.issubdtype(array.dtype, np.number):
        raise DataError(f"--fake {path}: 2-D data needs an (N, 2) array of points, got {array.shape} {array.dtype}")
    return torch.from_numpy(array.astype(np.float32))
