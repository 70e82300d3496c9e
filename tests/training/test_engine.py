import copy

import pytest
import torch
from conftest import Linear, small
from torch import nn
from torch.testing import assert_close

from ganctl.methods import penalties
from ganctl.methods.resolve import resolve
from ganctl.training.engine import Trainer


def run(cfg, steps=4):
    trainer = Trainer(resolve(cfg))
    for _ in range(steps):
        trainer.train_step()
    return trainer, trainer.pop_stats()


def test_same_seed_same_numbers_on_cpu():
    (a, sa), (b, sb) = run(small(seed=3)), run(small(seed=3))
    assert sa == sb
    for pa, pb in zip(a.generator.parameters(), b.generator.parameters()):
        assert torch.equal(pa, pb)


def test_different_seeds_differ():
    (_, sa), (_, sb) = run(small(seed=1)), run(small(seed=2))
    assert sa["loss_d"] != sb["loss_d"]


def test_the_global_rng_is_left_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    run(small())
    assert torch.equal(torch.rand(3), expected)


def test_counters_and_reported_scalars():
    trainer, stats = run(small(lipschitz="gp", n_critic=3), steps=2)
    assert (trainer.step, trainer.critic_steps) == (2, 6)
    assert {"loss_d", "loss_g", "wasserstein", "penalty", "penalty_grad_norm", "grad_norm"} <= stats.keys()
    # with the Wasserstein loss, the critic loss is minus the Wasserstein estimate
    assert abs(stats["loss_d"] + stats["wasserstein"]) < 1e-6


def test_ema_tracks_the_generator_with_warm_up():
    trainer = Trainer(resolve(small(ema_decay=0.999)))
    start = [p.clone() for p in trainer.ema.parameters()]
    trainer.train_step()
    # after step t=1 the decay is min(0.999, 2/11): the EMA moved 9/11 of the way
    for e, s, p in zip(trainer.ema.parameters(), start, trainer.generator.parameters()):
        torch.testing.assert_close(e, s + (p - s) * (1 - 2 / 11))


def test_no_ema_when_disabled():
    trainer = Trainer(resolve(small(ema_decay=0.0)))
    assert trainer.ema is None and trainer.nets.sampler is trainer.generator


def test_critic_gradients_do_not_leak_into_the_generator_step():
    trainer = Trainer(resolve(small(n_critic=1)))
    trainer.generator_step()
    assert all(p.grad is None for p in trainer.critic.parameters())
    assert all(p.requires_grad for p in trainer.critic.parameters())


def reference_critic_step(trainer, rng_state):
    """The textbook critic step from the trainer's weights and random stream: a separate
    forward for each point set, plain activations, one input gradient per penalised set.
    Returns the critic loss (without penalty) and the critic's weight gradients."""
    b = trainer.cfg.batch_size
    critic = copy.deepcopy(trainer.critic)
    rng = torch.Generator().set_state(rng_state)
    real = trainer.dataset.sample(b, rng, "cpu")
    with torch.no_grad():
        fake = trainer.generator(trainer.nets.noise(b, rng))
    at = trainer.strategy.penalty_at
    if at == "interp":
        points = {"interp": penalties.interpolate(real, fake, rng).requires_grad_(True)}
    else:
        points = {name: {"real": real, "fake": fake}[name].clone().requires_grad_(True) for name in at.split("+")}
    real, fake = points.get("real", real), points.get("fake", fake)
    d_real, d_fake = critic(real), critic(fake)
    outs = {"real": d_real, "fake": d_fake}
    grads = [
        torch.autograd.grad(outs[name].sum() if name in outs else critic(x).sum(), x, create_graph=True)[0]
        for name, x in points.items()
    ]
    loss = trainer.loss.critic(d_real, d_fake)
    (loss + trainer.strategy.penalty(grads)).backward()
    return float(loss.detach()), [p.grad for p in critic.parameters()]


@pytest.mark.parametrize(
    "data,arch,method,at",
    [
        ("8gaussians", "mlp", "gp", None),
        ("8gaussians", "mlp", "r1", None),
        ("8gaussians", "mlp", "r2", None),
        ("8gaussians", "mlp", "zgp", "real+fake"),
        ("shapes", "dcgan", "gp", None),
        ("shapes", "resnet", "r1", None),
        ("shapes", "r3gan", "r3gan", None),
    ],
)
def test_the_critic_step_equals_the_textbook_step(data, arch, method, at):
    # The engine's two passes (penalised points with constant-slope activations, then the
    # rest) and fused Adam must give the textbook step's loss and gradients.
    image = dict(image_size=32, z_dim=8, width=8, batch_size=8) if data == "shapes" else {}
    trainer = Trainer(resolve(small(data=data, arch=arch, lipschitz=method, penalty_at=at, **image)))
    state = trainer.rng.get_state()
    loss, expected = reference_critic_step(trainer, state)
    trainer.critic_step()
    assert abs(trainer.pop_stats()["loss_d"] - loss) < 1e-5 * max(1.0, abs(loss))
    for p, g in zip(trainer.critic.parameters(), expected):
        if g is None:
            assert p.grad is None or torch.count_nonzero(p.grad) == 0
        else:
            torch.testing.assert_close(p.grad, g, rtol=1e-4, atol=1e-6)


