"""Feature spaces for image metrics: where FID, KID, IS, precision/recall and density/coverage
measure.

- ``inception``: the Inception-v3 network of published FIDs and Inception Scores,
  torch-fidelity's port (`FeatureExtractorInceptionV3`: 2048-d pool features for FID and KID,
  its unbiased logits for IS), with weights read from a file the user gives (``--inception
  PATH`` or ``$GANCTL_INCEPTION``): nothing is downloaded. Marked standard only when the file's
  SHA-256 starts with the hash that torch-fidelity and pytorch-fid publish in its name
  (``...-2015-12-05-6726825d.pth``, torch.hub's convention); any other file is labelled
  ``inception-unverified``.
- ``vgg16``: the VGG-16 of torch-fidelity's precision/recall (`FeatureExtractorVGG16`, its
  4096-d ``fc2_relu`` features; Kynkaanniemi et al. 2019 measured precision and recall in
  VGG-16 space), from ``--vgg PATH`` or ``$GANCTL_VGG``: torchvision's ImageNet weights
  (``vgg16-397923af.pth``) are standard, any other file ``vgg16-unverified``.
- ``random-conv``: a fixed, seeded, randomly initialised convolutional network (random
  embeddings for GAN evaluation: Naeem et al. 2020). It needs no weights and runs fast on a
  CPU, but its numbers are not published FIDs and every output says so (``fid[random-conv]``).

Each space records the SHA-256 of its weights, so a result and a cached real-set statistic are
tied to the exact network that made them. Weights files are read with PyTorch's restricted
loader (tensors and plain containers only).
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ganctl.errors import ConfigError, DataError

INCEPTION_ENV = "GANCTL_INCEPTION"
INCEPTION_HASH_PREFIX = "6726825d"  # pt_inception-2015-12-05-6726825d.pth (torch-fidelity, pytorch-fid)
VGG_ENV = "GANCTL_VGG"
VGG_HASH_PREFIX = "397923af"  # vgg16-397923af.pth: torchvision's ImageNet VGG-16, torch-fidelity's prc default
RANDOM_CONV_SEED = 20_200_407  # fixed: the feature space is part of the metric's definition
RANDOM_CONV_SIZE = 64  # images are resized to this side first, so any resolution shares the space
RANDOM_CONV_WIDTHS = (16, 32, 64, 128)  # 53 MFLOP an image at 64 px
# Images a batch through each network. random-conv works at 64 px whatever the input: 32 images hold its
# first stage in 8 MB (256 held 67 MB twice over, the peak of an image run), and run faster in cache.
BATCH = {"inception": 32, "vgg16": 16, "dinov2": 32, "random-conv": 32}
EXTRAS = "pip install 'ganctl[inception]'"

Extract = Callable[[Tensor], tuple[Tensor, Tensor | None]]  # images in [-1, 1] -> (features, logits or None)


@dataclass
class FeatureSpace:
    """A feature network and its identity."""

    name: str  # "inception" | "vgg16" | "dinov2" | "random-conv"
    label: str  # in metric names: fid[label]
    standard: bool  # the published weights
    sha256: str  # of the weights
    dims: int
    extract: Extract
    device: torch.device
    source: str = ""  # the weights file
    has_logits: bool = False  # a classifier's logits come with the features (Inception: IS)
    where: str = ""  # where the weights were named: "--inception PATH" or "$GANCTL_INCEPTION=PATH"
    checked: str = ""  # what was verified of the network against the published one, in words

    def describe(self) -> dict[str, object]:
        return {
            "name": self.name,
            "label": self.label,
            "standard": self.standard,
            "sha256": self.sha256,
            "dims": self.dims,
            "source": self.source,
            "checked": self.checked,
        }

    def features(self, images: Tensor) -> Tensor:
        """Features of images in [-1, 1], in batches on the space's device; returns CPU float32."""
        return self.features_and_logits(images)[0]

    @torch.inference_mode()
    def features_and_logits(self, images: Tensor) -> tuple[Tensor, Tensor | None]:
        """Features and, for a classifier, its logits, from one pass (CPU float32)."""
        feats, logits = [], []
        for batch in images.split(BATCH[self.name]):
            f, g = self.extract(batch.to(self.device, non_blocking=True))
            if not (bool(torch.isfinite(f).all()) and (g is None or bool(torch.isfinite(g).all()))):
                raise DataError(
                    f"{self.where or self.label}: the {self.label} network gives NaN or infinite features; no score"
                    " can be read from them"
                )
            feats.append(f.float().cpu())
            if g is not None:
                logits.append(g.float().cpu())
        features = torch.cat(feats) if feats else torch.empty(0, self.dims)
        return features, (torch.cat(logits) if logits else None)


