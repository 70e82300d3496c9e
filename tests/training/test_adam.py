"""The direct fused-Adam step against torch.optim's own: the same bits, step after step."""

from __future__ import annotations

import pytest
import torch

from ganctl.training import adam


def _twins(**settings):
    torch.manual_seed(0)
    shapes = [(7, 3), (7,), (1, 7), (1,)]
    a = [torch.nn.Parameter(torch.randn(*s)) for s in shapes]
    b = [torch.nn.Parameter(p.detach().clone()) for p in a]
    return (a, torch.optim.Adam(a, **settings)), (b, torch.optim.Adam(b, **settings))


@pytest.mark.parametrize(
    "settings",
    [
        {"lr": 1e-3, "betas": (0.5, 0.9), "fused": True},
        {"lr": 2e-4, "betas": (0.0, 0.99), "fused": True, "eps": 1e-6},
        {"lr": 1e-3, "betas": (0.5, 0.9), "fused": True, "amsgrad": True},  # falls back to opt.step
        {"lr": 1e-3, "betas": (0.5, 0.9), "foreach": True},  # not fused: falls back
    ],
)
def test_same_bits_as_torch_with_a_changing_lr_and_beta2(settings):
    (a, opt_a), (b, opt_b) = _twins(**settings)
    rng = torch.Generator().manual_seed(1)
    for i in range(6):
        for group in (opt_a.param_groups[0], opt_b.param_groups[0]):  # what the schedules do
            group["lr"] = settings["lr"] * (1 - i / 10)
            group["betas"] = (group["betas"][0], 0.9 + 0.01 * i)
        grads = [torch.randn(p.shape, generator=rng) for p in a]
        for params, grad in ((a, grads), (b, grads)):
            for p, g in zip(params, grad):
                p.grad = g.clone()
        opt_a.step()
        adam.step(opt_b)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    for x, y in zip(a, b):
        sa, sb = opt_a.state[x], opt_b.state[y]
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    direct = bool(settings.get("fused")) and not settings.get("amsgrad")
    assert adam.direct(opt_b) is direct  # the path the test meant to cover was the one taken


def test_a_missing_gradient_is_left_to_torch():
    (a, opt_a), (b, opt_b) = _twins(lr=1e-3, fused=True)
    for params, opt in ((a, opt_a), (b, opt_b)):
        for p in params:
            p.grad = torch.ones_like(p)
        opt.step()  # every parameter has its state now
        params[0].grad = None
    assert not adam.direct(opt_b)
    opt_a.step()
    adam.step(opt_b)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
