"""The orthogonal-convolution critic (--lipschitz aoc): its certified bound against what can be
measured of the whole critic (power iteration on its Jacobian, gradient ascent on its inputs),
a training run and its exact resume."""

from __future__ import annotations

import pytest
import torch
from conftest import small, straight_and_resumed
from torch import nn
from torch.func import jvp, vjp

from ganctl.config import TrainConfig
from ganctl.errors import ConfigError
from ganctl.lipschitz.bounds import upper_bound
from ganctl.methods.resolve import resolve
from ganctl.models.certified import orthogonal_convolutional
from ganctl.models.dcgan import build_dcgan
from ganctl.training.engine import Trainer

pytest.importorskip("orthogonium")


def dcgan_critic(size: int, channels: int, width: int) -> nn.Module:
    cfg = TrainConfig(arch="dcgan", width=width, z_dim=8, critic_norm="none")
    return build_dcgan(cfg, (channels, size, size))[1]


def jacobian_norm(critic: nn.Module, x: torch.Tensor, iterations: int = 40) -> float:
    """The spectral norm of the whole critic's Jacobian at x (one image), by power iteration
    on J^T J with forward- and reverse-mode products."""
    v = torch.randn_like(x, generator=torch.Generator().manual_seed(1))
    v = v / v.norm()
    for _ in range(iterations):
        _, jv = jvp(critic, (x,), (v,))
        _, pull = vjp(critic, x)
        (jtjv,) = pull(jv)
        v = jtjv / jtjv.norm()
    return float(jvp(critic, (x,), (v,))[1].detach().norm())


