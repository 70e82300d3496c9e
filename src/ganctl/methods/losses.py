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
    generator: Callable[[Tensor], Tensor]
    source: str
    # d critic / d D(x) and d critic / d D(G(z)) per sample, in closed form (the hand-written
    # MLP step seeds its backward with them; autograd's agree, which a test checks).
    critic_grad: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]


def _wasserstein_critic(d_real: Tensor, d_fake: Tensor) -> Tensor:
    """-(E[D(x)] - E[D(G(z))]): the negated Kantorovich-Rubinstein estimate (Arjovsky 2017)."""
    return d_fake.mean() - d_real.mean()


def _wasserstein_generator(d_fake: Tensor) -> Tensor:
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


def _ns_generator(d_fake: Tensor) -> Tensor:
    """Non-saturating generator loss E[softplus(-D(G(z)))] (Goodfellow et al. 2014)."""
    return F.softplus(-d_fake).mean()


def _lsgan_critic(d_real: Tensor, d_fake: Tensor) -> Tensor:
    """0.5 E[(D(x) - 1)^2] + 0.5 E[D(G(z))^2], the 0-1 coding of Mao et al. 2017."""
    return 0.5 * (d_real - 1.0).pow(2).mean() + 0.5 * d_fake.pow(2).mean()


def _lsgan_critic_grad(d_real: Tensor, d_fake: Tensor) -> tuple[Tensor, Tensor]:
    return (d_real - 1.0) / d_real.numel(), d_fake / d_fake.numel()


def _lsgan_generator(d_fake: Tensor) -> Tensor:
    return 0.5 * (d_fake - 1.0).pow(2).mean()


_LOSSES: dict[str, Loss] = {
    "wasserstein": Loss(_wasserstein_critic, _wasserstein_generator, "Arjovsky et al. 2017", _wasserstein_critic_grad),
    "hinge": Loss(_hinge_critic, _wasserstein_generator, "Lim & Ye 2017; Miyato et al. 2018", _hinge_critic_grad),
    "ns": Loss(_ns_critic, _ns_generator, "Goodfellow et al. 2014 (non-saturating)", _ns_critic_grad),
    "lsgan": Loss(_lsgan_critic, _lsgan_generator, "Mao et al. 2017", _lsgan_critic_grad),
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
