"""Image data held in memory: `ImageSet`, uint8 images (N, C, H, W) kept on the training device
when they fit, from a folder (`ganctl.data.folders`), an array file (`ganctl.data.arrays`) or
CIFAR-10 (`ganctl.data.cifar`); and `to_images`, which brings pixels to the size and channels a
run asks for."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import Tensor
from torch.nn import functional as F

from ganctl import memory
from ganctl.data.source import Classes, Judge, Mixture, unlabelled
from ganctl.errors import DataError

MAX_DEVICE_SHARE = 0.25  # keep the data on a GPU when it takes at most this share of its memory


@dataclass
class ImageSet:
    """uint8 images (N, C, H, W) held in memory (a `DataSource` of finite length); batches are
    floats in [-1, 1], optionally flipped. `native_size` is the images' own (H, W) when they
    all shared one, and `resampled` whether any was resized to get here."""

    name: str
    images: Tensor
    hflip: bool = False
    skipped: tuple[str, ...] = ()  # files that could not be decoded
    cache: str | None = None
    native_size: tuple[int, int] | None = None
    resampled: bool = False
    targets: Tensor | None = field(default=None, repr=False)  # (N,) int64 labels, where the source has classes
    classes: Classes | None = None
    kind: str = "images"
    mixture: Mixture | None = None
    judge: Judge | None = None
    _fingerprint: str | None = field(default=None, repr=False)
    # With --holdout: the images set aside (never trained on) and their indices in the whole set.
    held_out: ImageSet | None = field(default=None, repr=False)
    held_indices: tuple[int, ...] = field(default=(), repr=False)
    whole_fingerprint: str | None = field(default=None, repr=False)

    def split_off(self, indices: list[int]) -> ImageSet:
        """This set less the images at `indices`, which become its `held_out` set (each side
        with its labels; fingerprints of their own)."""
        mask = torch.ones(len(self.images), dtype=torch.bool)
        mask[torch.tensor(indices, dtype=torch.long)] = False

        def part(keep: Tensor) -> ImageSet:
            where = keep.to(self.images.device)
            targets = self.targets[keep.to(self.targets.device)] if self.targets is not None else None
            return dataclasses.replace(self, images=self.images[where], targets=targets, _fingerprint=None)

        held = part(~mask)
        return dataclasses.replace(
            part(mask), held_out=held, held_indices=tuple(indices), whole_fingerprint=self.fingerprint()
        )

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.images.shape[1:])

    @property
    def length(self) -> int | None:
        return len(self.images)

    def __len__(self) -> int:
        return len(self.images)

    def fingerprint(self) -> str:
        """A SHA-256 of the decoded pixels (shape and bytes): the identity of this real set, for
        cached statistics. Computed once."""
        if self._fingerprint is None:
            pixels = self.images.detach().cpu().contiguous()
            h = hashlib.sha256(f"{tuple(pixels.shape)}".encode())
            h.update(pixels.numpy().tobytes())
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def chunks(self, n: int, generator: torch.Generator, size: int) -> Iterator[Tensor]:
        """n images in [-1, 1] (no flips), in chunks of `size`: all of them in order when n is at
        least the set's size, else a random subset drawn with `generator` (CPU)."""
        idx = torch.arange(len(self)) if n >= len(self) else torch.randperm(len(self), generator=generator)[:n]
        for part in idx.split(size):
            yield self.images[part.to(self.images.device)].float().div_(127.5).sub_(1.0)

    @property
    def description(self) -> str:
        n, c, h, w = self.images.shape
        return f"{n} images, {c} x {h} x {w}, from {self.name}"

    def to(self, device: torch.device) -> ImageSet:
        """Move the images to `device` when they fit comfortably; otherwise keep them on the
        CPU (pinned on CUDA) and move each batch."""
        if device.type == "cuda":
            free, total = torch.cuda.mem_get_info(device)
            if self.images.numel() > MAX_DEVICE_SHARE * total:
                self.images = self.images.pin_memory()
                return self
        if device.type != "cpu":
            self.images = self.images.to(device)
        return self

    def sample(self, n: int, generator: torch.Generator, device: torch.device | str) -> Tensor:
        device = torch.device(device)
        return self._batch(torch.randint(len(self.images), (n,), generator=generator, device=device), generator)

    def _batch(self, idx: Tensor, generator: torch.Generator) -> Tensor:
        """Images idx in [-1, 1] on idx's device, flipped at random with --hflip."""
        device = idx.device
        batch = self.images[idx.to(self.images.device)].to(device, non_blocking=True)
        x = batch.float().div_(127.5).sub_(1.0)
        if self.hflip:
            flip = torch.rand(len(idx), generator=generator, device=device) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        return x

    def _labels(self) -> Tensor:
        if self.targets is None:
            raise unlabelled(self)
        return self.targets

    def labels_of(self, idx: Tensor) -> Tensor:
        return self._labels().to(idx.device)[idx]

    def sample_labelled(self, n: int, generator: torch.Generator, device: torch.device | str) -> tuple[Tensor, Tensor]:
        idx = torch.randint(len(self.images), (n,), generator=generator, device=torch.device(device))
        return self._batch(idx, generator), self.labels_of(idx)

    def labels(self, n: int, generator: torch.Generator, device: torch.device | str) -> Tensor:
        return self.sample_labelled(n, generator, device)[1]

    def sample_of(self, labels: Tensor, generator: torch.Generator, device: torch.device | str) -> Tensor:
        """For each label, one of the set's images of that class, uniformly."""
        order, start, count = self._classes_index()
        device = torch.device(device)
        y = labels.to("cpu")
        pick = (torch.rand(len(y), generator=generator, device=device).cpu() * count[y]).long()
        return self._batch(order[start[y] + pick.clamp_max(count[y] - 1)].to(device), generator)

    def _classes_index(self) -> tuple[Tensor, Tensor, Tensor]:
        """Image indices sorted by class, each class's first position and its count (CPU)."""
        labels = self._labels().cpu()
        order = torch.argsort(labels, stable=True)
        count = torch.bincount(labels, minlength=self.classes.count)
        start = torch.cumsum(count, 0) - count
        return order, start, count

    def class_chunks(self, label: int, n: int, generator: torch.Generator, size: int) -> Iterator[Tensor]:
        """The class's images (a random n of them when it has more), in chunks, in [-1, 1]."""
        idx = (self._labels().cpu() == label).nonzero().squeeze(1)
        if len(idx) > n:
            idx = idx[torch.randperm(len(idx), generator=generator)[:n]]
        for part in idx.split(size):
            yield self.images[part.to(self.images.device)].float().div_(127.5).sub_(1.0)