def _rgb(images: Tensor) -> Tensor:
    return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images


def _pixels(images: Tensor) -> Tensor:
    """Images in [-1, 1] as the uint8 RGB that torch-fidelity's extractors take."""
    return ((_rgb(images.float()) + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)


# --- the weight-free fallback -----------------------------------------------------------------
class RandomConv(nn.Module):
    """Four conv stages (3x3, then stride-2 4x4) with ReLU; the features are the spatial means
    of every stage, concatenated (colour and low-level statistics at four scales). He-normal
    weights from a fixed seed, zero biases."""

    def __init__(self, seed: int = RANDOM_CONV_SEED):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        layers, c = [], 3
        for i, width in enumerate(RANDOM_CONV_WIDTHS):
            conv = nn.Conv2d(c, width, 3 if i == 0 else 4, 1 if i == 0 else 2, 1)
            fan_in = conv.weight[0].numel()
            with torch.no_grad():
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5)
                conv.bias.zero_()
            layers.append(conv)
            c = width
        self.stages = nn.ModuleList(layers)
        self.requires_grad_(False).eval()

    def forward(self, images: Tensor) -> Tensor:
        x = _rgb(images.float())
        if x.shape[-1] != RANDOM_CONV_SIZE or x.shape[-2] != RANDOM_CONV_SIZE:
            down = x.shape[-1] > RANDOM_CONV_SIZE
            x = F.interpolate(
                x, size=(RANDOM_CONV_SIZE, RANDOM_CONV_SIZE), mode="bilinear", align_corners=False, antialias=down
            )
        pooled = []
        for conv in self.stages:
            x = F.relu(conv(x))
            pooled.append(x.mean(dim=(2, 3)))
        return torch.cat(pooled, dim=1)


def state_sha256(module: nn.Module) -> str:
    """A SHA-256 of a module's tensors (names, shapes, dtypes and bytes), in state-dict order."""
    h = hashlib.sha256()
    for name, t in module.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def random_conv(device: torch.device | str = "cpu") -> FeatureSpace:
    net = RandomConv()
    sha = state_sha256(net)
    net = net.to(device)
    return FeatureSpace(
        "random-conv",
        "random-conv",
        False,
        sha,
        sum(RANDOM_CONV_WIDTHS),
        lambda x: (net(x), None),
        torch.device(device),
        checked="a network drawn from a fixed seed: nothing published to check it against",
    )


# --- weights from files -------------------------------------------------------------------------
def weights_path(path: str | Path | None, env: str = INCEPTION_ENV) -> Path | None:
    """The flag's file, else the environment variable's, else None."""
    chosen = path or os.environ.get(env)
    return Path(chosen).expanduser() if chosen else None


def weights_where(path: str | Path | None, env: str, flag: str) -> str:
    """How a message names the weights file: as the flag that gave it, or as the environment
    variable that did (`$GANCTL_DINOV2=/models/w.pth`), so the user knows which to change."""
    return f"{flag} {path}" if path else f"${env}={os.environ.get(env, '')}"


def inception_path(path: str | Path | None) -> Path | None:
    """--inception, else $GANCTL_INCEPTION, else None (the fallback)."""
    return weights_path(path, INCEPTION_ENV)


