"""The penalised critic step of a plain ReLU / LeakyReLU MLP, with its backward written out.

For D(x) = W_L s(W_{L-1} ... s(W_1 x + b_1) ... ) + b_L with s piecewise linear, the input
gradient is a product of weights and slope patterns,

    grad_x D = W_1^T S_1 W_2^T S_2 ... S_{L-1} W_L^T,    S_k = diag(s'(z_k)),

and since s'' = 0 the patterns are constants of the penalty's derivative: d penalty / dW_k
runs through that product only (nothing through the forward pass, nothing to a bias). Autograd
gets the same numbers from the graph of a `create_graph=True` backward, at the price of that
graph and more, smaller operators (168 dispatched, 26 of them matrix products, for the default
2-D critic; 122 and 15 here), which dominates at the 2-D toy size. Here a step is four matrix
products per layer, each over all rows at once:

1. forward over F = [real, fake (, x_hat)];
2. one top-down pass over the rows [real, fake | penalised sets], seeded with dloss/dD on the
   loss rows and with 1 on the penalised ones: the loss's back-propagated errors delta_k and
   the penalty's a_k = dD/dz_k come out of the same products;
3. the penalty, and v = d penalty / d grad_x D in closed form (`Loss.critic_grad` and the
   strategies' `penalty_grads` likewise: autograd on these small tensors cost a fifth of the
   step);
4. one bottom-up pass of the adjoint e_k of a_k, whose weight gradient shares one product with
   the loss's: dW_k = [delta_k; a_k]^T [h_{k-1}; e_{k-1}].

The floating-point operations are those of the constant-slope autograd step (see
`models.activations`), so the arithmetic is the same up to summation order; a test checks the
loss, the penalty and every gradient against autograd.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from ganctl.methods.losses import Loss
from ganctl.models import activations

POINT_SETS = ("real", "fake", "interp")


class Layer(NamedTuple):
    weight: Tensor  # (out, in)
    bias: Tensor | None  # (out,)
    slope: float | None  # slope of the activation after this layer below zero; None: output layer


class Penalty(NamedTuple):
    """A gradient penalty as the hand-written step needs it."""

    value: Callable[[list[Tensor]], Tensor]  # the penalty from each penalised set's input gradients
    grads: Callable[[list[Tensor]], list[Tensor]]  # d penalty / d g for each set's gradients g
    scale: float = 1.0  # its weight in the step's objective (lazy regularisation's N)


class Step(NamedTuple):
    d_real: Tensor  # (B, 1)
    d_fake: Tensor  # (B, 1)
    loss: Tensor
    penalty: Tensor
    grads: list[Tensor]  # input gradients, one per penalised set, shaped like its points


def layers_of(critic: nn.Module) -> list[Layer] | None:
    """The critic as (weight, bias, slope) layers when it is exactly Linear, activation, ...,
    Linear with ReLU or LeakyReLU (slope in [0, 1)), one output, and nothing hooked or
    reparametrised (spectral norm, hooks and normalisation layers all go the autograd way). A
    leading flatten of every non-batch axis (an image MLP's) is allowed: the step flattens."""
    if type(critic) is not nn.Sequential or _hooked(critic):
        return None
    modules = list(critic)
    if modules and type(modules[0]) is nn.Flatten:
        if (modules[0].start_dim, modules[0].end_dim) != (1, -1) or _hooked(modules[0]):
            return None
        modules = modules[1:]
    if len(modules) % 2 != 1:
        return None
    layers = []
    for i in range(0, len(modules), 2):
        linear, act = modules[i], modules[i + 1] if i + 1 < len(modules) else None
        if not isinstance(linear, nn.Linear) or type(linear).forward is not nn.Linear.forward or _hooked(linear):
            return None
        slope = None if act is None else _slope(act)
        if act is not None and (slope is None or _hooked(act)):
            return None
        layers.append(Layer(linear.weight, linear.bias, slope))
    if layers[-1].weight.shape[0] != 1:
        return None
    return layers


def _slope(act: nn.Module) -> float | None:
    """The negative-side slope of torch's or ganctl's own ReLU / LeakyReLU (no other
    subclass: its forward could be anything)."""
    if type(act) in (nn.LeakyReLU, activations.LeakyReLU) and 0.0 <= act.negative_slope < 1.0:
        return float(act.negative_slope)
    if type(act) in (nn.ReLU, activations.ReLU):
        return 0.0
    return None


def _hooked(module: nn.Module) -> bool:
    return bool(
        parametrize.is_parametrized(module)
        or module._forward_hooks
        or module._forward_pre_hooks
        or module._backward_hooks
        or getattr(module, "_backward_pre_hooks", None)
    )


@torch.no_grad()
def critic_step(
    layers: list[Layer],
    real: Tensor,
    fake: Tensor,
    leaves: dict[str, Tensor],
    loss: Loss,
    penalty: Penalty,
    workspace: dict | None = None,
) -> Step:
    """loss.critic(D(real), D(fake)) + penalty.scale * penalty.value(input gradients at `leaves`),
    its gradient written to every weight's and bias's `.grad` (replacing what was there). The
    loss's and the penalty's own derivatives come in closed form (`loss.critic_grad`,
    `penalty.grads`: d penalty / d g per set). `leaves` maps point-set names ("real", "fake",
    "interp") to the penalised points; `real` and `fake` are (B, d) batches that carry no
    graph. A `workspace` dict, kept by the caller across steps, holds the row buffers so that
    they are allocated once (fresh memory costs page faults on every step, a large share of
    the step on a CPU)."""
    real, fake = real.flatten(1), fake.flatten(1)  # (B, d): an image MLP's critic flattens first
    b, names = real.shape[0], list(leaves)
    if not names or any(n not in POINT_SETS for n in names):
        raise ValueError(f"penalised point sets must be among {POINT_SETS}, got {names}")
    # Backward rows: real, fake (the loss), then one block per penalised set; each reads its
    # slope pattern from these forward rows (x_hat is forward rows 2B:3B).
    origin = {"real": 0, "fake": b, "interp": 2 * b}
    penalised = _merge([(i * b, origin[n], b) for i, n in enumerate(names)])  # (adjoint row, forward row, n)
    everything = _merge([(0, 0, 2 * b)] + [(2 * b + dst, src, n) for dst, src, n in penalised])
    buffer = _Buffers(workspace if workspace is not None else {}, real)
    # 1. Forward. hs[k] is the input of layer k; its rows past the loss's hold the adjoint later.
    points = [real, fake] + ([leaves["interp"].detach().flatten(1)] if "interp" in leaves else [])
    n_forward, n_rows = b * len(points), b * (2 + len(names))
    hs = [buffer("h", 0, n_rows, real.shape[1])]
    torch.cat(points, out=hs[0][:n_forward])
    for k, layer in enumerate(layers[:-1], start=1):
        h = buffer("h", k, n_rows, layer.weight.shape[0])
        _linear(hs[-1][:n_forward], layer, out=h[:n_forward])
        _activate_(h[:n_forward], layer.slope)
        hs.append(h)
    out = _linear(hs[-1][:n_forward], layers[-1])  # (n_forward, 1)

    d_real, d_fake = out[:b], out[b : 2 * b]
    seed_real, seed_fake = loss.critic_grad(d_real, d_fake)

    # 2. Top-down over every backward row: deltas[k] = d(objective) / d(output of layer k),
    # which on the penalised rows (seed 1) is a_k = dD/dz_k.
    deltas = [torch.cat([seed_real, seed_fake, seed_real.new_ones(b * len(names), 1)])]
    for k in range(len(layers) - 1, 0, -1):
        grad_h = torch.mm(deltas[-1], layers[k].weight, out=buffer("delta", k - 1, n_rows, layers[k].weight.shape[1]))
        deltas.append(_slope_backward(grad_h, hs[k], layers[k - 1].slope, everything, out=grad_h))
    deltas.reverse()
    x_grad = deltas[0][2 * b :] @ layers[0].weight  # (P, d): grad_x D at the penalised points

    # 3. The penalty, and its derivative with respect to the input gradients.
    grads = [x_grad[i * b : (i + 1) * b].view_as(leaves[n]) for i, n in enumerate(names)]
    value = penalty.value(grads)
    adjoint = torch.cat([g.flatten(1) for g in penalty.grads(grads)])  # (P, d)
    if penalty.scale != 1.0:
        adjoint.mul_(penalty.scale)

    # 4. Bottom-up: e_0 = d penalty / d grad_x D, e_k = (e_{k-1} W_{k-1}^T) * s'(z_{k-1}),
    # kept in the spare rows of hs[k] so that one product gives each weight's gradient.
    for k, (layer, delta) in enumerate(zip(layers, deltas)):
        if k > 0:
            adjoint = torch.mm(
                adjoint, layers[k - 1].weight.t(), out=buffer("adjoint", k, n_rows - 2 * b, hs[k].shape[1])
            )
            adjoint = _slope_backward(adjoint, hs[k], layers[k - 1].slope, penalised, out=hs[k][2 * b :])
        else:
            hs[0][2 * b :] = adjoint
        layer.weight.grad = _weight_grad(delta, hs[k])  # [delta; a]^T [h; e]: loss and penalty at once
        if layer.bias is not None:
            layer.bias.grad = delta[: 2 * b].sum(0)  # the penalty does not reach a bias
    return Step(d_real, d_fake, loss.critic(d_real, d_fake), value, grads)


class _Buffers:
    """Row buffers by role, layer and shape, reused from `workspace` when they fit."""

    def __init__(self, workspace: dict, like: Tensor):
        self.workspace, self.like = workspace, like

    def __call__(self, role: str, k: int, rows: int, cols: int) -> Tensor:
        key = (role, k, rows, cols, self.like.dtype, self.like.device)
        buf = self.workspace.get(key)
        if buf is None:
            buf = self.workspace[key] = self.like.new_empty(rows, cols)
        return buf


def _merge(segments: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    """Join (dst, src, n) row blocks that continue each other, so x_hat's rows and the loss's
    take one operator."""
    merged = [segments[0]]
    for dst, src, n in segments[1:]:
        d0, s0, n0 = merged[-1]
        if d0 + n0 == dst and s0 + n0 == src:
            merged[-1] = (d0, s0, n0 + n)
        else:
            merged.append((dst, src, n))
    return merged


def _linear(x: Tensor, layer: Layer, out: Tensor | None = None) -> Tensor:
    if layer.bias is None:
        return torch.mm(x, layer.weight.t(), out=out)
    return torch.addmm(layer.bias, x, layer.weight.t(), out=out)


def _weight_grad(delta: Tensor, h: Tensor) -> Tensor:
    """delta^T h, (out, in). With few inputs (the first layer on 2-D points) the product is
    taken as (h^T delta)^T: BLAS runs a (2, N) x (N, 128) product a few times faster than a
    (128, N) x (N, 2) one."""
    if h.shape[1] < delta.shape[1]:
        return (h.t() @ delta).t().contiguous()
    return delta.t() @ h


def _activate_(h: Tensor, slope: float) -> None:
    if slope:
        torch.nn.functional.leaky_relu_(h, slope)
    else:
        h.clamp_min_(0.0)  # what torch.relu computes


def _slope_backward(grad: Tensor, h: Tensor, slope: float, segments: list[tuple[int, int, int]], out: Tensor) -> Tensor:
    """out[dst] = grad[dst] * s'(z) where h[src] = s(z), for each (dst, src, n) block: the same
    kernels autograd runs for ReLU and LeakyReLU. `out` may be `grad` or h's own rows."""
    for dst, src, n in segments:
        g, pattern, o = grad[dst : dst + n], h[src : src + n], out[dst : dst + n]
        if slope:
            torch.ops.aten.leaky_relu_backward.grad_input(g, pattern, slope, True, grad_input=o)
        else:
            torch.ops.aten.threshold_backward.grad_input(g, pattern, 0, grad_input=o)
    return out
