"""Scores grounded in the user's own labelled data: a classifier trained on the real data (or the
user's TorchScript one) judges generated samples.

- classes covered, the confident share and the KL divergence of the generated class histogram
  from the real one: a sample is *confident* when its most likely class has probability >= 0.9,
  and a class is covered when at least a fifth of the n / K samples it would get from a
  generator spreading them evenly are confidently of it (benchmarks/real_digits.py's SVM judge,
  in its code; PacGAN's mode count);
- GAN-test (Shmelkov et al. 2018), for a conditional generator: the accuracy of the classifier
  on samples drawn for each class;
- GAN-train (Shmelkov et al. 2018), for a conditional generator: the held-out real accuracy of a
  classifier of the same kind trained on generated samples and their labels;
- FID, KID and precision/recall in the classifier's penultimate feature space, named with its
  weights' hash (`fid[classifier-1a2b3c4d]`).

Every number comes with the held-out real data's own (its ceiling). `auto` trains a small
network on 90 % of the real data (seeded, and cached by the data's fingerprint beside the image
cache); the other 10 % is held out.
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from torch.nn import functional as F

from ganctl import cache, progress
from ganctl.data import DataSource
from ganctl.errors import DataError
from ganctl.fileio import atomic_path
from ganctl.quality import fidelity

CONFIDENT = 0.9  # benchmarks/real_digits.py's judge
COVERED_SHARE = 0.2  # of a class's even share of all n samples, n / K (PacGAN's rule, the judge's)
HELD_OUT = 0.1
MAX_TRAIN = 20_000  # samples an infinite source is drawn for training (and a tenth of it held out)
EPOCHS = 5
MIN_STEPS = 500
BATCH = 128
LR = 1e-3
FORMAT = "ganctl.classifier/2"  # /2: with the detector of images of no class


class SmallNet(nn.Module):
    """Three 3x3 conv stages (32, 64, 128 channels; max-pooled twice, then averaged) for images,
    or a 64-64 MLP for points; `features` is the penultimate layer, `forward` the logits."""

    def __init__(self, shape: tuple[int, ...], classes: int):
        super().__init__()
        if len(shape) == 1:
            self.body: nn.Module = nn.Sequential(nn.Linear(shape[0], 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU())
            width = 64
        else:
            c = shape[0]
            self.body = nn.Sequential(
                nn.Conv2d(c, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            )  # fmt: skip
            width = 128
        self.head = nn.Linear(width, classes)

    def features(self, x: Tensor) -> Tensor:
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x))


@dataclass
class Classifier:
    """A trained classifier and what it is known by: its weights' hash, its classes, and its
    accuracy on the held-out real data."""

    net: nn.Module
    sha256: str
    classes: int
    held_out: tuple[Tensor, Tensor]  # real samples and labels it never trained on
    source: str  # "auto" or the TorchScript file
    detector: nn.Module | None = None  # images of the data (0) against images of no class (1): `auto`'s

    @property
    def reject(self) -> bool:
        """Whether it tells images of no class apart (its class probabilities then sum to P(of the data))."""
        return self.detector is not None

    @property
    def label(self) -> str:
        return f"classifier-{self.sha256[:8]}"

    @property
    def where(self) -> str:
        return "--classifier auto" if self.source == "auto" else f"--classifier {self.source}"

    @torch.no_grad()
    def predict(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(probabilities, penultimate features) in batches, on the CPU. With a detector, each class's
        probability is P(of the data) x P(class | of the data): they sum to the detector's
        P(of the data), below 1 for an image of no class. A classifier that fails
        on the data's shape, gives other than (n, classes) logits, features of no dimension, or
        a NaN or infinity is refused in one line naming it."""
        probs, feats = [], []
        self.net.eval()
        has_features = hasattr(self.net, "features")
        for batch in x.split(512):
            try:
                f = self.net.features(batch) if has_features else None
                logits = self.net.head(f) if isinstance(self.net, SmallNet) else self.net(batch)
            except (RuntimeError, ValueError, TypeError, IndexError) as exc:  # TorchScript's errors are RuntimeErrors
                raise DataError(
                    f"{self.where}: fails on the data's samples (a batch of shape {tuple(batch.shape)}, values in"
                    f" [-1, 1]): {cause(exc)}"
                ) from None
            self._check(batch, logits, f)
            p = logits.float().softmax(dim=1)
            if self.detector is not None:
                p = p * self.detector(batch).float().softmax(dim=1)[:, :1]
            probs.append(p.cpu())
            feats.append((f if f is not None else logits).float().flatten(1).cpu())
        return torch.cat(probs), torch.cat(feats)

    def _check(self, batch: Tensor, logits: Tensor, features: Tensor | None) -> None:
        n = len(batch)
        if logits.dim() != 2 or tuple(logits.shape) != (n, self.classes):
            raise DataError(
                f"{self.where}: gives outputs of shape {tuple(logits.shape)} for {n} samples, not logits over the"
                f" data's {self.classes} classes ({n}, {self.classes})"
            )
        if features is not None and (features.dim() < 2 or len(features) != n or features[0].numel() == 0):
            raise DataError(
                f"{self.where}: its features() gives shape {tuple(features.shape)} for {n} samples; FID, KID and"
                " precision/recall need at least one feature per sample"
            )
        for what, t in (("logits", logits), ("features", features)):
            if t is not None and not bool(torch.isfinite(t).all()):
                raise DataError(
                    f"{self.where}: gives NaN or infinite {what} on the data's samples; no score can be read from"
                    " them (are its weights finite?)"
                )


