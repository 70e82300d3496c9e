"""Differentiable augmentation of every image the critic sees, real and generated alike, with a
fixed or an adaptive probability.

The operations are DiffAugment's (Zhao et al. 2020; mit-han-lab/data-efficient-gans,
DiffAugment_pytorch.py), on images in [-1, 1], each drawn per sample:

    color        brightness x + (u - 0.5); saturation (x - mean_c) 2u + mean_c;
                 contrast (x - mean_chw) (u + 0.5) + mean_chw                     (u ~ U[0, 1))
    translation  a shift of up to round(H / 8) pixels either way on each axis, zeros let in
    cutout       a square of side round(H / 2) set to 0, centred anywhere (clipped at the border)

DiffAugment applies every operation to every sample (`p` 1, the default here). With `p` < 1
each operation is applied to each sample with probability p, independently, as ADA's pipeline
applies its own (Karras et al. 2020, stylegan2-ada-pytorch training/augment.py); `Ada` steers p
as ADA's training loop does. The draws come from the trainer's own random stream, so a resumed
run sees the same augmentations as an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ganctl.config import AUGMENT_POLICIES, TrainConfig

TRANSLATION_RATIO = 0.125  # DiffAugment's rand_translation default
CUTOUT_RATIO = 0.5  # DiffAugment's rand_cutout default
# ADA's controller (stylegan2-ada-pytorch training_loop.py): adjust p every 4 minibatches by
# sign(r_t - target) * batch * 4 / (ada_kimg * 1000), floored at 0 (the target and kimg are the
# settings --ada-target and --ada-kimg).
ADA_INTERVAL = 4

Op = Callable[[Tensor, torch.Generator], Tensor]


def _uniform(x: Tensor, generator: torch.Generator) -> Tensor:
    return torch.rand(x.shape[0], 1, 1, 1, generator=generator, device=x.device, dtype=x.dtype)


def brightness(x: Tensor, generator: torch.Generator) -> Tensor:
    return x + (_uniform(x, generator) - 0.5)


def saturation(x: Tensor, generator: torch.Generator) -> Tensor:
    mean = x.mean(dim=1, keepdim=True)
    return (x - mean) * (_uniform(x, generator) * 2) + mean


def contrast(x: Tensor, generator: torch.Generator) -> Tensor:
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (_uniform(x, generator) + 0.5) + mean


def _shifts(n: int, limit: int, generator: torch.Generator, device: torch.device) -> Tensor:
    return torch.randint(-limit, limit + 1, (n, 1, 1), generator=generator, device=device)


def translation(x: Tensor, generator: torch.Generator) -> Tensor:
    """out[i, j] = x[i + dy, j + dx] where that lies inside the image, else 0."""
    n, _, h, w = x.shape
    dy = _shifts(n, int(h * TRANSLATION_RATIO + 0.5), generator, x.device)
    dx = _shifts(n, int(w * TRANSLATION_RATIO + 0.5), generator, x.device)
    rows = torch.arange(h, device=x.device).view(1, h, 1) + dy + 1  # into the zero-padded image
    cols = torch.arange(w, device=x.device).view(1, 1, w) + dx + 1
    rows, cols = rows.clamp(0, h + 1), cols.clamp(0, w + 1)  # anything outside: the zero border
    padded = F.pad(x, (1, 1, 1, 1))
    batch = torch.arange(n, device=x.device).view(n, 1, 1)
    return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)


def cutout(x: Tensor, generator: torch.Generator) -> Tensor:
    """A (round(H/2), round(W/2)) square of zeros centred at a uniform offset, as DiffAugment
    draws it (the offset ranges over H + 1 - size % 2 rows), clipped at the border."""
    n, _, h, w = x.shape
    size_h, size_w = int(h * CUTOUT_RATIO + 0.5), int(w * CUTOUT_RATIO + 0.5)
    oy = torch.randint(0, h + (1 - size_h % 2), (n, 1, 1), generator=generator, device=x.device)
    ox = torch.randint(0, w + (1 - size_w % 2), (n, 1, 1), generator=generator, device=x.device)
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    top, left = oy - size_h // 2, ox - size_w // 2
    inside = (rows >= top) & (rows < top + size_h) & (cols >= left) & (cols < left + size_w)
    return x * (~inside).unsqueeze(1).to(x.dtype)


# Each operation is, for a fixed draw, an affine map of x; these bound its linear part's norm
# over every draw (the factor it can multiply a critic's Lipschitz constant by). Brightness adds
# a constant: 1. Saturation and contrast scale the deviation from a mean by s = 2u in [0, 2) and
# c = u + 0.5 in [0.5, 1.5) and keep the mean, so their norm is max(s, 1) and max(c, 1) (on one
# channel saturation is the identity). Translation copies or zeros pixels, cutout zeros them: 1.
OP_NORMS: dict[str, Callable[[int], float]] = {
    "brightness": lambda channels: 1.0,
    "saturation": lambda channels: 2.0 if channels > 1 else 1.0,
    "contrast": lambda channels: 1.5,
    "translation": lambda channels: 1.0,
    "cutout": lambda channels: 1.0,
}

OPS: dict[str, Op] = {op.__name__: op for op in (brightness, saturation, contrast, translation, cutout)}


class Augment:
    """The policies' operations in the order given, each applied to each sample with
    probability `p` (the caller's current value: fixed, scheduled or ADA's)."""

    def __init__(self, policy: tuple[str, ...]):
        self.policy = policy
        self.ops = [OPS[op] for name in policy for op in AUGMENT_POLICIES[name]]

    def lipschitz_factor(self, channels: int) -> float:
        """A bound, over every draw, on the norm of T's Jacobian: Lip(D o T) <= this x Lip(D).
        The supremum for `color` on several channels is 3 (saturation 2, contrast 1.5), reached
        in the limit by a gradient orthogonal to both means (tested)."""
        factor = 1.0
        for op in self.ops:
            factor *= OP_NORMS[op.__name__](channels)
        return factor

    def __call__(self, x: Tensor, generator: torch.Generator, p: float = 1.0) -> Tensor:
        """x augmented; p >= 1 applies every operation to every sample (DiffAugment's way)."""
        if p <= 0.0:
            return x
        for op in self.ops:
            out = op(x, generator)
            if p < 1.0:  # ADA's way: this operation on a random share p of the samples
                keep = torch.rand(x.shape[0], 1, 1, 1, generator=generator, device=x.device) >= p
                out = torch.where(keep, x, out)
            x = out
        return x


Reduce = Callable[[list[float]], list[float]]  # sums over the processes of a run (identity on one)


class Ada:
    """ADA's controller: every `ADA_INTERVAL` critic steps, over every process of the run, the
    overfitting heuristic r moves p by sign(r - target) * images / (kimg * 1000), the images
    being the real samples r was read on (ADA's batch * interval), floored at 0 and, as in
    stylegan2-ada, not capped above (p past 1 applies every operation to every sample, and takes
    as long to come back down as it took to go up).

    Two heuristics (Karras et al. 2020, Eq. 1): `sign`, the mean of the loss's overfitting signs
    (`Loss.overfit_sign`; r_t for a logistic loss), and `validation`, r_v = (E[D(train)] -
    E[D(validation)]) / (E[D(train)] - E[D(generated)]) on held-out images, read on one batch of
    them at each adjustment. r_v is 0 when the critic rates unseen real images as the ones it
    trained on, 1 when it rates them as generated ones; a ratio of differences of raw outputs,
    it means the same for every loss. Where E[D(train)] <= E[D(generated)] (the critic no longer
    separates real from generated), r_v is taken as R_V_LIMIT when unseen images score below
    the training ones (the generator reproduces the training set) and 0 otherwise."""

    def __init__(self, target: float, kimg: float, p: float = 0.0, heuristic: str = "sign"):
        self.target, self.kimg, self.heuristic = target, kimg, heuristic
        self.p, self.total, self.count, self.steps = p, 0.0, 0, 0
        self.fake_total = 0.0  # validation: the generated outputs' sum, beside the training ones' in total
        self.last: float | None = None  # the heuristic's latest value

    def observe(self, signs: Tensor, reduce: Reduce | None = None) -> None:
        """One critic step's signs; every ADA_INTERVAL steps, the sums of every process (`reduce`)
        adjust p, so that all of them keep one p."""
        self.total += float(signs.float().sum())
        self.count += signs.numel()
        self.steps += 1
        if self.steps % ADA_INTERVAL == 0 and self.count:
            total, count = reduce([self.total, float(self.count)]) if reduce else (self.total, float(self.count))
            self._adjust(total / count, count)

    def observe_outputs(
        self, d_real: Tensor, d_fake: Tensor, validation: Callable[[], Tensor], reduce: Reduce | None = None
    ) -> None:
        """The validation heuristic: one critic step's outputs on its training and generated
        batches; every ADA_INTERVAL steps, the critic's outputs on a batch of held-out images
        (`validation()`) and the sums of every process give r_v, which adjusts p."""
        self.total += float(d_real.float().sum())
        self.fake_total += float(d_fake.float().sum())
        self.count += d_real.numel()
        self.steps += 1
        if self.steps % ADA_INTERVAL == 0 and self.count:
            d_val = validation().float()
            sums = [self.total, self.fake_total, float(self.count), float(d_val.sum()), float(d_val.numel())]
            real, fake, count, val, n_val = reduce(sums) if reduce else sums
            self.fake_total = 0.0
            self._adjust(r_v(real / count, val / n_val, fake / count), count)

    def _adjust(self, r: float, images: float) -> None:
        self.last = r
        sign = (r > self.target) - (r < self.target)  # np.sign: 0 on the target
        self.p = max(0.0, self.p + sign * images / (self.kimg * 1000.0))
        self.total, self.count = 0.0, 0

    def state(self) -> dict[str, float]:
        return {"p": self.p, "total": self.total, "count": self.count, "steps": self.steps, "fake": self.fake_total}

    def load(self, state: dict[str, float]) -> None:
        self.p, self.total = float(state["p"]), float(state["total"])
        self.count, self.steps = int(state["count"]), int(state["steps"])
        self.fake_total = float(state.get("fake", 0.0))  # checkpoints before the validation heuristic


R_V_LIMIT = 10.0  # r_v where the critic no longer separates real from generated but unseen images score lower


def r_v(train: float, validation: float, generated: float) -> float:
    """ADA's r_v = (train - validation) / (train - generated) from the critic's mean outputs,
    within [-R_V_LIMIT, R_V_LIMIT] (only its side of the target moves p)."""
    gap = train - generated
    if gap <= 0.0:
        return R_V_LIMIT if train > validation else 0.0
    return max(-R_V_LIMIT, min(R_V_LIMIT, (train - validation) / gap))


class Augmenter:
    """A run's augmentation (`--augment`, `--augment-p`, `--ada-target`): its operations, and its
    probability, fixed or ADA's (`ada`, whose state a checkpoint keeps)."""

    def __init__(self, cfg: TrainConfig):
        policy = cfg.augment_policies
        self.augment = Augment(policy) if policy else None
        self.fixed = cfg.augment_p if cfg.augment_p is not None else 1.0
        self.ada = None
        if self.augment is not None and cfg.ada_target is not None:
            self.ada = Ada(cfg.ada_target, cfg.ada_kimg, cfg.augment_p or 0.0, cfg.ada_heuristic)

    @property
    def p(self) -> float:
        """The current probability of each operation (0 without --augment)."""
        if self.augment is None:
            return 0.0
        return self.ada.p if self.ada is not None else self.fixed

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        return x if self.augment is None else self.augment(x, generator, self.p)


class Augmented(nn.Module):
    """D o T, the critic as training sees it: what `ganctl gradnorm` measures on a run that
    augments, so that its input gradients are the ones the penalties constrain (with respect to
    the un-augmented x, through the augmentation, at the run's current probability)."""

    def __init__(self, critic: nn.Module, augmenter: Augmenter, generator: torch.Generator):
        super().__init__()
        self.critic, self.augmenter, self.generator = critic, augmenter, generator

    def forward(self, x: Tensor, *labels: Tensor) -> Tensor:
        return self.critic(self.augmenter(x, self.generator), *labels)


def as_trained(critic: nn.Module, augmenter: Augmenter, generator: torch.Generator) -> nn.Module:
    """The critic itself where the run does not augment (or at p 0), else `Augmented`."""
    return critic if augmenter.p <= 0.0 else Augmented(critic, augmenter, generator)
