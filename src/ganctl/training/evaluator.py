"""A run's evaluations: `Evaluator` draws its real points, latents and interpolation
coefficients once, from the evaluation stream (`ganctl.streams`), so every evaluation of a run,
resumed or not, and of its checkpoints uses the same inputs: the data's own metrics (2-D modes,
high-quality share and W1; the `shapes` judge), the run's image metrics in its feature spaces,
`ganctl gradnorm`'s interpolate summary, and the run's picture."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor

from ganctl import streams
from ganctl.config import metric_list
from ganctl.lipschitz.defaults import TOL as DEFAULT_TOL
from ganctl.lipschitz.norms import gradient_norms, summarise
from ganctl.lipschitz.transport import W1_POINTS, floor_of, wasserstein1
from ganctl.methods.penalties import interpolate
from ganctl.nets.augment import as_trained
from ganctl.nets.networks import Networks, eval_mode
from ganctl.nets.sampling import draw_points, plot_extent
from ganctl.pictures import image_grid, save_image
from ganctl.quality import copying, scores
from ganctl.quality.modes import class_consistency, mixture_quality
from ganctl.quality.scores import Generated, Spaces, run_spaces, spaces_described

PLOT_POINTS = 1000


GRID_IMAGES = 64  # an 8 x 8 grid from fixed latents


GRID_COLUMNS = 8


MAX_GRID_ROWS = 20  # a conditional grid's rows: one class each


EVAL_BATCH = 500


GRADNORM_POINTS = 512  # interpolates measured at each eval (the gradnorm command's summary)


CRITIC_IMAGES = 500  # images of each kind the critic's mean output is read on (--holdout)


def _pixels(images: Any) -> Tensor:
    """Every image of a set in [-1, 1], a row each (CPU)."""
    return images.images.cpu().flatten(1).float().div(127.5).sub(1.0)


@torch.no_grad()
def _mean_output(nets: Networks, critic: Any, x: Tensor, labels: Tensor | None) -> float:
    with eval_mode(nets.critic):
        return float(critic(x, *(() if labels is None else (labels.to(x.device),))).float().mean())


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
        # A conditional run's samples cycle through the classes: the same number of each.
        self.labels = nets.class_labels(cfg.eval_samples, rng) if cfg.conditional else None
        # Real points for the gradient-norm summary, from a stream of their own so that adding
        # them changed no other evaluation input (with their labels: the fakes it pairs them with
        # are drawn at the same labels).
        self.n_gradnorm = min(GRADNORM_POINTS, cfg.eval_samples)
        gradnorm_rng = nets.eval_generator(streams.EVAL_GRADNORM_REAL)
        if cfg.conditional:
            self.real_gradnorm, self.labels_gradnorm = dataset.sample_labelled(
                self.n_gradnorm, gradnorm_rng, nets.device
            )
        else:
            self.real_gradnorm = dataset.sample(self.n_gradnorm, gradnorm_rng, nets.device)
            self.labels_gradnorm = None
        self.last_norms: Tensor | None = None  # the latest gradient-norm summary's norms (for histograms)
        self.metrics = () if self.points else metric_list(cfg.eval_metrics, "--eval-metrics")
        n_real = min(cfg.eval_samples, dataset.length) if dataset.length is not None else None
        scores.check_sizes(self.metrics, n_real, cfg.eval_samples, "--eval-metrics", cfg.data)
        self._spaces: Spaces | None = None
        self._real: dict[str, scores.RealFeatures] = {}
        self.held = getattr(dataset, "held_out", None)  # --holdout: images the run never trains on
        if self.held is not None:  # their pixels, and which of each set the critic is read on
            self.train_pixels, self.held_pixels = _pixels(dataset), _pixels(self.held)
            g = torch.Generator().manual_seed(streams.eval_seed(cfg.seed, streams.EVAL_COPYING))
            n = min(len(self.held), CRITIC_IMAGES)
            self.critic_picks = (
                torch.randperm(len(dataset), generator=g)[:n],
                torch.randperm(len(self.held), generator=g)[:n],
            )
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
    def fake(self, n: int | None = None, labels: Tensor | None = None) -> torch.Tensor:
        """The fixed latents' samples (the first n), at the fixed labels (or `labels`)."""
        net, latents = self.nets.sampler, self.latents[:n]
        if labels is None and self.labels is not None:
            labels = self.labels[: len(latents)]
        with eval_mode(net):
            if labels is None:
                return torch.cat([net(z).float() for z in latents.split(EVAL_BATCH)])
            parts = zip(latents.split(EVAL_BATCH), labels.split(EVAL_BATCH))
            return torch.cat([net(z, y).float() for z, y in parts])

    def measure(self) -> dict[str, Any]:
        fake = self.fake()
        gradnorm_fake = self.fake(self.n_gradnorm, self.labels_gradnorm)
        result: dict[str, Any] = self.gradnorm(gradnorm_fake)
        consistency = class_consistency(self.dataset, fake, self.labels) if self.labels is not None else {}
        if not self.points:
            judge = self.dataset.judge
            quality = judge.quality(fake) if judge is not None else {}
            held = self.copying(fake) if self.held is not None else {}
            return {**quality, **consistency, **self.image_metrics(fake), **held, **result}
        result.update(consistency)
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
        once from the evaluation stream, in the run's feature spaces (--eval-features, --vgg)."""
        if not self.metrics:
            return {}
        if self._spaces is None:
            self._spaces = run_spaces(self.nets.cfg, self.nets.device)
            seed = streams.eval_seed(self.nets.cfg.seed, streams.EVAL_REAL_FEATURES)
            for space in scores.real_needed(self._spaces, self.metrics, None):
                self._real[space.label] = scores.real_features(space, self.dataset, len(self.latents), seed)
        generated = Generated(self._spaces, self.metrics)
        generated.add(fake)
        real = {label: r.features for label, r in self._real.items()}
        return scores.image_metrics(self._spaces, self.metrics, generated, real)

    def copying(self, fake: Tensor) -> dict[str, float]:
        """With --holdout: whether the samples copy the training images (`ganctl.quality.copying`,
        in pixels), and the critic's mean output on training, held-out and generated images as
        training shows them (through the run's augmentation at its p, drawn the same each time:
        stylegan2-ada's Figure 1)."""
        nets, seed = self.nets, streams.eval_seed(self.nets.cfg.seed, streams.EVAL_COPYING)
        train, held, flat = self.train_pixels, self.held_pixels, fake.flatten(1).cpu()
        share = copying.nearer_seen(flat, train, held)
        test = copying.data_copying(flat, train, held, seed)
        critic = as_trained(nets.critic, nets.augment, nets.eval_generator(streams.EVAL_COPYING))

        def mean_d(images: Any, pixels: Tensor, pick: Tensor) -> float:
            x = pixels[pick].view(-1, *self.dataset.shape).to(nets.device)
            labels = images.targets[pick.to(images.targets.device)] if nets.cfg.conditional else None
            return _mean_output(nets, critic, x, labels)

        n = len(self.critic_picks[0])
        fake_labels = self.labels[:n] if self.labels is not None else None
        return {
            "nearer_seen[pixels]": share["nearer_seen"],
            "held_nearer_seen[pixels]": share["held_nearer_seen"],
            "c_t[pixels]": test["c_t"],
            "critic_seen": mean_d(self.dataset, train, self.critic_picks[0]),
            "critic_held": mean_d(self.held, held, self.critic_picks[1]),
            "critic_fake": _mean_output(nets, critic, fake[:n], fake_labels),
        }

    def measured_on(self) -> dict[str, Any] | None:
        """What the image metrics were measured on (feature spaces and their weights' hashes,
        sample counts, the real set's fingerprint, the resolution of both sides and whether the
        numbers are standard), once they have been; None before or without them."""
        if self._spaces is None:
            return None
        real = next(iter(self._real.values()), None)
        resolution = tuple(self.dataset.shape[-2:])
        return {
            **spaces_described(self._spaces),
            "n_fake": len(self.latents),
            "n_real": real.n if real is not None else None,
            "real_fingerprint": self.dataset.fingerprint(),
            **scores.provenance(self._spaces, self.metrics, self.dataset, resolution, False),
        }

    def gradnorm(self, fake: torch.Tensor) -> dict[str, float]:
        """`ganctl gradnorm`'s interpolate summary: ||grad D(x_hat)|| on fixed real points and
        the fixed latents' samples, with interpolation coefficients drawn the same every time."""
        x_hat = interpolate(
            self.real_gradnorm,
            fake.to(self.real_gradnorm.dtype),
            self.nets.eval_generator(streams.EVAL_GRADNORM_INTERP),
        )
        self.last_norms = gradient_norms(self.nets.critic, x_hat, y=self.labels_gradnorm)[1]
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
            if self.labels is None:
                images = self.fake(GRID_IMAGES)
            else:  # a row per class, the same latents in every row
                images = self._class_grid(min(self.nets.cfg.num_classes, MAX_GRID_ROWS))
            grid = image_grid(images.cpu().numpy(), columns=GRID_COLUMNS)
            if path is not None:
                save_image(path, grid)
            return grid
        return draw_points(path, self.nets, self.real[:PLOT_POINTS], self.fake(PLOT_POINTS), title, self.extent)

    @torch.no_grad()
    def _class_grid(self, rows: int) -> Tensor:
        z = self.latents[:GRID_COLUMNS].repeat(rows, 1)
        labels = torch.arange(rows, device=self.nets.device).repeat_interleave(GRID_COLUMNS)
        with eval_mode(self.nets.sampler):
            return self.nets.sampler(z, labels).float()