def cause(exc: BaseException) -> str:
    """The line of an exception that says what went wrong: a TorchScript error's last
    'XError: ...' line (its first is 'The following operation failed ...'), else its first."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    named = [line for line in lines if line.split(":", 1)[0].endswith(("Error", "Exception"))]
    text = named[-1] if named else (lines[0] if lines else type(exc).__name__)
    return text[:200]


class Verdicts:
    """A classifier's reading of samples, gathered chunk by chunk so that the samples need not
    be held: class probabilities and features, or, for stacks, each one's mode, whether its
    three channels were all confident, and their features side by side. The samples themselves
    are kept only with `keep` (GAN-train learns from them)."""

    def __init__(self, clf: Classifier, stacked: bool = False, keep: bool = False):
        self.clf, self.stacked, self.keep = clf, stacked, keep
        self._parts: list[tuple[Tensor, ...]] = []
        self._samples: list[Tensor] = []

    def add(self, x: Tensor) -> None:
        x = x.cpu()
        self._parts.append(stack_modes(self.clf, x) if self.stacked else self.clf.predict(x))
        if self.keep:
            self._samples.append(x)

    @classmethod
    def of(cls, clf: Classifier, x: Tensor, stacked: bool = False, keep: bool = False) -> Verdicts:
        found = cls(clf, stacked, keep)
        for part in x.split(PREDICT_CHUNK):
            found.add(part)
        return found

    def columns(self) -> tuple[Tensor, ...]:
        """(probabilities, features), or for stacks (modes, all confident, features)."""
        return tuple(torch.cat(column) for column in zip(*self._parts))

    def samples(self) -> Tensor:
        return torch.cat(self._samples)


PREDICT_CHUNK = 2000  # samples a chunk when a held set is read in parts


# --- the real data, split ----------------------------------------------------------------------
def labelled(dataset: DataSource, seed: int) -> tuple[Tensor, Tensor]:
    """Every real sample and its label (a finite set), or MAX_TRAIN drawn ones (a source drawn
    fresh), in a fixed shuffled order."""
    if dataset.classes is None:
        raise DataError(f"--classifier: --data {dataset.name} has no class labels to train a classifier on")
    if dataset.classes.count < 2:
        raise DataError(
            f"--classifier: --data {dataset.name} has one class ({dataset.classes.names[0]}); a classifier judges"
            " which class a sample is, so it needs at least two (one sub-folder per class, or an .npz's labels)"
        )
    g = torch.Generator().manual_seed(seed)
    if dataset.length is None:
        return dataset.sample_labelled(MAX_TRAIN, g, "cpu")
    parts = [
        (torch.cat(list(dataset.class_chunks(k, dataset.length, g, 1000))), k) for k in range(dataset.classes.count)
    ]
    x = torch.cat([images for images, _ in parts])
    y = torch.cat([torch.full((len(images),), k, dtype=torch.long) for images, k in parts])
    order = torch.randperm(len(x), generator=g)
    return x[order], y[order]


def split(x: Tensor, y: Tensor) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    held = max(1, int(round(HELD_OUT * len(x))))
    return (x[held:], y[held:]), (x[:held], y[:held])


# --- training ----------------------------------------------------------------------------------
def not_images(x: Tensor, g: torch.Generator) -> Tensor:
    """Images of no class, made from a batch of real ones (in [-1, 1]), a sixth of each kind:
    uniform noise, Gaussian noise, flat images of one random value per channel, each image's
    pixels shuffled (its histogram kept, its shape lost), its 4 x 4 blocks shuffled (strokes
    kept, their arrangement lost), and the mean of four of them (the ghost of several images, as
    a generator that averages modes draws)."""
    n, c, h, w = x.shape
    kind = torch.arange(n) % 6
    out = torch.rand(x.shape, generator=g) * 2 - 1
    gauss = (torch.randn(x.shape, generator=g) * 0.5).clamp(-1, 1)
    flat = (torch.rand(n, c, 1, 1, generator=g) * 2 - 1).expand_as(x)
    order = torch.argsort(torch.rand(n, h * w, generator=g), dim=1)
    shuffled = x.flatten(2).gather(2, order[:, None, :].expand(n, c, h * w)).view_as(x)
    blocks = _shuffle_blocks(x, 4, g)
    blend = x[torch.randint(n, (4, n), generator=g)].mean(dim=0)
    for k, made in enumerate((gauss, flat, shuffled, blocks, blend), start=1):
        out = torch.where((kind == k)[:, None, None, None], made, out)
    return out


def _shuffle_blocks(x: Tensor, side: int, g: torch.Generator) -> Tensor:
    n, c, h, w = x.shape
    if h % side or w % side:
        return x.flip(-1).flip(-2)
    rows, cols = h // side, w // side
    tiles = x.view(n, c, rows, side, cols, side).permute(0, 2, 4, 1, 3, 5).reshape(n, rows * cols, c, side, side)
    order = torch.argsort(torch.rand(n, rows * cols, generator=g), dim=1)
    tiles = tiles.gather(1, order[:, :, None, None, None].expand_as(tiles))
    return tiles.view(n, rows, cols, c, side, side).permute(0, 3, 1, 4, 2, 5).reshape(n, c, h, w)


def fit(
    x: Tensor, y: Tensor, classes: int, seed: int, what: str = "training the classifier", made_up: bool = False
) -> SmallNet:
    """A SmallNet trained with Adam (lr 1e-3, batch 128) for EPOCHS passes over the data, and at
    least MIN_STEPS steps (a few hundred images are passed over many more times), from `seed`;
    each step is reported as `what` (`ganctl.progress`). With `made_up` (images), each batch is
    joined by as many made-up images of no class (`not_images`), labelled `classes`, which the
    net then has as one more class (the detector: `classes` 1, the data's images against
    them)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = SmallNet(tuple(x.shape[1:]), classes + int(made_up))
    opt = torch.optim.Adam(net.parameters(), lr=LR)
    g = torch.Generator().manual_seed(seed)
    steps = max(EPOCHS * math.ceil(len(x) / BATCH), MIN_STEPS) if not made_up else DETECTOR_STEPS
    batches = iter(())
    net.train()
    progress.report(what, 0, steps)
    for step in range(steps):
        idx = next(batches, None)
        if idx is None:  # a new pass, in a new order
            batches = iter(torch.randperm(len(x), generator=g).split(BATCH))
            idx = next(batches)
        opt.zero_grad(set_to_none=True)
        batch, labels = x[idx], y[idx]
        if made_up:
            made = not_images(batch, g)
            batch = torch.cat([batch, made])
            labels = torch.cat([labels, torch.full((len(made),), classes, dtype=labels.dtype)])
        F.cross_entropy(net(batch), labels).backward()
        opt.step()
        progress.report(what, step + 1, steps)
    return net.eval()


