"""The critics' activations: plain values everywhere, and inside `constant_slope()` a double
backward that gives the same penalty gradients without re-entering the forward graph."""

import pytest
import torch
from conftest import central_difference
from torch import nn
from torch.nn import functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from ganctl.methods import penalties
from ganctl.models import activations


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(2, 16), activations.ReLU(), nn.Linear(16, 16), activations.ReLU(), nn.Linear(16, 1))


def conv() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 4, 2, 1),
        activations.LeakyReLU(0.2),
        nn.Conv2d(8, 8, 4, 2, 1),
        activations.LeakyReLU(0.2),
        nn.Flatten(),
        nn.Linear(8 * 2 * 2, 1),
    )


@pytest.mark.parametrize("slope", [0.0, 0.2])
def test_values_and_first_derivative_are_the_plain_ones(slope):
    x = torch.randn(64, 5, requires_grad=True)
    plain = F.leaky_relu(x, slope) if slope else F.relu(x)
    (g_plain,) = torch.autograd.grad(plain.pow(2).sum(), x)
    with activations.constant_slope():
        mine = activations.leaky_relu(x, slope) if slope else activations.relu(x)
        (g_mine,) = torch.autograd.grad(mine.pow(2).sum(), x)
    assert torch.equal(mine, plain) and torch.equal(g_mine, g_plain)
    assert isinstance(activations.ReLU(), nn.ReLU) and isinstance(activations.LeakyReLU(), nn.LeakyReLU)


class CountProducts(TorchDispatchMode):
    """Counts matrix products and convolutions (forward or backward kernels) that run."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += func.__name__.split(".")[0] in ("mm", "addmm", "convolution", "convolution_backward")
        return func(*args, **(kwargs or {}))


def penalty_grads(critic: nn.Module, x: torch.Tensor, constant: bool) -> tuple[list[torch.Tensor], int]:
    """The gp penalty's weight gradients, and the products its backward ran."""
    x = x.clone().requires_grad_(True)
    critic.zero_grad(set_to_none=True)
    with activations.constant_slope() if constant else torch.enable_grad():
        (g,) = torch.autograd.grad(critic(x).sum(), x, create_graph=True)
    with CountProducts() as counter:
        penalties.two_sided_penalty(g).backward()
    # (a bias moves only the slope pattern, so the penalty's gradient there is zero or None)
    return [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in critic.parameters()], counter.count


@pytest.mark.parametrize("build,shape", [(mlp, (32, 2)), (conv, (8, 3, 8, 8))])
def test_penalty_gradients_equal_the_plain_double_backward(build, shape):
    torch.manual_seed(0)
    critic, x = build().double(), torch.randn(shape, dtype=torch.float64)
    plain, plain_work = penalty_grads(critic, x, constant=False)
    mine, mine_work = penalty_grads(critic, x, constant=True)
    for a, b in zip(plain, mine):
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-14)
    # Autograd's plain double backward also sends exact zeros back through the forward
    # graph (two products per layer); the constant-slope backward does not.
    assert mine_work < plain_work


def test_penalty_gradients_match_finite_differences():
    # An independent check of the constant-slope double backward: central differences of the
    # gp penalty in a few weights of a ReLU critic (in float64, away from kinks).
    torch.manual_seed(1)
    critic, x = mlp().double(), torch.randn(16, 2, dtype=torch.float64)

    def pen() -> torch.Tensor:
        x_ = x.clone().requires_grad_(True)
        with torch.enable_grad(), activations.constant_slope():
            (g,) = torch.autograd.grad(critic(x_).sum(), x_, create_graph=True)
        return penalties.two_sided_penalty(g)

    w = critic[2].weight
    (analytic,) = torch.autograd.grad(pen(), w)
    for idx in [(0, 0), (5, 3), (11, 7)]:
        numeric = central_difference(pen, w, idx, h=1e-7)
        assert abs(numeric - float(analytic[idx])) < 1e-6 * max(1.0, abs(float(analytic[idx])))