def to_images(x: Tensor, size: int | None, channels: int | None, where: str) -> tuple[Tensor, bool]:
    """Pixels (N, C, H, W) on the 0-255 scale as uint8 images with `channels` channels (None:
    their own) and side `size` (None: their own, which must then be square): centre-cropped
    square and resized with antialiasing when it differs. Also whether they were resampled."""
    c = channels or x.shape[1]
    if size is not None:  # the float copy, resized, beside the pixels as read
        memory.require(
            len(x) * c * size * size * memory.FLOAT + x.numel() * memory.FLOAT, f"{where} at {size} x {size}"
        )
    if c == 1 and x.shape[1] == 3:  # ITU-R 601 luma, as pillow's convert("L")
        x = (x * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(dim=1, keepdim=True)
    elif c == 3 and x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    h, w = x.shape[-2:]
    resampled = size is not None and (h, w) != (size, size)
    if resampled:
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        x = x[..., top : top + side, left : left + side]
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    elif h != w:
        raise DataError(f"{where}: images are {h} x {w}; give --image-size to crop them square")
    return x.round().clamp(0, 255).to(torch.uint8).contiguous(), resampled


def match_channels(images: ImageSet, channels: int, where: str, against: str) -> tuple[ImageSet, str | None]:
    """`images` with the real images' number of channels, and a note saying what was done; or
    one line refusing images in colour scored against grey ones (the colour would be dropped
    unseen). Grey images kept as RGB (three equal channels) lose nothing by being read grey."""
    have = images.shape[0]
    if have == channels:
        return images, None
    pixels = images.images
    if have == 1:  # grey against colour: each grey image is its own RGB, and FID sees its lack of colour
        note = f"{where}: grey images, scored against the RGB images of {against} as RGB (three equal channels)"
        return dataclasses.replace(images, images=pixels.expand(-1, 3, -1, -1).contiguous()), note
    if bool((pixels[:, :1] == pixels[:, 1:]).all()):
        note = f"{where}: RGB files whose three channels are equal (grey images), read as grey as {against} is"
        return dataclasses.replace(images, images=pixels[:, :1].contiguous()), note
    raise DataError(
        f"{where}: its images are in colour (RGB) but those of {against} are grey; scoring them would drop the colour"
        " unseen. Score them against colour data, or turn them grey first"
    )
