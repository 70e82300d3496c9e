"""Pure tensor maths of gradient penalties. No optimizer, no `.backward()`, no printing.

`input_grads` is the one place the critic's input gradient is taken: training penalises it
and `ganctl gradnorm` measures it, so analysis sees exactly what training constrains.
"""

from __future__ import annotations

import torch
from torch import Tensor


def input_grads(
    critic: torch.nn.Module, x: Tensor, *, create_graph: bool = False
) -> tuple[Tensor, Tensor]:
    """Return (D(x), grad_x D(x)) for a batch; per-sample because the critic has no
    batch-coupled layer, so d(sum_i D(x_i))/dx_j = grad D(x_j)."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        out = critic(x)
        (grads,) = torch.autograd.grad(out.sum(), x, create_graph=create_graph)
    return out, grads


def grad_norm(grads: Tensor) -> Tensor:
    """Per-sample L2 norm over every non-batch axis: (B, ...) -> (B,). On images this is the
    norm over C*H*W, never over the channel axis alone."""
    return torch.linalg.vector_norm(grads.flatten(1), dim=1)


def grad_sq_norm(grads: Tensor) -> Tensor:
    """Per-sample squared norm ||g||^2, taken without a square root so that its gradient is
    finite at g = 0 (where a zero-centred penalty drives it)."""
    return grads.flatten(1).pow(2).sum(dim=1)


def interpolate(real: Tensor, fake: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """x_hat = e * x_real + (1 - e) * x_fake with one e ~ U[0, 1] per sample (Gulrajani et al.
    2017, Alg. 1), shaped (B, 1, ..., 1) to broadcast over the sample's axes."""
    shape = (real.shape[0],) + (1,) * (real.dim() - 1)
    eps = torch.rand(shape, generator=generator, device=real.device, dtype=real.dtype)
    return torch.lerp(fake, real, eps)


def two_sided_penalty(grads: Tensor, target: float = 1.0, one_sided: bool = False) -> Tensor:
    """E[(||g|| - k)^2] (WGAN-GP), or E[max(0, ||g|| - k)^2] when one-sided (WGAN-LP)."""
    gap = grad_norm(grads) - target
    if one_sided:
        gap = gap.clamp(min=0.0)
    return gap.pow(2).mean()


def zero_centred_penalty(grads: Tensor) -> Tensor:
    """E[||g||^2]: 0-GP on interpolates (Thanh-Tung et al. 2019), R1 on real and R2 on fake
    points (Mescheder et al. 2018) depending on where g was taken."""
    return grad_sq_norm(grads).mean()


def penalty_inputs(
    at: str | None, real: Tensor, fake: Tensor, generator: torch.Generator | None = None
) -> tuple[list[Tensor], list[Tensor]]:
    """The critic's inputs for one step, [real, fake] or [real, fake, x_hat], and the leaves
    whose input gradients the penalty needs (`at`: None | interp | real | fake | real+fake).

    All go through the critic in one forward; because the critic has no batch-coupled layer,
    the gradient of the summed output with respect to a leaf is the per-sample input gradient
    there, so the penalty needs no second forward.
    """
    real, fake = real.detach(), fake.detach()
    if at is None:
        return [real, fake], []
    if at == "interp":
        x_hat = interpolate(real, fake, generator).requires_grad_(True)
        return [real, fake, x_hat], [x_hat]
    if at not in ("real", "fake", "real+fake"):
        raise ValueError(f"unknown penalty point set {at!r}")
    real.requires_grad_(at in ("real", "real+fake"))
    fake.requires_grad_(at in ("fake", "real+fake"))
    return [real, fake], [t for t in (real, fake) if t.requires_grad]