def test_channels_last_convolutions_give_the_same_critic_step():
    # The engine runs dcgan/resnet/r3gan in channels-last layout (CPU and CUDA); the penalised
    # step, double backward included, must give the contiguous layout's numbers to rounding.
    cfg = small(data="shapes", arch="dcgan", lipschitz="gp", image_size=32, z_dim=8, width=8, batch_size=8)
    plain, nhwc = Trainer(resolve(cfg)), Trainer(resolve(cfg))
    assert nhwc.memory_format == torch.channels_last  # the engine's own choice on a CPU
    assert nhwc.critic[0].weight.is_contiguous(memory_format=torch.channels_last)
    plain.memory_format = torch.contiguous_format
    plain.generator.to(memory_format=torch.contiguous_format)
    plain.critic.to(memory_format=torch.contiguous_format)
    assert plain.critic[0].weight.is_contiguous() and not nhwc.critic[0].weight.is_contiguous()
    plain.critic_step()
    nhwc.critic_step()
    for p, q in zip(plain.critic.parameters(), nhwc.critic.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-6)


# --- conditional critic steps (engine internals) --------------------------------------
class LinearConditional(nn.Module):
    """D(x, y) = <w + v_y, x>: the input gradient at label y is w + v_y, everywhere."""

    def __init__(self, d: int, classes: int):
        super().__init__()
        self.w = nn.Parameter(torch.randn(d))
        self.v = nn.Parameter(torch.randn(classes, d))

    def forward(self, x, y):
        return ((self.w + self.v[y]) * x.flatten(1)).sum(dim=1, keepdim=True)


@pytest.mark.parametrize("method, at", [("gp", "interp"), ("r1", "real"), ("r2", "fake")])
def test_the_penalty_is_taken_at_fixed_labels_against_the_closed_form(method, at):
    trainer = Trainer(
        resolve(small(conditional=True, width=16, batch_size=32, n_critic=1, lipschitz=method, penalty_weight=3.0))
    )
    critic = LinearConditional(2, 8)
    real, y = trainer.dataset.sample_labelled(32, trainer.rng, "cpu")
    fake = real + 1.0
    leaves = penalties.penalty_points(trainer.strategy.penalty_at, real, fake, trainer.rng)
    assert list(leaves) == [at]
    trainer.nets.critic = critic
    _, _, _, penalty, grads = trainer._critic_backward(real, fake, leaves, y)
    want_grads = critic.w + critic.v[y]  # per sample, at its own label
    assert_close(grads[0], want_grads.detach())
    norms = want_grads.norm(dim=1)
    want = 3.0 * ((norms - 1) ** 2).mean() if method == "gp" else 1.5 * (norms**2).mean()
    assert_close(penalty, want.detach())


def test_fakes_are_drawn_with_the_real_batch_s_labels(monkeypatch):
    trainer = Trainer(resolve(small(conditional=True, width=16, batch_size=32, n_critic=1, lipschitz="gp")))
    seen = {}

    def spy(real, fake, leaves, y):
        seen["y"] = y
        return original(real, fake, leaves, y)

    original = trainer._critic_backward
    monkeypatch.setattr(trainer, "_critic_backward", spy)
    calls = []
    generator = trainer._generator_fast
    trainer._generator_fast = lambda z, y: calls.append(y) or generator(z, y)
    trainer.critic_step()
    assert torch.equal(calls[0], seen["y"])  # the fakes of the step share the real labels


@pytest.mark.parametrize("policy", ["translation", "cutout", "color", "translation,cutout"])
def test_penalties_take_the_gradient_through_the_augmentation(policy):
    """A linear critic D(x) = <1, x>: through translation the input gradient is 1 on the pixels
    that stay in the frame (a rectangle of (16 - |dy|) x (16 - |dx|)), through cutout 1 outside
    the square, through colour 1 everywhere (brightness adds, saturation and contrast keep the
    sum); with respect to the un-augmented image, never 1 everywhere when anything moves."""
    cfg = dict(data="shapes", image_size=16, arch="dcgan", width=8, z_dim=16, batch_size=16, lipschitz="r1")
    trainer = Trainer(resolve(small(**cfg, augment=policy)))
    linear = Linear(torch.ones(3, 16, 16))
    trainer.nets.critic = trainer._critic_fast = linear
    real = trainer.dataset.sample(16, trainer.rng, "cpu")
    fake = torch.zeros_like(real)
    leaves = penalties.penalty_points("real", real, fake)
    _, _, _, _, (grads,) = trainer._critic_backward(real, fake, leaves)
    grads = grads.detach()
    one, zero = (grads - 1).abs() < 1e-5, grads.abs() < 1e-5  # colour's means round in the last bit
    ones = one[:, 0]
    assert torch.equal(one, ones[:, None].expand_as(grads)) and (one | zero).all()
    counts = ones.flatten(1).sum(1)
    if policy == "color":
        assert (counts == 256).all()
        return
    if policy == "translation":
        rows, cols = ones.any(2).sum(1), ones.any(1).sum(1)
        assert torch.equal(counts, rows * cols) and rows.min() >= 14 and cols.min() >= 14
    if policy == "cutout":
        assert (counts >= 256 - 64).all()
    assert (counts < 256).any()
    norms = penalties.grad_norm(grads)
    assert torch.allclose(norms, counts.float().mul(3).sqrt(), atol=1e-4)