def _state_sha(*nets: nn.Module | None) -> str:
    """One hash of the networks' weights (a network left out, None, adds nothing)."""
    h = hashlib.sha256()
    for net in nets:
        for name, t in (net.state_dict() if net is not None else {}).items():
            h.update(name.encode())
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def auto(dataset: DataSource, seed: int = 0) -> Classifier:
    """The classifier `--classifier auto` means: trained on 90 % of the real data, read back from
    the cache when the same data (by fingerprint) was classified before with the same seed."""
    x, y = labelled(dataset, seed)
    train, held = split(x, y)
    classes = dataset.classes.count
    steps = f"{EPOCHS}|{MIN_STEPS}|{DETECTOR_STEPS}"  # how long each network trains: a change retrains both
    key = f"{FORMAT}|{dataset.fingerprint()}|{seed}|{steps}|{tuple(x.shape[1:])}|{classes}"
    path = cache.path("classifier", key)
    try:
        state = load_file(str(path))
        if not all(bool(torch.isfinite(t).all()) for t in state.values()):
            raise ValueError("a cached classifier holding NaN")
        net = _from_state(state, "net.", tuple(x.shape[1:]))
        detector = _from_state(state, "detector.", tuple(x.shape[1:])) if "detector.head.weight" in state else None
    except (OSError, RuntimeError, ValueError, KeyError, SafetensorError):  # none yet, or damaged: trained again
        net = fit(*train, classes, seed)
        detector = _detector(train[0], held[0], seed) if x.dim() == 4 else None
        nets = {"net.": net, **({"detector.": detector} if detector is not None else {})}
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp:
                state = {p + k: v.contiguous() for p, m in nets.items() for k, v in m.state_dict().items()}
                save_file(state, str(tmp), metadata={"format": FORMAT, "key": json.dumps(key)})
        except OSError:
            pass  # the cache is an optimisation
    detector = detector.eval() if detector is not None else None
    return Classifier(net.eval(), _state_sha(net, detector), classes, held, "auto", detector)


