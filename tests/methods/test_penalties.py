import math

import pytest
import torch
from conftest import Linear, central_difference
from torch.testing import assert_close

from ganctl.methods import penalties


def test_linear_critic_has_gradient_w_everywhere():
    w = torch.tensor([3.0, -4.0])
    x = torch.randn(10, 2)
    out, grads = penalties.input_grads(Linear(w), x)
    assert_close(grads, w.expand(10, 2))
    assert_close(penalties.grad_norm(grads), torch.full((10,), 5.0))


@pytest.mark.parametrize("target", [1.0, 0.5, 2.0])
def test_two_sided_penalty_of_linear_critic_is_closed_form(target):
    w = torch.tensor([0.6, 0.8, 2.0])
    _, grads = penalties.input_grads(Linear(w), torch.randn(7, 3))
    expected = (w.norm() - target) ** 2
    assert_close(penalties.two_sided_penalty(grads, target), expected)


def test_one_sided_penalty_ignores_norms_below_target():
    small = torch.tensor([[0.3, 0.4]])  # norm 0.5
    large = torch.tensor([[3.0, 4.0]])  # norm 5
    assert penalties.two_sided_penalty(small.expand(4, 2), 1.0, one_sided=True) == 0
    assert_close(penalties.two_sided_penalty(small, 1.0, one_sided=False), torch.tensor(0.25))
    assert_close(penalties.two_sided_penalty(large, 1.0, one_sided=True), torch.tensor(16.0))


def test_image_shaped_norm_runs_over_all_non_batch_axes():
    # A linear critic on (B, C, H, W): the per-sample norm is ||w|| over C*H*W. The classic
    # bug, norm(dim=1) on a 4-D tensor, would give an (B, H, W) tensor of channel norms.
    w = torch.randn(3, 5, 4)
    x = torch.randn(6, 3, 5, 4)
    _, grads = penalties.input_grads(Linear(w), x)
    norms = penalties.grad_norm(grads)
    assert norms.shape == (6,)
    assert_close(norms, torch.full((6,), float(w.norm())))
    assert_close(penalties.two_sided_penalty(grads), (w.norm() - 1) ** 2)


def test_zero_centred_penalty_is_squared_norm_and_finite_at_zero():
    w = torch.tensor([1.0, 2.0, 2.0])
    _, grads = penalties.input_grads(Linear(w), torch.randn(5, 3))
    assert_close(penalties.zero_centred_penalty(grads), torch.tensor(9.0))
    g = torch.zeros(4, 3, requires_grad=True)
    penalties.zero_centred_penalty(g).backward()
    assert torch.isfinite(g.grad).all() and (g.grad == 0).all()


def test_interpolate_uses_one_coefficient_per_sample():
    real = torch.zeros(500, 3, 2, 2)
    fake = torch.ones(500, 3, 2, 2)
    x_hat = penalties.interpolate(real, fake, torch.Generator().manual_seed(0))
    per_sample = x_hat.flatten(1)
    # each sample is one constant (1 - e) across all its axes
    assert_close(per_sample.min(dim=1).values, per_sample.max(dim=1).values)
    e = 1 - per_sample[:, 0]
    assert e.min() >= 0 and e.max() <= 1
    assert abs(float(e.mean()) - 0.5) < 0.05  # U[0, 1]
    assert abs(float(e.var()) - 1 / 12) < 0.01


def test_penalty_weight_gradient_matches_finite_differences():
    torch.manual_seed(0)
    critic = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)).double()
    x = torch.randn(5, 2, dtype=torch.float64)

    def pen() -> torch.Tensor:
        _, g = penalties.input_grads(critic, x, create_graph=True)
        return penalties.two_sided_penalty(g)

    w = critic[0].weight
    (analytic,) = torch.autograd.grad(pen(), w)
    for idx in [(0, 0), (3, 1), (7, 0)]:
        numeric = central_difference(pen, w, idx, h=1e-6)
        assert math.isclose(float(analytic[idx]), numeric, rel_tol=1e-5, abs_tol=1e-8)


@pytest.mark.parametrize(
    "at,names",
    [(None, []), ("interp", ["interp"]), ("real", ["real"]), ("fake", ["fake"]), ("real+fake", ["real", "fake"])],
)
def test_penalty_points(at, names):
    real, fake = torch.randn(4, 2), torch.randn(4, 2)
    leaves = penalties.penalty_points(at, real, fake)
    assert list(leaves) == names
    assert all(leaf.requires_grad and leaf.is_leaf for leaf in leaves.values())
    for name in set(names) & {"real", "fake"}:
        assert torch.equal(leaves[name], {"real": real, "fake": fake}[name])
    assert not real.requires_grad and not fake.requires_grad  # the caller's tensors are left alone


@pytest.mark.parametrize("target,one_sided", [(1.0, False), (0.5, False), (1.0, True)])
def test_two_sided_penalty_grad_is_autograd_s_derivative(target, one_sided):
    # Rows below, above and at the target, and a zero gradient (norm 0: autograd gives 0).
    g = torch.randn(6, 3, 4, 4, dtype=torch.float64) * torch.tensor([0.01, 0.1, 1.0, 3.0, 0.0, 1.0]).view(6, 1, 1, 1)
    g[5] /= penalties.grad_norm(g[5:6])  # exactly on the target norm 1
    g.requires_grad_(True)
    (want,) = torch.autograd.grad(penalties.two_sided_penalty(g, target, one_sided), g)
    got = penalties.two_sided_penalty_grad(g.detach(), target, one_sided)
    assert_close(got, want, rtol=1e-12, atol=1e-15)
    assert torch.all(got[4] == 0)


def test_zero_centred_penalty_grad_is_autograd_s_derivative():
    g = torch.randn(5, 2, dtype=torch.float64, requires_grad=True)
    (want,) = torch.autograd.grad(penalties.zero_centred_penalty(g), g)
    assert_close(penalties.zero_centred_penalty_grad(g.detach()), want, rtol=1e-12, atol=1e-15)
