"""The hand-written penalised step of a plain MLP critic against autograd's (float64, plain
torch activations, one forward per point set), against finite differences, and the rules for
which critics take it."""

import itertools

import pytest
import torch
from conftest import central_difference, fused_and_autograd_stats, small
from torch import nn

from ganctl.methods import penalties
from ganctl.methods.losses import get_loss
from ganctl.methods.resolve import resolve
from ganctl.training import fused_mlp
from ganctl.training.engine import Trainer


def critic(depth: int, slope: float, bias: bool = True, d: int = 3, width: int = 16) -> nn.Sequential:
    torch.manual_seed(depth * 10 + int(slope * 10) + bias)
    layers: list[nn.Module] = []
    for i in range(depth):
        layers += [nn.Linear(d if i == 0 else width, width, bias=bias), nn.LeakyReLU(slope) if slope else nn.ReLU()]
    layers.append(nn.Linear(width if depth else d, 1, bias=bias))
    return nn.Sequential(*layers).double()


def gp(grads):  # lambda * E[(||g|| - 1)^2] per set, summed over sets
    return 10.0 * sum(penalties.two_sided_penalty(g) for g in grads)


def gp_grads(grads):
    return [10.0 * penalties.two_sided_penalty_grad(g) for g in grads]


def zero_centred(grads):
    return 5.0 * sum(penalties.zero_centred_penalty(g) for g in grads)


def zero_centred_grads(grads):
    return [5.0 * penalties.zero_centred_penalty_grad(g) for g in grads]


def fused(net, real, fake, leaves, loss, penalty, scale=1.0, workspace=None):
    """The hand-written step with `penalty` (gp or zero_centred) and its closed-form derivative."""
    grads_of = gp_grads if penalty is gp else zero_centred_grads
    terms = fused_mlp.Penalty(penalty, grads_of, scale)
    return fused_mlp.critic_step(fused_mlp.layers_of(net), real, fake, leaves, get_loss(loss), terms, workspace)


def batches(b: int = 9, d: int = 3, at: str = "interp", seed: int = 7):
    g = torch.Generator().manual_seed(seed)
    real = torch.randn(b, d, generator=g, dtype=torch.float64)
    fake = torch.randn(b, d, generator=g, dtype=torch.float64) + 1.0
    return real, fake, penalties.penalty_points(at, real, fake, g)


def autograd_step(net, real, fake, leaves, loss_fn, penalty_fn, scale):
    """The textbook step: a forward per point set, input gradients with create_graph."""
    net.zero_grad(set_to_none=True)
    points = {n: x.detach().clone().requires_grad_(True) for n, x in leaves.items()}
    d_real, d_fake = net(points.get("real", real)), net(points.get("fake", fake))
    outs = {"real": d_real, "fake": d_fake}
    grads = [
        torch.autograd.grad((outs[n] if n in outs else net(x)).sum(), x, create_graph=True)[0]
        for n, x in points.items()
    ]
    loss, penalty = loss_fn(d_real, d_fake), penalty_fn(grads)
    (loss + scale * penalty).backward()
    return loss.detach(), penalty.detach(), [g.detach() for g in grads], [p.grad.clone() for p in net.parameters()]


CASES = list(
    itertools.product([0.0, 0.2], ["interp", "real", "fake", "real+fake"], ["wasserstein", "ns", "hinge", "lsgan"])
)