def _from_state(state: dict[str, Tensor], prefix: str, shape: tuple[int, ...]) -> SmallNet:
    mine = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    net = SmallNet(shape, int(mine["head.weight"].shape[0]))
    net.load_state_dict(mine)
    return net


DETECTOR_STEPS = 300  # the detector's task is easy: a fixed number of steps, whatever the data's size
REJECT_LIMIT = 0.02  # the held-out real images' mean P(no class) above which the detector is dropped


def _detector(x: Tensor, held: Tensor, seed: int) -> SmallNet | None:
    """A SmallNet telling the data's images (0) from made-up images of no class (1: noise, blank,
    shuffled, blended; `not_images`), trained on every batch beside as many made-up ones: the
    idea of Hendrycks et al. 2019's outlier exposure, with a separate binary network and made-up
    outliers where they train the classifier itself towards a uniform posterior on an auxiliary
    set of real ones. None where it gives the held-out real images a mean P(no class) above
    REJECT_LIMIT (data whose images are textures, like their own shuffled pixels, overlap the
    made-up ones and would be refused)."""
    net = fit(x, torch.zeros(len(x), dtype=torch.long), 1, seed + 1, "training the detector of no class", True)
    with torch.no_grad():
        p_none = torch.cat([net(part).softmax(dim=1)[:, 1] for part in held.split(512)])
    return net.eval() if float(p_none.double().mean()) <= REJECT_LIMIT else None


