"""A generator, its EMA and a critic, built from a resolved config: what sampling, evaluation
and analysis need, with no optimizer in sight.

`ganctl.training.engine.Trainer` is a `Networks` that also trains; `ganctl.nets.checkpoint.load` returns one
that only holds weights. Both build their modules with `build`, so a checkpoint always rebuilds
exactly the modules that wrote it (spectral norm included).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from ganctl import streams
from ganctl.config import ResolvedConfig
from ganctl.data import DataSource, load_dataset, sample_shape
from ganctl.methods.strategies import Lipschitz
from ganctl.models import build_models
from ganctl.models.constrained import has_bjorck
from ganctl.nets.augment import Augmenter


def build(cfg: ResolvedConfig, strategy: Lipschitz) -> tuple[nn.Module, nn.Module, nn.Module | None]:
    """(generator, critic, EMA generator or None) on the CPU, initialised from the seed alone,
    so the same seed gives the same weights on any device and the caller's global random
    stream is left untouched. The strategy prepares the critic (clipping, spectral norm)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        generator, critic = build_models(cfg, sample_shape(cfg))
        critic = strategy.prepare_critic(critic)
    ema = copy.deepcopy(generator).requires_grad_(False).eval() if cfg.ema_decay > 0 else None
    return generator, critic, ema


@contextlib.contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """Evaluation mode for a measurement (spectral norm then runs no power iteration, batch
    norm uses running statistics), restoring the module's mode afterwards. A Björck critic's
    orthonormal weights are computed once for the whole measurement, which changes no weight
    (only there: torch's parametrization cache is keyed by module id, and a temporary copy made
    inside it, as `analysis.gradnorm.explicit_norm` makes, could meet a stale entry)."""

    was_training = module.training
    module.eval()
    try:
        with parametrize.cached() if has_bjorck(module) else contextlib.nullcontext():
            yield module
    finally:
        module.train(was_training)


class Networks:
    """The modules of a run and the config that built them, on one device, at one step."""

    def __init__(
        self,
        cfg: ResolvedConfig,
        device: torch.device,
        generator: nn.Module,
        critic: nn.Module,
        ema: nn.Module | None,
        step: int = 0,
        dataset: DataSource | None = None,
        class_names: tuple[str, ...] | None = None,
    ):
        self.cfg = cfg
        self.device = device
        self.generator, self.critic, self.ema = generator, critic, ema
        self.step = step  # generator iterations done
        self._dataset = dataset
        self._data_placed = False
        # A conditional run's classes, in label order (from its data, or its checkpoint).
        self.class_names = class_names or (tuple(map(str, range(cfg.num_classes))) if cfg.conditional else None)
        # --augment: what the critic sees, and its probability now (fixed, or ADA's).
        self.augment = Augmenter(cfg)

    @property
    def dataset(self) -> DataSource:
        """The data source, read on first use (sampling a checkpoint needs no data) and placed
        on the networks' device."""
        if self._dataset is None:
            self._dataset = load_dataset(self.cfg)
        if not self._data_placed:
            self._dataset = self._dataset.to(self.device)
            self._data_placed = True
        return self._dataset

    @property
    def data_loaded(self) -> bool:
        return self._dataset is not None

    @property
    def sampler(self) -> nn.Module:
        """The generator used for samples and evaluation: the EMA one when there is one."""
        return self.ema if self.ema is not None else self.generator

    def noise(self, n: int, generator: torch.Generator) -> Tensor:
        return torch.randn(n, self.cfg.z_dim, generator=generator, device=self.device)

    def class_labels(self, n: int, generator: torch.Generator) -> Tensor:
        """n labels cycling through the classes (0, 1, ..., K-1, 0, ...), for samples of every class."""
        return torch.arange(n, device=self.device) % self.cfg.num_classes

    def generate(self, net: nn.Module, z: Tensor, labels: Tensor | None = None) -> Tensor:
        """net(z), or for a conditional run net(z, y) with the given labels (default: cycling
        through the classes)."""
        if not self.cfg.conditional:
            return net(z)
        y = labels if labels is not None else self.class_labels(len(z), None)
        return net(z, y.to(z.device))

    def eval_generator(self, offset: int = 0) -> torch.Generator:
        """A stream for evaluation, apart from the training stream (`ganctl.streams`)."""
        g = torch.Generator(device=self.device)
        g.manual_seed(streams.eval_seed(self.cfg.seed, offset))
        return g

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator, raw: bool = False, labels: Tensor | None = None) -> Tensor:
        """n samples from the EMA generator (the raw one with `raw`), in eval mode; for a
        conditional run, of the given classes (default: cycling through them)."""
        net = self.generator if raw else self.sampler
        with eval_mode(net):
            return self.generate(net, self.noise(n, generator), labels)

    @torch.no_grad()
    def critic_values(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        """D(x) in eval mode: spectral norm runs no power iteration, so this changes nothing. A
        conditional critic is read at `labels`."""
        with eval_mode(self.critic):
            out = self.critic(x) if labels is None else self.critic(x, labels)
            return out.squeeze(-1)
