"""How good a generator is, without the training loop: the data's quality metrics (2-D mode
metrics, the `shapes` judge), `ganctl gradnorm`'s interpolate summary, and the run's pictures,
on fixed inputs.

`Evaluator` draws its real points, latents and interpolation coefficients once, from the
evaluation stream (`ganctl.streams`), so every evaluation of a run, resumed or not, and of its
checkpoints uses the same inputs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ganctl import streams
from ganctl.analysis.gradnorm import DEFAULT_TOL, gradient_norms, summarise
from ganctl.analysis.quality import mixture_quality, wasserstein1
from ganctl.networks import Networks, eval_mode
from ganctl.penalties import interpolate
from ganctl.render import image_grid, save_image, scatter_over_field

W1_SAMPLES = 512  # exact assignment is O(n^3); 512 points take about a second
FIELD_RESOLUTION = 128
PLOT_POINTS = 1000
GRID_IMAGES = 64  # an 8 x 8 grid from fixed latents
EVAL_BATCH = 500
GRADNORM_POINTS = 512  # interpolates measured at each eval (the gradnorm command's summary)


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
        if not self.points:
            return
        self.real = dataset.sample(cfg.eval_samples, rng, nets.device)
        self.n_w1 = min(W1_SAMPLES, cfg.eval_samples)
        self.real_w1 = dataset.sample(self.n_w1, rng, nets.device)
        self.centres = dataset.centres_tensor()
        self.extent = plot_extent(self.real)
        # The W1 a perfect generator would still show at this sample size.
        self.w1_floor = wasserstein1(self.real[: self.n_w1], self.real_w1)

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
            quality = getattr(self.dataset, "quality", None)
            return {**(quality(fake) if quality is not None else {}), **result}
        result.update({"w1": wasserstein1(fake[: self.n_w1], self.real_w1), "w1_floor": self.w1_floor})
        if self.centres is not None:
            result.update(mixture_quality(fake, self.centres, self.dataset.std))
        return result

    def gradnorm(self, fake: torch.Tensor) -> dict[str, float]:
        """`ganctl gradnorm`'s interpolate summary: ||grad D(x_hat)|| on fixed real points and
        the fixed latents' samples, with interpolation coefficients drawn the same every time."""
        x_hat = interpolate(
            self.real_gradnorm,
            fake.to(self.real_gradnorm.dtype),
            self.nets.eval_generator(streams.EVAL_GRADNORM_INTERP),
        )
        stats = summarise(gradient_norms(self.nets.critic, x_hat)[1], DEFAULT_TOL)
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