def from_file(path: Path, dataset: DataSource, seed: int = 0) -> Classifier:
    """A user's TorchScript classifier: images in [-1, 1] (N, C, H, W), or points, to logits over
    the data's classes; its `features` method, when it has one, is its feature space. It is
    tried on the held-out real samples before anything else is measured."""
    where = f"--classifier {path}"
    try:
        data = Path(path).read_bytes()
        with warnings.catch_warnings():  # torch.jit.load's deprecation notice: nothing a ganctl user can act on
            warnings.simplefilter("ignore", FutureWarning)
            net = torch.jit.load(str(path), map_location="cpu")
    except FileNotFoundError:
        raise DataError(f"{where}: no such file") from None
    except (OSError, RuntimeError, ValueError) as exc:
        raise DataError(f"{where}: not a TorchScript module ({cause(exc)[:120]})") from None
    x, y = labelled(dataset, seed)
    _, held = split(x, y)
    found = Classifier(net.eval(), hashlib.sha256(data).hexdigest(), dataset.classes.count, held, str(path))
    found.predict(held[0])  # refused here, in one line, if it cannot judge the real data
    return found


# --- the scores --------------------------------------------------------------------------------
def histogram_scores(probs: Tensor, prior: Tensor) -> dict[str, float]:
    """Classes covered, the confident share, and KL(generated histogram || `prior`), the real
    class frequencies (the histogram counts every sample by its most likely class)."""
    top, cls = probs.max(dim=1)
    k = probs.shape[1]
    confident = top >= CONFIDENT
    rejected = probs.sum(dim=1) < 0.5  # a detector's P(of the data) (the probabilities' sum) below a half
    counts = torch.bincount(cls[confident], minlength=k).double()
    covered = int((counts >= max(1.0, COVERED_SHARE * len(probs) / k)).sum())
    hist = torch.bincount(cls, minlength=k).double() / len(cls)
    nonzero = hist > 0
    kl = float((hist[nonzero] * (hist[nonzero] / prior.double()[nonzero]).log()).sum())
    found = {"classes_covered": covered, "confident_share": float(confident.double().mean()), "class_kl": kl}
    return {**found, "rejected_share": float(rejected.double().mean())}


def score(
    clf: Classifier, fake: Tensor | Verdicts, labels: Tensor | None, metrics: tuple[str, ...], seed: int = 0
) -> dict[str, Any]:
    """Every classifier score of generated `fake` (the samples, or the classifier's `Verdicts` of
    them, kept with the samples when `labels` is given) and, for a conditional generator, the
    labels they were drawn for; each beside the held-out real data's own value."""

    seen = fake if isinstance(fake, Verdicts) else Verdicts.of(clf, fake, keep=labels is not None)
    real, real_y = clf.held_out
    prior = torch.bincount(real_y, minlength=clf.classes).double().clamp_min(0.5) / len(real_y)
    p_fake, f_fake = seen.columns()
    p_real, f_real = clf.predict(real)
    ours, ceiling = histogram_scores(p_fake, prior), histogram_scores(p_real, prior)
    ceiling["accuracy"] = float((p_real.argmax(1) == real_y).double().mean())
    if labels is not None:
        ours["gan_test"] = float((p_fake.argmax(1) == labels.cpu()).double().mean())
        trained = fit(seen.samples(), labels.cpu(), clf.classes, seed, "training GAN-train's classifier on the samples")
        with torch.no_grad():
            ours["gan_train"] = float((trained(real).argmax(1) == real_y).double().mean())
        ceiling["gan_test"] = ceiling["gan_train"] = ceiling["accuracy"]
    space = {f"{name}[{clf.label}]": value for name, value in fidelity.compute(f_real, f_fake, metrics, seed).items()}
    named = {f"{k}[{clf.label}]": v for k, v in ours.items()}
    return {
        "metrics": {**named, **space},
        "ceiling": {f"{k}[{clf.label}]": v for k, v in ceiling.items()},
        "classifier": {
            "label": clf.label,
            "sha256": clf.sha256,
            "source": clf.source,
            "held_out": len(real),
            "reject": clf.reject,
        },
        "not_measured": [] if labels is not None else ["gan_test and gan_train need a conditional generator"],
    }


