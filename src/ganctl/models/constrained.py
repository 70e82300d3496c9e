"""Critics that are Lipschitz by construction.

- `GradientNormalized` (Wu et al. 2021, "Gradient Normalization for Generative Adversarial
  Networks"; basiclab/GNGAN-PyTorch, models/gradnorm.py): D(x) = f(x) / (||grad_x f(x)|| +
  |f(x)|). |D| < 1 everywhere, and where f is piecewise linear (ReLU / LeakyReLU networks) the
  Hessian of f vanishes almost everywhere, so ||grad D|| = ||grad f||^2 / (||grad f|| + |f|)^2 <= 1
  inside every linear region: D is piecewise 1-Lipschitz. It is not globally Lipschitz (D jumps
  where f's gradient does), so no layer-wise bound applies. Computing D takes grad f with
  create_graph, so training it is a double backward, as a gradient penalty is.
- `Bjorck`, a parametrization (`torch.nn.utils.parametrize`) that orthonormalises a weight in
  every forward by Björck and Bowie's iteration W <- (1 + b) W - b W W^T W (b = 1/2, order 1:
  Anil, Lucas and Grosse 2019; cemanil/LNets, bjorck_linear.py). The iteration maps each singular
  value s to s (3 - s^2) / 2 and converges to 1 from any s in (0, sqrt 3): when ||W^T W - I||_F
  < 1 every s is in (0, sqrt 2) already, and otherwise W is first divided by its largest singular
  value (computed exactly, without gradient: the orthonormal factor does not depend on the
  scale). LNets
  runs a fixed 20 iterations; here the iteration runs until ||W^T W - I||_F < 1e-4, then once
  more (the convergence is quadratic: the singular values end within float32 rounding of 1), at
  most 40 times, and `Orthonormal.after_critic_step` re-projects the stored weight after each
  optimizer step (the critic's function does not change: an orthonormal matrix is its own
  orthonormal factor), so that each forward needs a few iterations instead of 20.
- `MaxMin`, GroupSort with groups of two: each pair of units is sorted, (max, min). A
  permutation of its input in every region, so it preserves gradient norms.

An MLP of Björck layers and MaxMin is 1-Lipschitz and gradient-norm preserving: each layer's
singular values are 1 (within the iteration's convergence, which `ganctl gradnorm` measures by
the orthonormalised matrices' exact SVD rather than assuming it).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

BJORCK_MAX_ITERATIONS = 40  # LNets' dual networks ran 20 (its GAN 12) from any weight
BJORCK_TOLERANCE = 1e-4  # on ||W^T W - I||_F, after which one more iteration
BJORCK_BETA = 0.5


class GradientNormalized(nn.Module):
    """D(x) = f(x) / (||grad_x f(x)|| + |f(x)|) for a critic f (and f(x, y) at fixed labels)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        differentiate = torch.is_grad_enabled()  # whoever asked will differentiate D: keep grad f's graph
        with torch.enable_grad():
            inputs = x if x.requires_grad else x.detach().requires_grad_(True)
            f = self.net(inputs) if y is None else self.net(inputs, y)
            (grad,) = torch.autograd.grad(f.sum(), inputs, create_graph=differentiate)
        norm = torch.linalg.vector_norm(grad.flatten(1), dim=1).view(-1, *([1] * (f.dim() - 1)))
        out = f / (norm + f.abs())
        return out if differentiate else out.detach()

    def forward_all(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor | None]:
        """With an AC-GAN critic inside: the normalised value, and the classifier's logits."""
        value = self.forward(x, y)
        _, logits = self.net.forward_all(x, y)
        return value, logits


def bjorck_orthonormalize(
    w: Tensor, max_iterations: int = BJORCK_MAX_ITERATIONS, tol: float = BJORCK_TOLERANCE, beta: float = BJORCK_BETA
) -> Tensor:
    """The orthonormal factor of w (the nearest matrix with orthonormal rows or columns)."""
    tall = w.shape[0] >= w.shape[1]
    eye = torch.eye(min(w.shape), dtype=w.dtype, device=w.device)

    def gram(m: Tensor) -> tuple[Tensor, float]:
        g = m.t() @ m if tall else m @ m.t()
        return g, float(torch.linalg.matrix_norm(g.detach() - eye))

    g, distance = gram(w)
    if not distance < 1:  # singular values outside (0, sqrt 2): scale by the largest, exactly
        w = w / torch.linalg.matrix_norm(w.detach().double(), ord=2).to(w.dtype).clamp_min(1e-12)
        g, distance = gram(w)
    for _ in range(max_iterations):  # W <- (1 + b) W - b W G, G the smaller Gram matrix
        w = (1 + beta) * w - beta * (w @ g if tall else g @ w)
        if distance < tol:  # converged before this last iteration, which squares the error
            break
        g, distance = gram(w)
    return w


class Bjorck(nn.Module):
    """A weight parametrization: the Björck-orthonormalised weight."""

    def forward(self, weight: Tensor) -> Tensor:
        return bjorck_orthonormalize(weight)


class MaxMin(nn.Module):
    """GroupSort with groups of two (Anil et al. 2019): (a, b) -> (max(a, b), min(a, b)) per pair."""

    def forward(self, x: Tensor) -> Tensor:
        pairs = x.unflatten(-1, (-1, 2))
        return torch.stack([pairs.amax(dim=-1), pairs.amin(dim=-1)], dim=-1).flatten(-2)


def orthonormal_groupsort(critic: nn.Module) -> nn.Module:
    """Make an MLP critic an orthonormal GroupSort network in place: every ReLU / LeakyReLU a
    MaxMin, every linear layer's weight orthogonally initialised and Björck-parametrized."""
    for module in critic.modules():
        for name, child in module.named_children():
            if isinstance(child, (nn.ReLU, nn.LeakyReLU)):
                setattr(module, name, MaxMin())
    for layer in critic.modules():
        if isinstance(layer, nn.Linear):
            if layer.out_features > 1 and layer.out_features % 2:
                raise ValueError(f"MaxMin pairs units: a layer of {layer.out_features} outputs has an odd one out")
            with torch.no_grad():
                nn.init.orthogonal_(layer.weight)
            parametrize.register_parametrization(layer, "weight", Bjorck())
    return critic


def _bjorck_layers(module: nn.Module) -> list[nn.Module]:
    return [
        layer
        for layer in module.modules()
        if parametrize.is_parametrized(layer, "weight")
        and any(isinstance(p, Bjorck) for p in layer.parametrizations["weight"])
    ]


def has_bjorck(module: nn.Module) -> bool:
    return bool(_bjorck_layers(module))


@torch.no_grad()
def reproject(critic: nn.Module) -> None:
    """Set every Björck layer's stored weight to its orthonormal factor (the function is unchanged)."""
    for layer in _bjorck_layers(critic):
        original = layer.parametrizations["weight"].original
        original.copy_(bjorck_orthonormalize(original))