def read_state_dict(path: Path, where: str) -> tuple[dict[str, Tensor], str]:
    """A state dict from a torch file, with PyTorch's restricted loader (tensors and plain
    containers only: nothing else is unpickled), and the file's SHA-256. `where` names the file
    in messages ("--inception PATH"). Weights holding a NaN or infinity are refused at once."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{where}: no such file") from None
    except OSError as exc:
        raise DataError(f"{where}: cannot read ({exc.strerror or exc})") from None
    sha = hashlib.sha256(data).hexdigest()
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a truncated zip, a foreign pickle, ... all mean one thing here
        if "Unsupported global" in str(exc):  # the restricted loader met a class: torch's advice is not ours to give
            raise DataError(
                f"{where}: holds Python objects besides tensors (a pickled model or class), which ganctl never"
                " unpickles; give a file of the state dict alone (torch.save(model.state_dict(), FILE))"
            ) from None
        if type(exc).__name__ == "UnpicklingError":  # its message is torch's advice about the loader, not the file
            raise DataError(f"{where}: not a readable PyTorch weights file (damaged, or of another kind)") from None
        why = f"{type(exc).__name__}: {_first_line(exc)}"
        raise DataError(f"{where}: not a readable PyTorch weights file ({why})") from None
    if not isinstance(state, dict) or not state or not all(torch.is_tensor(v) for v in state.values()):
        raise DataError(f"{where}: holds no state dict of tensors")
    bad = next((k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())), None)
    if bad is not None:
        raise DataError(f"{where}: tensor {bad!r} holds NaN or infinite values; the network cannot be used")
    return state, sha


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


_SIZE_MISMATCH = re.compile(
    r"size mismatch for ([^:]+): copying a param with shape torch\.Size\((\[[^\]]*\])\) from checkpoint,"
    r" the shape in current model is torch\.Size\((\[[^\]]*\])\)"
)


def mismatch(exc: BaseException) -> str:
    """What torch's load_state_dict error says, on one line: how many keys are missing and
    unexpected (the first of each) and the first tensor of another shape. Its own message
    puts all of that after a colon and a line break, which a one-line report would cut."""
    text = str(exc)
    parts = []
    for kind in ("Missing", "Unexpected"):
        found = re.search(kind + r' key\(s\) in state_dict: ((?:"[^"]*"(?:, )?)+)', text)
        if found:
            keys = re.findall(r'"([^"]*)"', found.group(1))
            parts.append(f"{len(keys)} {kind.lower()} key{'s' * (len(keys) != 1)} (first: {keys[0]})")
    sizes = _SIZE_MISMATCH.findall(text)
    if sizes:
        name, file_shape, model_shape = sizes[0]
        more = f" and {len(sizes) - 1} more" if len(sizes) > 1 else ""
        parts.append(f"{name} is {file_shape} in the file but {model_shape} in the network{more}")
    return "; ".join(parts) if parts else " ".join(str(exc).split())[:300]


def _resaved(state: dict[str, Tensor]) -> io.BytesIO:
    """The accepted tensors, saved again: torch-fidelity reads weights with the full unpickler,
    so it gets a file made here from what the restricted loader let through."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return buffer


def inception(path: Path, device: torch.device | str = "cpu", where: str | None = None) -> FeatureSpace:
    """torch-fidelity's Inception-v3 with the weights of `path` (the `inception` extra): pool
    features and unbiased logits from one pass. `where` names the file in messages."""
    where = where or f"--inception {path}"
    try:
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    except ImportError:
        raise ConfigError(f"{where}: the Inception-v3 feature space needs torch-fidelity; {EXTRAS}") from None
    state, sha = read_state_dict(path, where)
    try:
        net = FeatureExtractorInceptionV3(
            "ganctl-inception-v3", ["2048", "logits_unbiased"], feature_extractor_weights_path=_resaved(state)
        )
    except (RuntimeError, KeyError, ValueError) as exc:
        raise DataError(f"{where}: not Inception-v3 weights in torch-fidelity's layout ({mismatch(exc)})") from None
    net = net.to(device)

    def extract(images: Tensor) -> tuple[Tensor, Tensor | None]:
        pool, logits = net(_pixels(images))
        return pool, logits

    standard = sha.startswith(INCEPTION_HASH_PREFIX)
    label = "inception" if standard else "inception-unverified"
    return FeatureSpace(
        "inception",
        label,
        standard,
        sha,
        2048,
        extract,
        torch.device(device),
        str(path),
        True,
        where,
        _hashed(standard, INCEPTION_HASH_PREFIX, sha),
    )


