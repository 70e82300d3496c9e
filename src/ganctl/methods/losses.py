"""Adversarial losses as pure functions of critic outputs. Each pair is (critic, generator);
both are minimised. Inputs are raw critic outputs of shape (B, 1) or (B,)."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ganctl.errors import ConfigError


class Loss(NamedTuple):
    critic: Callable[[Tensor, Tensor], Tensor]
    generator: Callable[[Tensor, Tensor | None], Tensor]  # (D(G(z)), D(x) where `pairs`, else None)
    source: str
    # d critic / d D(x) and d critic / d D(G(z)) per sample, in closed form (the hand-written
    # MLP step seeds its backward with them; autograd's agree, which a test checks).
    critic_grad: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]
    # ADA's overfitting heuristic for this loss: per real sample, the sign of what the loss
    # judges it by (see `overfit_sign`).
    overfit_sign: Callable[[Tensor, Tensor], Tensor]
    pairs: bool = False  # the generator's loss also needs D on a real batch (relativistic)


def _wasserstein_critic(d_real: Tensor, d_fake: Tensor) -> Tensor:
    """-(E[D(x)] - E[D(G(z))]): the negated Kantorovich-Rubinstein estimate (Arjovsky 2017)."""
    return d_fake.mean() - d_real.mean()


def _wasserstein_generator(d_fake: Tensor, d_real: Tensor | None = None) -> Tensor:
    return -d_fake.mean()


def _wasserstein_critic_grad(d_real: Tensor, d_fake: Tensor) -> tuple[Tensor, Tensor]:
    return torch.full_like(d_real, -1.0 / d_real.numel()), torch.full_like(d_fake, 1.0 / d_fake.numel())


def _hinge_critic(d_real: Tensor, d_fake: Tensor) -> Tensor:
    """E[max(0, 1 - D(x))] + E[max(0, 1 + D(G(z)))] (Lim & Ye 2017; Miyato et al. 2018)."""
    return F.relu(1.0 - d_real).mean() + F.relu(1.0 + d_fake).mean()


def _hinge_critic_grad(d_real: Tensor, d_fake: Tensor) -> tuple[Tensor, Tensor]:
    # relu's derivative as autograd takes it: 1 where its output is positive.
    return -(1.0 - d_real > 0).to(d_real.dtype) / d_real.numel(), (1.0 + d_fake > 0).to(d_fake.dtype) / d_fake.numel()


def _ns_critic(d_real: Tensor, d_fake: Tensor) -> Tensor:
    """Binary cross-entropy on logits: E[softplus(-D(x))] + E[softplus(D(G(z)))]."""
    return F.softplus(-d_real).mean() + F.softplus(d_fake).mean()


def _ns_critic_grad(d_real: Tensor, d_fake: Tensor) -> tuple[Tensor, Tensor]:
    return -torch.sigmoid(-d_real) / d_real.numel(), torch.sigmoid(d_fake) / d_fake.numel()


def _ns_generator(d_fake: Tensor, d_real: Tensor | None = None) -> Tensor:
    """Non-saturating generator loss E[softplus(-D(G(z)))] (Goodfellow et al. 2014)."""
    return F.softplus(-d_fake).mean()


def _lsgan_critic(d_real: Tensor, d_fake: Tensor) -> Tensor:
    """0.5 E[(D(x) - 1)^2] + 0.5 E[D(G(z))^2], the 0-1 coding of Mao et al. 2017."""
    return 0.5 * (d_real - 1.0).pow(2).mean() + 0.5 * d_fake.pow(2).mean()


def _lsgan_critic_grad(d_real: Tensor, d_fake: Tensor) -> tuple[Tensor, Tensor]:
    return (d_real - 1.0) / d_real.numel(), d_fake / d_fake.numel()


def _lsgan_generator(d_fake: Tensor, d_real: Tensor | None = None) -> Tensor:
    return 0.5 * (d_fake - 1.0).pow(2).mean()


def _rp_critic(d_real: Tensor, d_fake: Tensor) -> Tensor:
    """E[softplus(-(D(x) - D(G(z))))] over pairs (x_i, G(z_i)) of one batch: the relativistic
    pairing loss as R3GAN's code applies it (R3GAN/Trainer.py, Huang et al. 2024)."""
    return F.softplus(d_fake - d_real).mean()


def _rp_critic_grad(d_real: Tensor, d_fake: Tensor) -> tuple[Tensor, Tensor]:
    g = torch.sigmoid(d_fake - d_real) / d_real.numel()
    return -g, g


def _rp_generator(d_fake: Tensor, d_real: Tensor | None = None) -> Tensor:
    """E[softplus(-(D(G(z)) - D(x)))], against a fresh real batch (R3GAN's generator phase)."""
    if d_real is None:
        raise ValueError("the relativistic pairing loss needs D on a real batch in the generator step")
    return F.softplus(d_real - d_fake).mean()


def centred_sign(d_real: Tensor, d_fake: Tensor) -> Tensor:
    """ADA's r_t = E[sign D(x)] (Karras et al. 2020): a logit of 0 is the loss's own boundary
    between real and fake (ns: p = 1/2; hinge: between its margins at +1 and -1)."""
    return torch.sign(d_real)


def lsgan_sign(d_real: Tensor, d_fake: Tensor) -> Tensor:
    """The 0-1 coding's boundary is 1/2."""
    return torch.sign(d_real - 0.5)


def paired_sign(d_real: Tensor, d_fake: Tensor) -> Tensor:
    """sign(D(x_i) - D(G(z_i))): a Wasserstein critic, and a relativistic one, is defined up to an
    added constant, so sign D(x) alone means nothing; what the loss compares is the difference,
    whose sign is ADA's heuristic made offset-free (R3GAN's code reports exactly this as
    Loss/signs/real)."""
    return torch.sign(d_real - d_fake)


_LOSSES: dict[str, Loss] = {
    "wasserstein": Loss(
        _wasserstein_critic, _wasserstein_generator, "Arjovsky et al. 2017", _wasserstein_critic_grad, paired_sign
    ),
    "hinge": Loss(
        _hinge_critic, _wasserstein_generator, "Lim & Ye 2017; Miyato et al. 2018", _hinge_critic_grad, centred_sign
    ),
    "ns": Loss(_ns_critic, _ns_generator, "Goodfellow et al. 2014 (non-saturating)", _ns_critic_grad, centred_sign),
    "lsgan": Loss(_lsgan_critic, _lsgan_generator, "Mao et al. 2017", _lsgan_critic_grad, lsgan_sign),
    "rpgan": Loss(
        _rp_critic, _rp_generator, "Huang et al. 2024 (R3GAN), relativistic pairing", _rp_critic_grad, paired_sign, True
    ),
}


def gap_stats(gap: float, loss: str) -> dict[str, float]:
    """E[D(real)] - E[D(fake)] as ganctl reports it: always the critic's gap, and for the
    Wasserstein loss alone also its estimate of W1 (times the critic's Lipschitz constant);
    under ns, hinge or lsgan the gap estimates no distance."""
    return {"critic_gap": gap, **({"wasserstein": gap} if loss == "wasserstein" else {})}


def available_losses() -> list[str]:
    return list(_LOSSES)


def get_loss(name: str) -> Loss:
    try:
        return _LOSSES[name]
    except KeyError:
        raise ConfigError(f"--loss {name!r} is not one of: {', '.join(available_losses())}") from None