def ascended_slope(critic: nn.Module, shape: tuple[int, ...], steps: int = 100, starts: int = 16) -> float:
    """The largest |D(a) - D(b)| / ||a - b|| and ||grad D|| found by Adam ascending that slope
    over pairs of inputs (a piecewise-linear critic's gradient norm is flat in each region, so
    the pair's ratio is what gradient ascent can climb)."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn((starts, *shape), generator=g).requires_grad_(True)
    b = (a.detach() + 0.1 * torch.randn((starts, *shape), generator=g)).requires_grad_(True)
    opt = torch.optim.Adam([a, b], lr=0.05)
    best = 0.0
    for _ in range(steps):
        slope = (critic(a) - critic(b)).flatten().abs() / (a - b).flatten(1).norm(dim=1)
        (grad,) = torch.autograd.grad(critic(a).sum(), a, retain_graph=True)
        best = max(best, float(slope.detach().max()), float(grad.flatten(1).norm(dim=1).max()))
        opt.zero_grad()
        (-slope.sum()).backward()
        opt.step()
    return best


@pytest.mark.parametrize(("size", "channels", "width"), [(16, 1, 8), (28, 1, 8), (32, 3, 8)])
def test_the_whole_critic_is_certified_at_most_1_lipschitz_and_measurement_agrees(size, channels, width):
    torch.manual_seed(0)
    critic = orthogonal_convolutional(dcgan_critic(size, channels, width))
    with torch.no_grad():  # move the weights off their orthogonal start: the bound must not depend on it
        for p in critic.parameters():
            p.add_(0.5 * torch.randn_like(p))
    bound, table = upper_bound(critic, (channels, size, size))
    assert all(e.certainty in ("exact", "certified") for e in table)
    assert bound <= 1 + 1e-5  # 1 within float32 rounding of the orthogonal factors
    # Every layer (strided, zero padded, the 1-channel head) is orthogonal: none is far below 1.
    assert min(e.bound for e in table) > 0.999
    if size == 32:  # this size's large layers take the circular-embedding bound, not an explicit SVD
        assert any(e.certainty == "certified" for e in table)
    critic.eval()
    shape = (channels, size, size)
    starts = [torch.randn((1, *shape), generator=torch.Generator().manual_seed(s)) for s in range(3)]
    jac = max(jacobian_norm(critic, x) for x in starts)
    assert 0.05 < jac <= bound
    assert ascended_slope(critic, shape) <= bound


def test_the_same_measurements_find_an_unconstrained_critic_above_1():
    """The checks above can fail: on the same critic left unconstrained they find slopes far above 1."""
    torch.manual_seed(0)
    critic = dcgan_critic(16, 1, 8).eval()
    with torch.no_grad():  # torch's default start is a contraction; a trained critic need not be
        for p in critic.parameters():
            p.mul_(3)
    found = ascended_slope(critic, (1, 16, 16), steps=30)
    assert found > 1.5
    assert jacobian_norm(critic, torch.randn(1, 1, 16, 16)) > 1.5


def test_a_residual_or_normalised_or_odd_critic_is_refused_in_one_line():
    for cfg in (
        small(data="shapes", arch="resnet", lipschitz="aoc", width=8),
        small(data="shapes", arch="dcgan", lipschitz="aoc", width=8, critic_norm="layer"),
        small(data="shapes", arch="dcgan", lipschitz="aoc", width=7),
    ):
        with pytest.raises(ConfigError, match="--lipschitz aoc") as err:
            Trainer(resolve(cfg))
        assert "\n" not in str(err.value)


def test_an_aoc_run_keeps_its_certificate_and_resumes_exactly(tmp_path):
    cfg = small(data="shapes", arch="dcgan", lipschitz="aoc", width=8, z_dim=16, batch_size=16, n_critic=2)
    straight, _, resumed = straight_and_resumed(lambda: Trainer(resolve(cfg)), 4, 2, tmp_path / "c.safetensors")
    for a, b in zip(straight.critic.state_dict().values(), resumed.critic.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(straight.generator.state_dict().values(), resumed.generator.state_dict().values()):
        assert torch.equal(a, b)
    bound, table = upper_bound(straight.critic, (3, 32, 32))
    assert bound <= 1 + 1e-5 and all(e.certainty in ("exact", "certified") for e in table)


def test_gradnorm_says_certified_with_the_bound_and_how_far_below_it_the_norms_fall(tmp_path):
    import json

    from typer.testing import CliRunner

    import ganctl
    from ganctl.cli import app

    cfg = small(data="shapes", arch="dcgan", lipschitz="aoc", width=8, z_dim=16, batch_size=16, image_size=16)
    ganctl.train(cfg.replace(steps=3, ckpt_every=3), tmp_path / "run")
    ckpt = next((tmp_path / "run" / "checkpoints").iterdir())
    runner = CliRunner()
    report = json.loads(runner.invoke(app, ["gradnorm", str(ckpt), "--n", "256", "--json"]).stdout)
    ub = report["upper_bound"]
    assert ub["certified"] and ub["value"] <= 1 + 1e-5
    largest = max(s["max"] for s in report["sets"].values())
    assert ub["largest_norm"] == pytest.approx(largest) and ub["margin"] == pytest.approx(ub["value"] - largest)
    assert 0 < ub["margin"] < 1 and set(ub["median_share"]) == {"real", "fake", "interp"}
    assert report["w1_lower_bound"]["lipschitz"] == ub["value"]
    text = runner.invoke(app, ["gradnorm", str(ckpt), "--n", "256"]).output
    line = next(line for line in text.splitlines() if line.startswith("certified:"))
    assert f"{ub['margin']:.4g} below it" in line


def test_without_orthogonium_the_method_says_which_extra_to_install(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "orthogonium.layers", None)  # as if it were not installed
    with pytest.raises(ConfigError, match=r"pip install 'ganctl\[certified\]'"):
        Trainer(resolve(small(data="shapes", arch="dcgan", lipschitz="aoc", width=8, image_size=16)))


@pytest.mark.parametrize("cond", ["projection", "acgan"])
def test_a_conditional_critic_is_certified_at_every_label(cond):
    """Projection: each class's row w + V[y] is scaled into the unit ball, so a large embedding
    cannot lift the bound; AC-GAN: the value head is the unconditional one."""
    cfg = small(data="shapes", arch="dcgan", lipschitz="aoc", width=8, image_size=16, conditional=True, cond=cond)
    trainer = Trainer(resolve(cfg))
    critic = trainer.critic
    if cond == "projection":
        with torch.no_grad():
            critic.embed.weight.mul_(0).add_(5.0)  # rows of norm far above 1 before the scaling
    bound, table = upper_bound(critic, (3, 16, 16), conditional=True)
    assert bound <= 1 + 1e-5 and all(e.certainty in ("exact", "certified") for e in table)
    critic.eval()
    for label in range(3):
        y = torch.full((16,), label)
        slope = ascended_slope(lambda x, y=y: critic(x, y[: len(x)]), (3, 16, 16), steps=30)
        assert slope <= bound


def test_maxmin_matches_orthogonium_s_values_and_gradients_bit_for_bit():
    from orthogonium.layers import MaxMin as Reference

    from ganctl.models.certified import MaxMin

    for shape in ((5, 8, 3, 3), (7, 6)):
        x = torch.randn(shape, requires_grad=True)
        g = torch.randn(shape)
        ours, ref = MaxMin()(x), Reference(axis=1)(x)
        assert torch.equal(ours, ref)
        assert torch.equal(torch.autograd.grad(ours, x, g)[0], torch.autograd.grad(ref, x, g)[0])
    # At an exact tie torch's max and min split the gradient in halves; this passes it whole to
    # one unit, so the gradient is still a permutation of the incoming one (its norm kept).
    x = torch.zeros(2, 4, requires_grad=True)
    (grad,) = torch.autograd.grad(MaxMin()(x), x, torch.tensor([[1.0, 2.0, 3.0, 4.0]] * 2))
    assert sorted(grad[0].tolist()) == [1.0, 2.0, 3.0, 4.0]


def test_average_pooling_and_flatten_stay_and_enter_the_bound_exactly():
    critic = nn.Sequential(nn.Conv2d(1, 8, 3, 1, 1), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(8 * 4 * 4, 1))
    critic = orthogonal_convolutional(critic)
    assert isinstance(critic[2], nn.AvgPool2d) and type(critic[1]).__name__ == "MaxMin"
    bound, table = upper_bound(critic, (1, 8, 8))
    pool = next(e for e in table if e.kind == "AvgPool2d")
    assert pool.bound == pytest.approx(0.5) and pool.certainty == "exact"
    assert bound <= 0.5 * (1 + 1e-5) and all(e.certainty in ("exact", "certified") for e in table)
    critic.eval()
    assert ascended_slope(critic, (1, 8, 8), steps=30) <= bound
    with pytest.raises(ValueError, match="no certified bound"):
        orthogonal_convolutional(nn.Sequential(nn.Conv2d(1, 8, 3, 1, 1), nn.MaxPool2d(3, 1), nn.Flatten()))