def vgg16(path: Path, device: torch.device | str = "cpu", where: str | None = None) -> FeatureSpace:
    """torch-fidelity's VGG-16 of precision/recall (fc2 after its ReLU, 4096-d) with the weights
    of `path`: torchvision's layout (the `inception` extra brings torch-fidelity and torchvision)."""
    where = where or f"--vgg {path}"
    try:
        from torch_fidelity.feature_extractor_vgg16 import FeatureExtractorVGG16
    except ImportError:
        raise ConfigError(f"{where}: the VGG-16 feature space needs torch-fidelity; {EXTRAS}") from None
    state, sha = read_state_dict(path, where)
    try:
        net = FeatureExtractorVGG16("ganctl-vgg16", ["fc2_relu"], feature_extractor_weights_path=_resaved(state))
    except (RuntimeError, KeyError, ValueError) as exc:
        raise DataError(f"{where}: not VGG-16 weights in torchvision's layout ({mismatch(exc)})") from None
    net = net.to(device)

    def extract(images: Tensor) -> tuple[Tensor, Tensor | None]:
        return net(_pixels(images))[0], None

    standard = sha.startswith(VGG_HASH_PREFIX)
    label = "vgg16" if standard else "vgg16-unverified"
    checked = _hashed(standard, VGG_HASH_PREFIX, sha)
    return FeatureSpace(
        "vgg16", label, standard, sha, 4096, extract, torch.device(device), str(path), False, where, checked
    )


def _hashed(standard: bool, prefix: str, sha: str) -> str:
    """What a hash check of a weights file verified, in words."""
    if standard:
        return f"the weights file's sha256 starts with {prefix}, as the published file's name says"
    return f"the weights file's sha256 ({sha[:16]}...) is not the published file's ({prefix}...)"


# --- networks with none of their weights, for tests and timings --------------------------------
def he_normal_(state: dict[str, Tensor], seed: int) -> dict[str, Tensor]:
    """Every convolution and linear weight of a state dict redrawn He-normal (std sqrt(2 /
    fan_in)) from `seed`, biases zeroed: a deep network initialised by default shrinks its
    activations towards 0 over its layers (Inception-v3 has about 90), so that every metric of
    two image sets through it reads about 0 and proves nothing. Batch norms keep their
    identity statistics."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, t in state.items():
        if name.endswith("weight") and t.dim() in (2, 4):
            fan_in = math.prod(t.shape[1:])
            t = torch.randn(t.shape, generator=g) * math.sqrt(2.0 / fan_in)
        elif name.endswith("bias") and not name.endswith(("bn.bias", "norm.bias")) and t.dim() == 1:
            t = torch.zeros_like(t)
        out[name] = t
    return out


def random_inception_state(seed: int = 0) -> dict[str, Tensor]:
    """A He-normal Inception-v3 state dict in torch-fidelity's layout: the network of published
    FIDs with none of its weights, for tests and timings where the real file cannot be had (the
    arithmetic, and so the time, is the same; the features are alive, see `he_normal_`)."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3  # the inception extra

    class Unloaded(FeatureExtractorInceptionV3):
        def load_state_dict(self, *args: object, **kwargs: object) -> None:  # keep the initialisation
            return None

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        state = Unloaded("unloaded", ["2048"], feature_extractor_weights_path=_resaved({})).state_dict()
    return he_normal_(state, seed)


def random_vgg16_state(seed: int = 0) -> dict[str, Tensor]:
    """A He-normal VGG-16 state dict in torchvision's layout (for tests and timings)."""
    import torchvision  # the inception extra brings it

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        state = torchvision.models.vgg16().state_dict()
    return he_normal_(state, seed)


def feature_space(inception_weights: str | Path | None = None, device: torch.device | str = "cpu") -> FeatureSpace:
    """Inception-v3 when a weights file is given (flag or environment), else random-conv."""
    path = inception_path(inception_weights)
    where = weights_where(inception_weights, INCEPTION_ENV, "--inception")
    return inception(path, device, where) if path is not None else random_conv(device)
