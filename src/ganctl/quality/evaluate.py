"""How good a generator is, without the training loop: `ganctl eval` as library calls. Samples of
a checkpoint's generator (`evaluate_checkpoint`) or of any generator's files (`evaluate_files`)
scored against real data: the data's own metrics (2-D: modes, high-quality share, W1 with a
perfect generator's floor and, for a certified critic, its W1 lower bound; `shapes`: the judge),
image metrics in named feature spaces, and a classifier's scores; and a real set's statistics
file (`save_reference`)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ganctl import memory, progress
from ganctl.config import FIDELITY_METRICS, TrainConfig, data_kind, metric_list
from ganctl.data import DataSource, arrays, folders, load_dataset, sample_shape
from ganctl.data.arrays import read_points
from ganctl.data.images import ImageSet, match_channels
from ganctl.data.stacked import StackedSet, is_stacked
from ganctl.devices import resolve_device
from ganctl.errors import ConfigError, DataError
from ganctl.fileio import check_writable
from ganctl.lipschitz.bounds import certified_w1_report, upper_bound_report
from ganctl.lipschitz.transport import W1_POINTS, w1_floor, wasserstein1
from ganctl.nets.checkpoint import Checkpoint, load
from ganctl.nets.networks import Networks
from ganctl.quality import classifier, copying, scores, w1bound
from ganctl.quality import reference as references
from ganctl.quality.classifier import STACKED_N
from ganctl.quality.defaults import EVAL_N
from ganctl.quality.modes import class_consistency, mixture_quality
from ganctl.quality.reference import Reference
from ganctl.quality.scores import CHUNK, Generated, Spaces, spaces_described
from ganctl.runfolder import RunFolder, run_dir_of


def generated_chunks(nets: Networks, n: int, seed: int, raw: bool = False) -> Iterator[Tensor]:
    """n samples of the EMA generator (the raw one with `raw`) from latents of their own seeded
    stream, in chunks; a conditional generator's sample i is of class i mod K
    (`Networks.class_labels`)."""
    g = torch.Generator(device=nets.device).manual_seed(seed)
    labels = nets.class_labels(n, None) if nets.cfg.conditional else None
    for start in range(0, n, CHUNK):
        at = labels[start : start + CHUNK] if labels is not None else None
        yield nets.sample(min(CHUNK, n - start), g, raw=raw, labels=at).float()


@dataclass(frozen=True)
class Request:
    """What `ganctl eval` measures: the image metrics and their spaces (None on 2-D data), the
    sample count, the seed, which generator, and a reference statistics file for FID."""

    metrics: tuple[str, ...] = ()
    spaces: Spaces | None = None
    n: int = EVAL_N
    seed: int = 0
    raw: bool = False
    reference: Reference | None = None
    classifier: str | None = None  # auto | a TorchScript file: scores from a classifier of the real labelled data
    copying: CopyingRequest | None = None  # whether the samples copy the training images
    w1: w1bound.Protocol | None = None  # the certified W1 lower bound, by this protocol


@dataclass(frozen=True)
class CopyingRequest:
    """The copying scores (`ganctl.quality.copying`): in which space (`space`: pixels, a feature
    network's, or the classifier's; `features` computes it, None for the classifier's), against
    which held-out images (`holdout`: a path, or None for the run's own --holdout split), and
    where to draw the most copied samples (`picture`)."""

    space: str = "pixels"
    features: Callable[[Tensor], Tensor] | None = None
    holdout: str | None = None
    picture: Path | None = None


def score(
    dataset: DataSource | None,
    fake: Iterable[Tensor],
    request: Request,
    fake_resampled: bool = False,
    labels: Tensor | None = None,
    critic: Networks | None = None,
    verdicts: Any = None,
    expected: int | None = None,
) -> dict[str, Any]:
    """How good `fake` (chunks of samples shaped like the data's) is as a sample of `dataset`:
    the data's own metrics (2-D: modes, high-quality share, W1; shapes: the judge) and, for
    images, the request's metrics against request.n real images (or the reference file's
    statistics), with what they were measured on. `dataset` may be None for images scored
    against a reference file alone (FID and IS). With the generated samples' `labels` (a
    conditional generator's), also class consistency and the intra-class FID; with `critic`
    (the networks whose critic to read) on 2-D data, its certified W1 lower bound beside W1.
    With `verdicts` (a classifier's `Verdicts`), every chunk is read by it too, as it comes: the
    samples are drawn once and never held whole. `expected` is how many samples `fake` holds,
    for the progress report (request.n when not given)."""
    fake = progress.counted(fake, "generated samples", expected or request.n)
    if dataset is not None and dataset.kind == "points":
        points = torch.cat([c.cpu() for c in fake])
        if verdicts is not None:
            verdicts.add(points)
        result = _score_points(dataset, points, request.n, request.seed, critic)
        if labels is not None:
            result["metrics"].update(class_consistency(dataset, points, labels.cpu()))
        return result
    spaces, metrics = request.spaces, request.metrics if request.spaces else ()
    judge = dataset.judge if dataset is not None else None
    generated, modes, n_fake = Generated(spaces, metrics) if spaces else None, [], 0
    for chunk in fake:
        if dataset is not None and (chunk.dim() != 4 or tuple(chunk.shape[1:]) != tuple(dataset.shape)):
            raise DataError(
                f"generated images have shape {tuple(chunk.shape[1:])}, but the real images have {tuple(dataset.shape)}"
            )
        at = labels[n_fake : n_fake + len(chunk)] if labels is not None else None
        n_fake += len(chunk)
        if judge is not None:
            modes.append(judge(chunk))
        if generated is not None and metrics:
            generated.add(chunk, at)
        if verdicts is not None:
            verdicts.add(chunk)
    result: dict[str, Any] = {"n_fake": n_fake, "metrics": {}}
    if judge is not None:
        judged_modes = torch.cat(modes)
        result["metrics"].update(judge.quality_of_modes(judged_modes))
        if labels is not None:
            result["metrics"]["class_consistency"] = float((judged_modes.cpu() == labels.cpu()).float().mean())
    if generated is not None and metrics:
        result.update(_image_scores(dataset, generated, request, fake_resampled))
        result["metrics"].update(result.pop("image_metrics"))
        if labels is not None and "fid" in metrics and dataset is not None:
            intra = scores.intra_class_fid(spaces, generated, dataset, request.n, request.seed)
            result["intra_fid_per_class"] = intra.pop("per_class")
            result["metrics"].update(intra)
    return result


def _image_scores(
    dataset: DataSource | None, generated: Generated, request: Request, fake_resampled: bool
) -> dict[str, Any]:
    spaces, metrics, reference = request.spaces, request.metrics, request.reference
    if reference is not None:
        scores.check_resolution(reference.resolution, generated.resolution, f"--ref-stats {reference.path}")
    real, out = {}, {}
    for space in scores.real_needed(spaces, metrics, reference):
        if dataset is None:
            raise ConfigError(f"--metrics {','.join(metrics)}: need the real images (--data); --ref-stats serves FID")
        found = scores.real_features(space, dataset, request.n, request.seed)
        real[space.label] = found.features
        out.update(n_real=found.n, real_fingerprint=found.fingerprint)
    out["image_metrics"] = scores.image_metrics(spaces, metrics, generated, real, reference, request.seed)
    out.update(spaces_described(spaces))
    if reference is not None:
        out["reference"] = reference.describe()
    out.update(scores.provenance(spaces, metrics, dataset, generated.resolution, fake_resampled, reference))
    return out


def _score_points(
    dataset: DataSource, fake: Tensor, n_real: int, seed: int, nets: Networks | None = None
) -> dict[str, Any]:
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
    result = {"n_fake": len(fake), "n_real": len(real), "metrics": metrics}
    if nets is not None:  # the same 2048 pairs as W1: the bound can be read against it
        upper = _critic_upper_bound(nets)
        bound = certified_w1_report(nets, real[:k].to(nets.device), fake[:k].to(nets.device), upper)
        result["w1_lower_bound"] = bound
        if bound is not None:
            metrics.update(w1_lower_bound=bound["value"], w1_lower_bound_se=bound["se"])
    return result


def _critic_upper_bound(nets: Networks) -> dict[str, Any]:
    return upper_bound_report(nets.critic, sample_shape(nets.cfg), nets.device, nets.cfg.conditional)


# --- ganctl eval ------------------------------------------------------------------------------
def check_size(
    request: Request, shape: tuple[int, ...], n_real: int | None, device: str = "cpu", held: bool = False
) -> None:
    """Refuse an --n whose samples (2-D points, all held for W1 and the mode metrics; images
    where `held`: GAN-train learns from them) or whose features (every image's, in each space,
    for FID and the rest) cannot fit."""
    n = request.n
    if len(shape) == 1:
        memory.require(3 * n * math.prod(shape) * memory.FLOAT, f"--n {n}: {n:,} points", device)
        return
    dims = sum(space.dims for space in request.spaces.used(request.metrics)) if request.spaces else 0
    dims += math.prod(shape) if held else 0
    dims += 2 * math.prod(shape) if request.w1 is not None else 0  # --w1-bound holds both sides' samples
    if request.copying is not None:
        dims += max(math.prod(shape), COPYING_DIMS)  # the copying space's features: a pixel's or a network's
        if request.copying.picture is not None:
            dims += math.prod(shape) / memory.FLOAT  # the samples themselves (uint8), for --copies
    logits = 1008 if "is" in request.metrics else 0  # Inception's logits, for IS
    real = min(n, n_real) if n_real is not None else n
    need = memory.FLOAT * (n * (dims + logits) + real * dims + CHUNK * math.prod(shape))
    memory.require(need, f"--n {n}: the features of {n:,} generated and {real:,} real images", device)


def evaluate_checkpoint(nets: Checkpoint, request: Request, data: str | None = None) -> dict[str, Any]:
    """`ganctl eval CKPT`: request.n samples of the checkpoint's generator scored against its
    data (or `data`, which must have the same sample shape)."""

    dataset = nets.dataset if data is None else load_dataset(nets.cfg.replace(data=data, image_size=None, holdout=None))
    if data is not None and tuple(dataset.shape) != sample_shape(nets.cfg):
        raise DataError(
            f"--data {data}: its samples have shape {tuple(dataset.shape)}, but this generator makes"
            f" {sample_shape(nets.cfg)} (the checkpoint was trained on {nets.cfg.data})"
        )
    held = bool(request.classifier) and nets.cfg.conditional  # GAN-train keeps the samples
    check_size(request, sample_shape(nets.cfg), dataset.length, str(nets.device), held)
    labels = nets.class_labels(request.n, None).cpu() if nets.cfg.conditional else None
    judged = _judge(dataset, request, keep=labels is not None)
    unseen = _held_out(request, dataset, run_dir_of(nets.path) if data is None and nets.path is not None else None)
    collector = _collector(request, judged)
    chunks = generated_chunks(nets, request.n, request.seed, request.raw)
    chunks = collector.tee(chunks) if collector is not None else chunks
    kept: list[Tensor] = []
    chunks = _kept(chunks, kept) if request.w1 is not None else chunks
    report = score(dataset, chunks, request, labels=labels, critic=nets, verdicts=judged)
    _classifier_scores(report, dataset, judged, labels, request)
    _copying_scores(report, collector, dataset, unseen, request, judged)
    _w1_scores(report, dataset, kept, request, nets.device)
    generator = "raw" if request.raw or nets.ema is None else "ema"
    source = {"checkpoint": str(nets.path), "step": nets.step, "generator": generator}
    warnings = skipped_warnings(dataset, "--data")
    return {
        "source": source,
        "data": data or nets.cfg.data,
        "seed": request.seed,
        **report,
        **({"warnings": warnings} if warnings else {}),
    }


def evaluate_files(
    fake: Path,
    data: str | None,
    request: Request,
    image_size: int | None = None,
    channels: int | None = None,
    device: torch.device | None = None,
) -> dict[str, Any]:
    """`ganctl eval --fake PATH --data REAL`: samples made by any generator, as a folder of images
    or an .npy/.npz array (images, or 2-D points for 2-D data), scored against `data` (or only
    against request.reference). Each side is read at its own size unless `image_size` resizes
    both; images of two sizes are refused. `device` trains --w1-bound's critic (the CPU when
    not given)."""

    fake = Path(fake)
    device = device or torch.device("cpu")
    if not fake.exists():
        raise DataError(f"--fake {fake}: no such file or folder")
    dataset = load_dataset(TrainConfig(data=data, image_size=image_size, channels=channels)) if data else None
    if dataset is not None:
        check_size(request, dataset.shape, dataset.length)
    source = {"source": {"fake": str(fake)}, "data": data, "seed": request.seed}
    if dataset is not None and dataset.kind == "points":
        points = read_points(fake)[: request.n]
        judged = _judge(dataset, request)
        report = score(dataset, [points], request, verdicts=judged)
        _classifier_scores(report, dataset, judged, None, request)
        _w1_scores(report, dataset, [points.float()], request, device)
        return {**source, **report}
    if fake.is_dir():
        generated = folders.load_folder(fake, image_size, channels, use_cache=False, flag="--fake")
    elif fake.suffix.lower() in arrays.ARRAY_SUFFIXES:
        generated = arrays.load_array(fake, image_size, channels, flag="--fake")
    else:
        raise DataError(
            f"--fake {fake}: not a folder of images or an .npy/.npz/.safetensors array (a .png grid is a picture of"
            " samples: write the samples themselves with ganctl sample --out DIR, FILE.npy or FILE.safetensors)"
        )
    notes = []
    if dataset is not None:
        scores.check_resolution(dataset.shape[-2:], generated.shape[-2:], f"--fake {fake}")
        generated, note = match_channels(generated, dataset.shape[0], f"--fake {fake}", f"--data {data}")
        notes += [note] if note else []
    count = min(request.n, len(generated))
    if dataset is not None and request.spaces is not None:  # before any feature is computed
        n_real = min(request.n, dataset.length) if dataset.length is not None else request.n
        scores.check_sizes(request.metrics, n_real, count, "--metrics", str(data))
    if request.classifier and dataset is None:
        raise ConfigError("--classifier needs the real labelled data: --data")
    judged = _judge(dataset, request)
    unseen = _held_out(request, dataset, None)
    collector = _collector(request, judged)
    chunks = generated.chunks(count, torch.Generator().manual_seed(request.seed), CHUNK)
    chunks = collector.tee(chunks) if collector is not None else chunks
    kept: list[Tensor] = []
    chunks = _kept(chunks, kept) if request.w1 is not None else chunks
    report = score(dataset, chunks, request, generated.resampled, verdicts=judged, expected=count)
    _classifier_scores(report, dataset, judged, None, request)
    _copying_scores(report, collector, dataset, unseen, request, judged)
    _w1_scores(report, dataset, kept, request, device)
    warnings = skipped_warnings(dataset, "--data") + skipped_warnings(generated, "--fake")
    return {**source, **report, **({"notes": notes} if notes else {}), **({"warnings": warnings} if warnings else {})}


def skipped_warnings(dataset: DataSource | None, flag: str) -> list[str]:
    """A warning per image file that could not be read (the rest were scored), as `train` warns."""
    return [f"{flag}: skipped an unreadable image: {s}" for s in (dataset.skipped if dataset is not None else ())]


CLASSIFIER_SEED = 0  # the judge is the same whatever --seed draws the samples


def _judge(dataset: DataSource, request: Request, keep: bool = False) -> Any:
    """The classifier of --classifier (`auto` trained, or cached, on the real labelled data; or
    the user's file, tried on it), with an empty `Verdicts` for the samples to fill as they are
    drawn; `keep` keeps the samples too (GAN-train learns from them). None without one."""

    if request.classifier is None:
        return None

    stacked = isinstance(dataset, StackedSet)
    labelled = dataset.base if stacked else dataset  # stacks: each channel is one of the grey set's images
    if request.classifier == "auto":
        judge = classifier.auto(labelled, CLASSIFIER_SEED)
    else:
        judge = classifier.from_file(Path(request.classifier), labelled, CLASSIFIER_SEED)
    return classifier.Verdicts(judge, stacked=stacked, keep=keep)


def _classifier_scores(
    report: dict[str, Any], dataset: DataSource, judged: Any, labels: Tensor | None, request: Request
) -> None:
    """The classifier's scores of the samples it has read (`judged`, its `Verdicts`; None: no
    classifier, nothing to add) into `report`: its metrics beside the others, the held-out real
    data's own values under "ceiling", and what it is."""

    if judged is None:
        return

    judge, n = judged.clf, report["n_fake"]
    # On images --metrics decides (none: none in the classifier's space either); 2-D data has
    # no image metrics of its own, so the classifier's space takes FID, KID and precision/recall.
    asked = request.metrics if dataset.kind == "images" else ("fid", "kid", "pr")
    wanted = tuple(m for m in asked if m != "is")
    if judged.stacked:
        scores.check_sizes(wanted, n, n, "--metrics", dataset.name)
        found = classifier.stacked_score(judge, judged, wanted, CLASSIFIER_SEED)
    else:
        scores.check_sizes(wanted, len(judge.held_out[0]), n, "--metrics", dataset.name)
        found = classifier.score(judge, judged, labels, wanted, CLASSIFIER_SEED)
    report.setdefault("metrics", {}).update(found["metrics"])
    report.update(classifier=found["classifier"], ceiling=found["ceiling"], not_measured=found["not_measured"])


# --- copying ----------------------------------------------------------------------------------
def _held_out(request: Request, dataset: DataSource | None, run: Path | None) -> ImageSet | None:
    """The images the generator never saw: --holdout's, or the run's own --holdout split (checked
    against the run folder's holdout.json); None where no copying score is asked. Refused in one
    line: no held-out images, another image shape, or images that are also training images."""
    asked = request.copying
    if asked is None:
        return None
    if not isinstance(dataset, ImageSet):
        raise ConfigError("--holdout: the copying scores compare images with a finite training set (--data)")
    if asked.holdout is None:
        held = dataset.held_out
        if held is None:
            raise ConfigError(
                "the copying scores need real images the generator never saw: --holdout PATH (a folder or array of"
                " them), or a run trained with --holdout N|FRACTION"
            )
        if run is not None:
            RunFolder(run).check_holdout(dataset.whole_fingerprint, dataset.held_indices)
        return held
    flag = f"--holdout {asked.holdout}"
    side = dataset.shape[-1] if dataset.resampled else None  # resized as the training images were
    held = load_dataset(TrainConfig(data=asked.holdout, image_size=side))
    if not isinstance(held, ImageSet):
        raise DataError(f"{flag}: not a folder of images or an image array (the held-out images)")
    held, _ = match_channels(held, dataset.shape[0], flag, "the training images")
    if tuple(held.shape) != tuple(dataset.shape):
        shape = " x ".join(map(str, held.shape))
        raise DataError(
            f"{flag}: its images are {shape}, the training images {' x '.join(map(str, dataset.shape))}; held-out"
            " images must be of the training images' size"
        )
    both = copying.shared_images(held.images, dataset.images)
    if both:
        raise DataError(
            f"{flag}: {both} of its {len(held)} images are also in the training data (pixel for pixel); held-out"
            " images must be ones the generator never trained on"
        )
    return held


def _collector(request: Request, judged: Any) -> copying.Collector | None:
    asked = request.copying
    if asked is None:
        return None
    features = asked.features
    if features is None:  # the classifier's space
        if judged is None:
            raise ConfigError("--copying-features classifier reads the classifier's features: add --classifier")
        features = lambda x: judged.clf.predict(x.cpu())[1]  # noqa: E731
    return copying.Collector(features, keep=asked.picture is not None)


def _copying_scores(
    report: dict[str, Any],
    collector: copying.Collector | None,
    train: DataSource,
    held: ImageSet | None,
    request: Request,
    judged: Any,
) -> None:
    """The copying scores of the collected samples into `report` (their metrics, and under
    "copying" what they were measured on), and the picture of the most copied."""
    if collector is None or held is None:
        return
    asked = request.copying
    space = judged.clf.label if asked.space == "classifier" else asked.space
    features = collector.features
    train_f = copying.features_of(train.images.cpu(), features, f"training images through {space}")
    held_f = copying.features_of(held.images.cpu(), features, f"held-out images through {space}")
    found = copying.copying_scores(collector.collected(), train_f, held_f, space, request.seed)
    report.setdefault("metrics", {}).update(found.report["metrics"])
    described = {**found.report["copying"], "holdout": asked.holdout or "the run's --holdout split"}
    if math.isnan(found.report["metrics"][f"c_t[{space}]"]):
        report.setdefault("notes", []).append(
            f"c_t[{space}] is not measured: no k-means cell holds more than {copying.TAU_SAMPLES} of the"
            f" {len(collector.collected())} samples (Meehan et al.'s tau); draw more with --n"
        )
    if asked.picture is not None:
        copying.draw_copies(asked.picture, found, collector.samples(), train.images.cpu(), held.images.cpu())
        described["picture"] = str(asked.picture)
    report["copying"] = described


# --- the certified W1 lower bound ---------------------------------------------------------------
def _kept(chunks: Iterable[Tensor], into: list[Tensor]) -> Iterator[Tensor]:
    """The chunks, each also kept (on the CPU) in `into`."""
    for chunk in chunks:
        into.append(chunk.detach().float().cpu())
        yield chunk


def _w1_scores(
    report: dict[str, Any], dataset: DataSource | None, kept: list[Tensor], request: Request, device: torch.device
) -> None:
    """--w1-bound: the certified W1 lower bound (`ganctl.quality.w1bound`) of the kept samples
    against as many real ones (all of a smaller set), into the report's metrics and, with its
    protocol and both parts' values, under "w1_bound"."""
    if request.w1 is None or dataset is None:
        return
    fake = torch.cat(kept)
    n_real = min(len(fake), dataset.length) if dataset.length is not None else len(fake)
    g = torch.Generator().manual_seed(request.seed + 1)  # a stream apart from the samples'
    real = torch.cat([c.float().cpu() for c in dataset.chunks(n_real, g, CHUNK)])
    found = w1bound.certified_w1(real, fake, request.w1, device)
    report["metrics"]["w1_bound"] = found["value"]
    report["w1_bound"] = found


def save_reference(data: str, path: Path, request: Request, image_size: int | None = None) -> dict[str, Any]:
    """`ganctl eval --data D --save-stats FILE.npz`: the real set's feature moments in the main
    space, with the space's hash, the image count and resolution, written to `path`."""

    dataset = load_dataset(TrainConfig(data=data, image_size=image_size))
    if dataset.kind != "images":
        raise DataError(f"--save-stats: --data {data} is 2-D data; statistics files are for images")
    space = request.spaces.main
    found = scores.real_features(space, dataset, request.n, request.seed)
    info = {"resolution": tuple(dataset.shape[-2:]), "resampled": dataset.resampled, "fingerprint": found.fingerprint}
    saved = references.save(path, found.features, space, info)
    return {"data": data, "saved": saved.describe(), "feature_space": space.describe(), "n_real": found.n}


# --- ganctl.evaluate ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Evaluation:
    """What `evaluate` measured: its metrics, each named with its feature space
    (`fid[inception]`, `hq_share`, `classes_covered[classifier-1a2b3c4d]`), and what they were
    measured on, whether they are standard, warnings and notes, as `ganctl eval --json` prints
    them (`to_dict`)."""

    report: dict[str, Any]

    @property
    def metrics(self) -> dict[str, float]:
        return self.report.get("metrics", {})

    @property
    def standard(self) -> bool | None:
        """Whether the image metrics may be set beside a paper's (None: no image metrics)."""
        return self.report.get("standard")

    @property
    def warnings(self) -> list[str]:
        return self.report.get("warnings", [])

    @property
    def notes(self) -> list[str]:
        return self.report.get("notes", [])

    def to_dict(self) -> dict[str, Any]:
        return self.report


def default_n(data: str | None) -> int:
    """EVAL_N, or PacGAN's 26,000 samples where modes of stacked data are counted."""
    return STACKED_N if data is not None and is_stacked(data) else EVAL_N


def evaluate(
    checkpoint: str | Path | None = None,
    *,
    fake: str | Path | None = None,
    data: str | None = None,
    metrics: str = "all",
    n: int | None = None,
    seed: int = 0,
    features: str = "auto",
    inception: str | Path | None = None,
    vgg: str | Path | None = None,
    dinov2: str | Path | None = None,
    dinov2_resize: str = "torch-fidelity",
    ref_stats: str | Path | None = None,
    save_stats: str | Path | None = None,
    image_size: int | None = None,
    raw: bool = False,
    classifier: str | Path | None = None,
    holdout: str | Path | None = None,
    copying_features: str = "pixels",
    copies: str | Path | None = None,
    w1_bound: bool = False,
    w1_steps: int | None = None,
    device: str = "cpu",
) -> Evaluation:
    """How good a generator is: `checkpoint`'s generator (a run folder or checkpoint file), or
    any generator's samples (`fake`: a folder of images or an array), scored against `data`
    (the checkpoint's own by default) or a reference statistics file (`ref_stats`). On 2-D data:
    modes, high-quality share and W1 beside a perfect generator's; on `shapes`: the judge; on
    images: `metrics` ("all", "none" or some of fid, kid, is, pr, dc) in the `features` space
    (auto, random-conv, inception, dinov2), each side at its own resolution unless
    `image_size`; with `classifier` ("auto" or a TorchScript file), scores from a classifier of
    the labelled real data. With `holdout` (real images the generator never saw; a run trained
    with --holdout has its own), whether the samples copy the training images, in the
    `copying_features` space (pixels, random-conv, inception, dinov2 or classifier), and a
    picture of the most copied at `copies`. With `w1_bound`, the certified lower bound on W1
    between the data and the samples (`ganctl.quality.w1bound`; its critic trained `w1_steps`
    steps). `n` generated samples (10,000; 26,000 on stacked
    data). With `save_stats` and `data` alone, the real set's statistics file is written
    instead.

    This is `ganctl eval`: the command parses its options, calls this, and prints the result
    with its thresholds."""

    if n is not None and n < 2:
        raise ConfigError(f"--n must be at least 2, got {n}")
    if image_size is not None and image_size < 1:
        raise ConfigError(f"--image-size must be a positive number of pixels, got {image_size}")
    _check_inputs(checkpoint, fake, data, ref_stats, save_stats)
    if w1_steps is not None and not w1_bound:
        raise ConfigError("--w1-steps sets the steps of --w1-bound's critic: add --w1-bound")
    if w1_bound and fake is not None and data is None:
        raise ConfigError("--w1-bound trains a critic on real against generated samples: give --data")
    if dinov2_resize != "torch-fidelity" and features != "dinov2":
        raise ConfigError(
            f"--dinov2-resize {dinov2_resize} chooses the DINOv2 space's preprocessing: add --features dinov2"
        )
    if save_stats is not None:
        check_writable(Path(save_stats), "--save-stats")  # before the features are computed
    target = resolve_device(device)
    nets = load(checkpoint, device=target) if checkpoint is not None else None
    images = (data is None and nets is None) or data_kind(data or nets.cfg.data) == "images"
    spaces = scores.choose_spaces(features, inception, vgg, target, dinov2, dinov2_resize) if images else None
    if metrics == "all":  # IS only where the main space has a classifier
        chosen = tuple(m for m in FIDELITY_METRICS if m != "is" or (spaces is not None and spaces.main.has_logits))
    else:
        chosen = metric_list(metrics)
        if spaces is not None:
            scores.check_metrics(spaces, chosen)
    ref = references.load(Path(ref_stats), spaces.main) if ref_stats is not None and spaces is not None else None
    count = n or default_n(data or (nets.cfg.data if nets is not None else None))
    judge = str(classifier) if classifier is not None else None
    own_split = nets is not None and data is None and nets.cfg.holdout is not None
    copy = None
    if holdout is not None or own_split or copies is not None or copying_features != "pixels":
        if not images:
            raise ConfigError("--holdout: the copying scores are for images")
        if copies is not None:
            check_writable(Path(copies), "--copies")
        features = _copying_space(copying_features, spaces, inception, vgg, target, dinov2, dinov2_resize)
        where = str(holdout) if holdout is not None else None
        copy = CopyingRequest(copying_features, features, where, Path(copies) if copies is not None else None)
    w1 = None
    if w1_bound:
        w1 = w1bound.Protocol(seed=seed) if w1_steps is None else w1bound.Protocol(steps=w1_steps, seed=seed)
        w1.check()
    request = Request(chosen if images else (), spaces if chosen else None, count, seed, raw, ref, judge, copy, w1)
    if save_stats is not None:
        return Evaluation(save_reference(data, Path(save_stats), request, image_size))
    if nets is not None:
        return Evaluation(evaluate_checkpoint(nets, request, data))
    return Evaluation(evaluate_files(Path(fake), data, request, image_size, device=target))


COPYING_SPACES = ("pixels", "random-conv", "inception", "dinov2", "classifier")
COPYING_DIMS = 2048  # the widest feature of a copying space's network (Inception's pool; DINOv2 ViT-g's 1536)


def _copying_space(name: str, spaces: Spaces | None, *weights: Any) -> Callable[[Tensor], Tensor] | None:
    """The copying space's features: pixels, a feature network's (the main space's own when it
    is that network), or None for the classifier's (read once the classifier is known)."""
    if name not in COPYING_SPACES:
        raise ConfigError(f"--copying-features {name!r} is not one of: {', '.join(COPYING_SPACES)}")
    if name == "pixels":
        return lambda x: x.flatten(1)
    if name == "classifier":
        return None
    if spaces is not None and spaces.main.name == name:
        return spaces.main.features
    inception, vgg, device, dinov2, resize = weights
    return scores.choose_spaces(name, inception, vgg, device, dinov2, resize).main.features


def _check_inputs(checkpoint: object, fake: object, data: str | None, ref_stats: object, save_stats: object) -> None:
    """One line for a combination of inputs that makes no measurement, before anything is read."""
    inputs = [x for x in (checkpoint, fake) if x is not None]
    if len(inputs) > 1 or (not inputs and save_stats is None):
        raise ConfigError("give a run folder or checkpoint, or --fake PATH with --data REAL (not both)")
    if fake is not None and data is None and ref_stats is None:
        raise ConfigError("--fake needs --data (the real data to score against) or --ref-stats")
    if save_stats is not None and (inputs or data is None or ref_stats is not None):
        raise ConfigError("--save-stats FILE.npz takes --data REAL alone: it writes the real images' statistics")