# --- stacked data: a mode per channel triple (VEEGAN, PacGAN) -------------------------------------
STACKED_N = 26_000  # PacGAN's config.py: num_test_sample


def mode_scores(modes: Tensor, total: int) -> dict[str, float]:
    """PacGAN's numbers (its model.py, `log_metrics`): the modes that at least one sample falls in,
    and KL(generated mode histogram || uniform over all `total` modes), in nats."""
    p = torch.bincount(modes, minlength=total).double()
    p = p / p.sum()
    hit = p > 0
    return {"modes_covered": int(hit.sum()), "modes_kl": float((p[hit] * (p[hit] * total).log()).sum())}


def stack_modes(clf: Classifier, stacks: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Each stack's mode (k0 K^2 + k1 K + k2, each channel's most likely class, as PacGAN's
    argmax), whether all three channels are confident, and the channels' features side by side."""
    k = clf.classes
    modes = torch.zeros(len(stacks), dtype=torch.long)
    confident = torch.ones(len(stacks), dtype=torch.bool)
    feats = []
    for c in range(stacks.shape[1]):
        probs, f = clf.predict(stacks[:, c : c + 1])
        top, cls = probs.max(dim=1)
        modes = modes * k + cls
        confident &= top >= CONFIDENT
        feats.append(f)
    return modes, confident, torch.cat(feats, dim=1)


def held_out_stacks(clf: Classifier, n: int, seed: int) -> tuple[Verdicts, Tensor]:
    """The classifier's verdicts on n stacks of its held-out grey images (three drawn
    independently, as the data's own stacks are drawn), read a chunk at a time, and their true
    modes: the ceiling is measured on images it never saw."""
    x, y = clf.held_out
    idx = torch.randint(len(x), (n, 3), generator=torch.Generator().manual_seed(seed))
    k = clf.classes
    seen = Verdicts(clf, stacked=True)
    for part in idx.split(PREDICT_CHUNK):
        seen.add(x[part, 0])
    return seen, (y[idx[:, 0]] * k + y[idx[:, 1]]) * k + y[idx[:, 2]]


def stacked_score(clf: Classifier, fake: Tensor | Verdicts, metrics: tuple[str, ...], seed: int = 0) -> dict[str, Any]:
    """The modes covered and KL to uniform of generated stacks (or the classifier's `Verdicts` of
    them), as PacGAN counts them, the share whose three channels are all confident, and
    FID/KID/precision-recall on the three channels' features side by side; each beside the
    held-out real stacks' own values."""

    total = clf.classes**3
    seen = fake if isinstance(fake, Verdicts) else Verdicts.of(clf, fake, stacked=True)
    fake_modes, fake_confident, f_fake = seen.columns()
    real, real_modes = held_out_stacks(clf, len(fake_modes), seed)
    guessed, real_confident, f_real = real.columns()
    ours = {**mode_scores(fake_modes, total), "confident_share": float(fake_confident.double().mean())}
    ceiling = {**mode_scores(guessed, total), "confident_share": float(real_confident.double().mean())}
    ceiling["accuracy"] = float((guessed == real_modes).double().mean())
    space = {f"{name}[{clf.label}]": value for name, value in fidelity.compute(f_real, f_fake, metrics, seed).items()}
    return {
        "metrics": {**{f"{k}[{clf.label}]": v for k, v in ours.items()}, **space},
        "ceiling": {f"{k}[{clf.label}]": v for k, v in ceiling.items()},
        "classifier": {
            "label": clf.label,
            "sha256": clf.sha256,
            "source": clf.source,
            "held_out": len(clf.held_out[0]),
            "stacks": len(real_modes),
            "per_channel_classes": clf.classes,
            "modes": total,
        },
        "not_measured": ["classes covered, class KL, GAN-test and GAN-train: the modes are counted per channel"],
    }
