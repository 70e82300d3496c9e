"""What every data source is: the `DataSource` protocol, and the optional capabilities a source
declares as attributes (`None` when it has none), so that no caller has to probe for them.

    name, kind, shape, description   what it is ("points" or "images"; one sample's shape)
    length                           samples held, or None for a source drawn fresh (infinite)
    sample(n, generator, device)     a training batch from an explicit stream
    chunks(n, generator, size)       n samples for evaluation, in chunks
    fingerprint()                    the identity of the real set, for cached statistics
    to(device)                       keep the samples on the training device where they fit
    mixture                          2-D mixtures: component centres and std (modes, quality)
    judge                            an analytic judge of each sample's mode (`shapes`)
    skipped                          files that could not be read
    classes                          class names and count where the source has labels; then
    labels(n, generator, device)     labels drawn as the data has them
    sample_of(labels, generator, device)   samples of the given classes
    sample_labelled(n, generator, device)  a batch and its labels
    class_chunks(label, n, generator, size)  n samples of one class (a finite set's, at most)
    native_size, resampled           images: their own (H, W) when they share one, and whether
                                     any was resized to the size they are served at
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from ganctl.errors import DataError


@dataclass(frozen=True)
class Mixture:
    """A mixture of isotropic Gaussians: its component centres (in the data's coordinates) and
    their common standard deviation, which the 2-D mode metrics judge samples by."""

    centres: tuple[tuple[float, ...], ...]
    std: float

    def centres_tensor(self, device: torch.device | str = "cpu") -> Tensor:
        return torch.tensor(self.centres, dtype=torch.float32, device=device)

    @property
    def components(self) -> int:
        return len(self.centres)


@dataclass(frozen=True)
class Classes:
    """The classes of a labelled source: label k is named names[k]."""

    names: tuple[str, ...]

    @property
    def count(self) -> int:
        return len(self.names)


@runtime_checkable
class Judge(Protocol):
    """Assigns each sample its mode (or -1 for an invalid one) and summarises the verdicts."""

    modes_total: int

    def __call__(self, samples: Tensor) -> Tensor: ...

    def quality(self, samples: Tensor) -> dict[str, float | int]: ...

    def quality_of_modes(self, modes: Tensor) -> dict[str, float | int]: ...

    def mode_name(self, mode: int) -> str: ...


@runtime_checkable
class DataSource(Protocol):
    """A source of real samples. `ganctl.data.load_dataset` returns one for any --data."""

    name: str
    kind: str  # "points" | "images"
    mixture: Mixture | None
    judge: Judge | None
    skipped: tuple[str, ...]
    classes: Classes | None
    native_size: tuple[int, int] | None
    resampled: bool

    @property
    def shape(self) -> tuple[int, ...]: ...

    @property
    def length(self) -> int | None: ...

    @property
    def description(self) -> str: ...

    def sample(self, n: int, generator: torch.Generator, device: torch.device | str) -> Tensor: ...

    def labels(self, n: int, generator: torch.Generator, device: torch.device | str) -> Tensor: ...

    def sample_of(self, labels: Tensor, generator: torch.Generator, device: torch.device | str) -> Tensor: ...

    def sample_labelled(
        self, n: int, generator: torch.Generator, device: torch.device | str
    ) -> tuple[Tensor, Tensor]: ...

    def class_chunks(self, label: int, n: int, generator: torch.Generator, size: int) -> Iterator[Tensor]: ...

    def chunks(self, n: int, generator: torch.Generator, size: int) -> Iterator[Tensor]: ...

    def fingerprint(self) -> str: ...

    def to(self, device: torch.device) -> DataSource: ...


def unlabelled(source: DataSource) -> DataError:
    """The error of asking a source without classes for labels."""
    return DataError(f"--data {source.name}: has no class labels")


def fresh_chunks(source: DataSource, n: int, generator: torch.Generator, size: int) -> Iterator[Tensor]:
    """n fresh samples of a source drawn anew each time, in chunks of `size`, on the
    generator's device."""
    for start in range(0, n, size):
        yield source.sample(min(size, n - start), generator, generator.device)


def fresh_class_chunks(
    source: DataSource, label: int, n: int, generator: torch.Generator, size: int
) -> Iterator[Tensor]:
    """n fresh samples of class `label` of a source drawn anew each time, in chunks."""
    for start in range(0, n, size):
        labels = torch.full((min(size, n - start),), label, dtype=torch.long, device=generator.device)
        yield source.sample_of(labels, generator, generator.device)
