"""Pure tensor maths of gradient penalties. No optimizer, no `.backward()`, no printing.

`input_grads` is the one place the critic's input gradient is taken: training penalises it
and `ganctl gradnorm` measures it, so analysis sees exactly what training constrains.
"""

from __future__ import annotations

import torch
from torch import Tensor


def input_grads(
    critic: torch.nn.Module, x: Tensor, *, create_graph: bool = False, y: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Return (D(x), grad_x D(x)) for a batch; per-sample because the critic has no
    batch-coupled layer, so d(sum_i D(x_i))/dx_j = grad D(x_j). A conditional critic is taken at
    the fixed labels y: the gradient is with respect to x alone."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        out = critic(x) if y is None else critic(x, y)
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


def two_sided_penalty_grad(grads: Tensor, target: float = 1.0, one_sided: bool = False) -> Tensor:
    """d two_sided_penalty / d g = 2 (||g|| - k) g / (B ||g||) per sample (one-sided: the gap
    clamped at 0), and 0 where g = 0, as autograd takes the norm's derivative there."""
    norm = grad_norm(grads)
    gap = norm - target
    if one_sided:
        gap = gap.clamp(min=0.0)
    coef = torch.where(norm > 0, 2.0 * gap / (grads.shape[0] * norm), 0.0)
    return grads * coef.view((-1,) + (1,) * (grads.dim() - 1))


def zero_centred_penalty(grads: Tensor) -> Tensor:
    """E[||g||^2]: 0-GP on interpolates (Thanh-Tung et al. 2019), R1 on real and R2 on fake
    points (Mescheder et al. 2018) depending on where g was taken."""
    return grad_sq_norm(grads).mean()


def zero_centred_penalty_grad(grads: Tensor) -> Tensor:
    """d zero_centred_penalty / d g = 2 g / B."""
    return grads * (2.0 / grads.shape[0])


def penalty_points(
    at: str | None, real: Tensor, fake: Tensor, generator: torch.Generator | None = None
) -> dict[str, Tensor]:
    """The point sets a penalty at `at` (None | interp | real | fake | real+fake) needs input
    gradients on, by name ("interp", "real", "fake"), as fresh leaves that require grad.

    The engine's autograd path runs these through the critic in one forward, and the sets
    that are not penalised in another: the penalty's double backward then covers only the
    penalised rows. (One autograd forward over [real, fake, x_hat] would make both backward
    passes of the penalty run over all 3B rows; the benchmark measures that layout too. The
    hand-written MLP step of `fused_mlp` has no such cost and takes one forward.) Because the
    critic has no batch-coupled layer, the gradient of the summed output with respect to a
    leaf is the per-sample input gradient there.
    """
    if at is None:
        return {}
    if at == "interp":
        return {"interp": interpolate(real.detach(), fake.detach(), generator).requires_grad_(True)}
    if at not in ("real", "fake", "real+fake"):
        raise ValueError(f"unknown penalty point set {at!r}")
    sets = {"real": real, "fake": fake}
    return {name: sets[name].detach().requires_grad_(True) for name in at.split("+")}
