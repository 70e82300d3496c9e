"""ReLU and LeakyReLU for critics, with a cheaper double backward inside a penalised pass.

A piecewise-linear activation has second derivative zero almost everywhere, and autograd
knows it: the derivative of `threshold_backward` with respect to the activation is
`zeros_like`. But it still sends those zeros back through the whole forward graph of the
penalised points: one more backward pass (two matrix products per layer) that adds exactly
nothing to any gradient. Inside `constant_slope()` these activations instead record their
backward as "multiply by a slope held constant", so the penalty's double backward stops at
the activation. The forward values and every gradient are the same; only the zeros are not
computed. Outside the context (generator steps, unpenalised passes, `ganctl gradnorm`) they
are plain `torch.nn` activations with no extra cost, and they stay instances of `nn.ReLU` and
`nn.LeakyReLU` for anything that inspects the model.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

import torch
from torch import Tensor, nn
from torch.nn import functional as F

_CONSTANT_SLOPE = contextvars.ContextVar("ganctl_constant_slope", default=False)


@contextlib.contextmanager
def constant_slope() -> Iterator[None]:
    """Critic activations called in this block treat their slope as a constant of the
    second differentiation (exact for ReLU and LeakyReLU: their second derivative is zero)."""
    token = _CONSTANT_SLOPE.set(True)
    try:
        yield
    finally:
        _CONSTANT_SLOPE.reset(token)


class _PiecewiseLinear(torch.autograd.Function):
    """leaky_relu(x, slope) (ReLU at slope 0) whose backward multiplies the incoming
    gradient by the slope pattern of the output, read from a detached copy: differentiating
    that backward again reaches the incoming gradient only, never the forward graph."""

    @staticmethod
    def forward(ctx, x: Tensor, slope: float) -> Tensor:  # type: ignore[override]
        out = F.leaky_relu(x, slope) if slope else F.relu(x)
        ctx.save_for_backward(out)
        ctx.slope = slope
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        (out,) = ctx.saved_tensors
        pattern = out.detach()  # the sign pattern, a constant for a second differentiation
        if ctx.slope:
            return torch.ops.aten.leaky_relu_backward(grad, pattern, ctx.slope, True), None
        return torch.ops.aten.threshold_backward(grad, pattern, 0), None


def relu(x: Tensor) -> Tensor:
    return _PiecewiseLinear.apply(x, 0.0) if _CONSTANT_SLOPE.get() else F.relu(x)


def leaky_relu(x: Tensor, slope: float) -> Tensor:
    return _PiecewiseLinear.apply(x, slope) if _CONSTANT_SLOPE.get() else F.leaky_relu(x, slope)


class ReLU(nn.ReLU):
    def forward(self, x: Tensor) -> Tensor:
        return relu(x)


class LeakyReLU(nn.LeakyReLU):
    def forward(self, x: Tensor) -> Tensor:
        return leaky_relu(x, self.negative_slope)