@pytest.mark.parametrize("slope,at,loss", CASES)
@pytest.mark.parametrize("depth,bias", [(1, True), (3, True), (2, False)])
def test_the_step_equals_autograd(slope, at, loss, depth, bias):
    net = critic(depth, slope, bias)
    real, fake, leaves = batches(at=at)
    penalty = gp if at == "interp" else zero_centred
    want_loss, want_penalty, want_grads, want_weights = autograd_step(
        net, real, fake, leaves, get_loss(loss).critic, penalty, 3.0
    )
    net.zero_grad(set_to_none=True)
    step = fused(net, real, fake, leaves, loss, penalty, scale=3.0)
    exact = dict(rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(step.loss, want_loss, **exact)
    torch.testing.assert_close(step.penalty, want_penalty, **exact)
    torch.testing.assert_close(step.d_real, net(real), **exact)
    for got, want in zip(step.grads, want_grads):
        torch.testing.assert_close(got, want, **exact)
    for p, want in zip(net.parameters(), want_weights):
        torch.testing.assert_close(p.grad, want, **exact)


def test_weight_gradients_match_finite_differences():
    # Independent of autograd's double backward: perturb one weight, redo the whole objective
    # (the penalty's input gradient by autograd at fixed weights), difference the results.
    net = critic(2, 0.2)
    real, fake, leaves = batches()
    x_hat = leaves["interp"]

    @torch.enable_grad()
    def objective():
        x = x_hat.detach().clone().requires_grad_(True)
        (g,) = torch.autograd.grad(net(x).sum(), x)
        return get_loss("wasserstein").critic(net(real), net(fake)) + gp([g])

    fused(net, real, fake, leaves, "wasserstein", gp)
    for param, index in (
        (net[0].weight, (3, 1)),
        (net[2].weight, (5, 7)),
        (net[4].weight, (0, 2)),
        (net[2].bias, (4,)),
    ):
        numeric = central_difference(objective, param.data, index, 1e-6)
        assert abs(float(param.grad[index]) - numeric) < 1e-6 * max(1.0, abs(numeric))


def test_the_workspace_is_reused_and_leaks_nothing_between_steps():
    net = critic(3, 0.0)
    workspace: dict = {}
    for seed, b in enumerate((9, 9, 5, 9)):  # new points every step: stale rows would show
        real, fake, leaves = batches(b=b, seed=seed)
        want_loss, want_penalty, _, want = autograd_step(
            net, real, fake, leaves, get_loss("wasserstein").critic, gp, 1.0
        )
        net.zero_grad(set_to_none=True)
        before = dict(workspace)
        step = fused(net, real, fake, leaves, "wasserstein", gp, workspace=workspace)
        if b == 9 and before:  # the same shapes: the same buffers, nothing new allocated
            assert workspace.keys() == before.keys() and all(workspace[k] is before[k] for k in before)
        torch.testing.assert_close(step.loss, want_loss, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(step.penalty, want_penalty, rtol=1e-10, atol=1e-12)
        for p, w in zip(net.parameters(), want):
            torch.testing.assert_close(p.grad, w, rtol=1e-10, atol=1e-12)


def test_which_critics_take_the_hand_written_step():
    relu = fused_mlp.layers_of(critic(3, 0.0))
    assert [layer.slope for layer in relu] == [0.0, 0.0, 0.0, None]
    assert [layer.slope for layer in fused_mlp.layers_of(critic(2, 0.2))] == [0.2, 0.2, None]
    linear = nn.Sequential(nn.Linear(3, 1))
    (only,) = fused_mlp.layers_of(linear)  # no hidden layer: D(x) = w.x + b
    assert only.weight is linear[0].weight and only.slope is None

    class Scaled(nn.Linear):
        def forward(self, x):
            return 2 * super().forward(x)

    class Capped(nn.ReLU):
        def forward(self, x):
            return super().forward(x).clamp(max=1.0)

    hooked = critic(2, 0.0)
    hooked[0].register_forward_hook(lambda m, i, o: o * 2)
    refused = {
        "spectral norm": nn.utils.parametrizations.spectral_norm(critic(2, 0.0)[0]),
        "layer norm": nn.Sequential(nn.Linear(3, 8), nn.LayerNorm(8), nn.ReLU(), nn.Linear(8, 1)),
        "tanh": nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1)),
        "two outputs": nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 2)),
        "no output layer": nn.Sequential(nn.Linear(3, 1), nn.ReLU()),
        "own forward": nn.Sequential(Scaled(3, 8), nn.ReLU(), nn.Linear(8, 1)),
        "own activation": nn.Sequential(nn.Linear(3, 8), Capped(), nn.Linear(8, 1)),
        "forward hook": hooked,
        "negative slope": nn.Sequential(nn.Linear(3, 8), nn.LeakyReLU(-0.5), nn.Linear(8, 1)),
        "not a Sequential": nn.ModuleList([nn.Linear(3, 1)]),
    }
    sn = critic(2, 0.0)
    nn.utils.parametrizations.spectral_norm(sn[2])
    refused["spectral norm"] = sn
    for name, net in refused.items():
        assert fused_mlp.layers_of(net) is None, name


@pytest.mark.parametrize(
    "changes,fused",
    [
        ({"lipschitz": "gp"}, True),
        ({"lipschitz": "r1"}, True),
        ({"lipschitz": "zgp", "penalty_at": "real+fake"}, True),
        ({"lipschitz": "gp", "amp": "bf16"}, False),
        ({"lipschitz": "gp", "critic_norm": "layer"}, False),
        ({"lipschitz": "sn"}, False),
        ({"lipschitz": "clip"}, False),
    ],
)
def test_the_engine_takes_it_for_penalised_plain_mlps_only(changes, fused):
    assert Trainer(resolve(small(**changes))).uses_fused_step is fused


@pytest.mark.parametrize("method", ["gp", "r1"])
def test_training_follows_the_autograd_path(method):
    # Same seed, the hand-written step or autograd's: the same losses step after step. lr is
    # tiny so that Adam cannot turn rounding-level gradient differences into whole steps.
    for a, b in fused_and_autograd_stats(small(lipschitz=method, lr_d=1e-7, lr_g=1e-7)):
        for key in ("loss_d", "penalty", "penalty_grad_norm", "critic_gap", "loss_g", "grad_norm"):
            assert abs(a[key] - b[key]) <= 1e-5 * max(1.0, abs(b[key])), key


def test_an_image_mlp_critic_takes_the_hand_written_step_and_follows_autograd():
    cfg = small(data="shapes", image_size=16, arch="mlp", width=64, depth=2, z_dim=8, batch_size=16, n_critic=1)
    for a, b in fused_and_autograd_stats(cfg.replace(lipschitz="gp", lr_d=1e-7, lr_g=1e-7), steps=2):
        for key in ("loss_d", "penalty", "penalty_grad_norm", "critic_gap", "loss_g"):
            assert abs(a[key] - b[key]) <= 1e-5 * max(1.0, abs(b[key])), key
