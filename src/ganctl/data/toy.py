"""The 2-D toy sets of the WGAN-GP paper, defined as in its released code (gan_toy.py), plus
a ring and a checkerboard.

The released code draws 8gaussians and swissroll fresh for every batch and cycles through a
fixed, shuffled set of 100,000 points for 25gaussians; here every set is drawn fresh, which
samples the same distribution without the finite-set artefact.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from ganctl.data.source import Classes, Judge, Mixture, fresh_chunks, fresh_class_chunks, unlabelled
from ganctl.errors import DataError

Sampler = Callable[[int, torch.Generator, torch.device], Tensor]


@dataclass(frozen=True)
class ToySet:
    """A 2-D distribution, drawn fresh for every batch (a `DataSource` of infinite length).
    Mixtures carry their component centres and common std (in the final, rescaled
    coordinates) so that modes and sample quality can be judged."""

    name: str
    description: str
    sampler: Sampler
    mixture: Mixture | None = None
    kind: str = "points"
    judge: Judge | None = None
    skipped: tuple[str, ...] = ()
    classes: Classes | None = None
    native_size: tuple[int, int] | None = None  # points, not images
    resampled: bool = False

    @property
    def shape(self) -> tuple[int, ...]:
        return (2,)

    @property
    def length(self) -> int | None:
        return None

    def sample(self, n: int, generator: torch.Generator, device: torch.device | str) -> Tensor:
        if self.mixture is not None:  # the component, then the noise: sample_labelled's draws
            return self.sample_of(self.labels(n, generator, device), generator, device)
        return self.sampler(n, generator, torch.device(device))

    def labels(self, n: int, generator: torch.Generator, device: torch.device | str) -> Tensor:
        """A mixture's component index, uniform, for each of n samples."""
        if self.mixture is None:
            raise unlabelled(self)
        return torch.randint(self.mixture.components, (n,), generator=generator, device=torch.device(device))

    def sample_of(self, labels: Tensor, generator: torch.Generator, device: torch.device | str) -> Tensor:
        """A point of component labels[i] for each i."""
        if self.mixture is None:
            raise unlabelled(self)
        device = torch.device(device)
        centres = self.mixture.centres_tensor(device)
        return centres[labels.to(device)] + self.mixture.std * torch.randn(
            len(labels), 2, generator=generator, device=device
        )

    def sample_labelled(self, n: int, generator: torch.Generator, device: torch.device | str) -> tuple[Tensor, Tensor]:
        y = self.labels(n, generator, device)
        return self.sample_of(y, generator, device), y

    def class_chunks(self, label: int, n: int, generator: torch.Generator, size: int) -> Iterator[Tensor]:
        return fresh_class_chunks(self, label, n, generator, size)

    def chunks(self, n: int, generator: torch.Generator, size: int) -> Iterator[Tensor]:
        return fresh_chunks(self, n, generator, size)

    def fingerprint(self) -> str:
        return f"toy/{self.name}"

    def to(self, device: torch.device) -> ToySet:
        return self  # drawn on the device each batch asks for


def _no_sampler(n: int, generator: torch.Generator, device: torch.device) -> Tensor:
    raise AssertionError("a mixture samples through its components")  # ToySet.sample_of


def _eight_gaussians() -> ToySet:
    # gan_toy.py: centres on the unit circle scaled by 2, std 0.02, then the set / 1.414.
    # The classes (component indices) in this order, named by compass direction.
    r = 1.0 / math.sqrt(2.0)
    unit = [(1, 0), (-1, 0), (0, 1), (0, -1), (r, r), (r, -r), (-r, r), (-r, -r)]
    names = ("E", "W", "N", "S", "NE", "SE", "NW", "SW")
    scale = 1.414
    centres = torch.tensor(unit, dtype=torch.float32) * 2.0 / scale
    std = 0.02 / scale
    return ToySet(
        "8gaussians",
        "8 Gaussians on a circle of radius 2, std 0.02, divided by 1.414",
        _no_sampler,
        Mixture(tuple(map(tuple, centres.tolist())), std),
        classes=Classes(names),
    )


def _twenty_five_gaussians() -> ToySet:
    # gan_toy.py: a 5 x 5 grid at spacing 2 (-4..4), std 0.05, then the set / 2.828.
    # Class k is the grid point (x, y) = (k // 5 - 2, k % 5 - 2), named "x,y".
    scale = 2.828
    grid = [(2.0 * x, 2.0 * y) for x in range(-2, 3) for y in range(-2, 3)]
    names = tuple(f"{x},{y}" for x in range(-2, 3) for y in range(-2, 3))
    centres = torch.tensor(grid, dtype=torch.float32) / scale
    std = 0.05 / scale
    return ToySet(
        "25gaussians",
        "5 x 5 grid of Gaussians at spacing 2, std 0.05, divided by 2.828",
        _no_sampler,
        Mixture(tuple(map(tuple, centres.tolist())), std),
        classes=Classes(names),
    )


def _swissroll(n: int, generator: torch.Generator, device: torch.device) -> Tensor:
    # scikit-learn's make_swiss_roll(noise=0.25), coordinates 0 and 2, divided by 7.5:
    # t = 1.5 pi (1 + 2u), point (t cos t, t sin t) + 0.25 N(0, I).
    u = torch.rand(n, generator=generator, device=device)
    t = 1.5 * math.pi * (1.0 + 2.0 * u)
    points = torch.stack([t * torch.cos(t), t * torch.sin(t)], dim=1)
    points = points + 0.25 * torch.randn(n, 2, generator=generator, device=device)
    return points / 7.5


def _ring(n: int, generator: torch.Generator, device: torch.device) -> Tensor:
    # A continuous ring of radius 1 with radial std 0.05: one connected but not simply
    # connected mode, which a generator from a Gaussian latent must tear or fold.
    angle = 2.0 * math.pi * torch.rand(n, generator=generator, device=device)
    radius = 1.0 + 0.05 * torch.randn(n, generator=generator, device=device)
    return torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], dim=1)


def _checkerboard(n: int, generator: torch.Generator, device: torch.device) -> Tensor:
    # Uniform on the 8 dark squares of a 4 x 4 board spanning [-2, 2]^2 (FFJORD's toy set,
    # without its final factor 2).
    x1 = 4.0 * torch.rand(n, generator=generator, device=device) - 2.0
    u = torch.rand(n, generator=generator, device=device)
    row = 2.0 * torch.randint(0, 2, (n,), generator=generator, device=device)
    x2 = u - row + torch.remainder(torch.floor(x1), 2.0)
    return torch.stack([x1, x2], dim=1)


_REGISTRY: dict[str, ToySet] = {}


def register(dataset: ToySet) -> ToySet:
    _REGISTRY[dataset.name] = dataset
    return dataset


register(_eight_gaussians())
register(_twenty_five_gaussians())
register(ToySet("swissroll", "scikit-learn's swiss roll, noise 0.25, axes 0 and 2, / 7.5", _swissroll))
register(ToySet("ring", "a ring of radius 1, radial std 0.05", _ring))
register(ToySet("checkerboard", "uniform on the dark squares of a 4 x 4 board on [-2, 2]^2", _checkerboard))


def available_datasets() -> list[str]:
    return list(_REGISTRY)


def get_dataset(name: str) -> ToySet:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise DataError(
            f"--data {name!r} is not a built-in data set; available: {', '.join(available_datasets())}"
        ) from None
