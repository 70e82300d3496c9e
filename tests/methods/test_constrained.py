"""Critics Lipschitz by construction (gradient normalisation; Björck-orthonormal GroupSort) and
the certified W1 lower bound, against closed forms, finite differences, exact SVDs and exact
assignments."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import Linear, small
from torch import nn
from torch.nn.utils import parametrize
from torch.testing import assert_close
from typer.testing import CliRunner

import ganctl
from ganctl.cli import app
from ganctl.errors import ConfigError
from ganctl.lipschitz.analysis import analyse
from ganctl.lipschitz.bounds import upper_bound, w1_lower_bound
from ganctl.lipschitz.transport import wasserstein1
from ganctl.methods.penalties import input_grads
from ganctl.methods.resolve import resolve
from ganctl.models.constrained import (
    Bjorck,
    GradientNormalized,
    MaxMin,
    bjorck_orthonormalize,
    orthonormal_groupsort,
    reproject,
)
from ganctl.training.engine import Trainer

runner = CliRunner()


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- Björck ------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(64, 64), (128, 2), (2, 128), (1, 64), (256, 128), (32, 96)])
def test_bjorck_output_has_every_singular_value_within_1e6_of_one(shape):
    w = torch.randn(*shape, generator=_gen(1))
    q = bjorck_orthonormalize(w)
    s = torch.linalg.svdvals(q.double())
    assert (s - 1).abs().max() < 1e-6, s
    # The orthonormal factor of the polar decomposition: the nearest orthonormal matrix, U V^T.
    u, _, vh = torch.linalg.svd(w.double(), full_matrices=False)
    assert_close(q.double(), u @ vh, atol=1e-5, rtol=0)


def test_bjorck_converges_from_an_ill_conditioned_weight():
    # Singular values from 1e-3 to 1e3: the exact scaling by the largest puts them in (0, 1],
    # where the iteration converges, however far from orthonormal the weight has drifted.
    u, _ = torch.linalg.qr(torch.randn(64, 64, generator=_gen(2)))
    v, _ = torch.linalg.qr(torch.randn(64, 64, generator=_gen(3)))
    w = u @ torch.diag(torch.logspace(-3, 3, 64)) @ v.t()
    assert (torch.linalg.svdvals(bjorck_orthonormalize(w).double()) - 1).abs().max() < 1e-6


def test_bjorck_passes_gradients_through_its_iterations():
    # The parametrization is differentiable: the orthonormal factor of a matrix moves with it.
    layer = nn.Linear(8, 8)
    parametrize.register_parametrization(layer, "weight", Bjorck())
    layer.weight.sum().backward()
    g = layer.parametrizations["weight"].original.grad
    assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0


def test_reprojection_leaves_the_function_unchanged():
    critic = orthonormal_groupsort(nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 1)))
    with torch.no_grad():  # an optimizer step away from orthonormal
        for p in critic.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=_gen(4)))
    x = torch.randn(32, 4, generator=_gen(5))
    before = critic(x)
    reproject(critic)
    assert_close(critic(x), before, atol=1e-5, rtol=0)
    stored = critic[0].parametrizations["weight"].original
    assert (torch.linalg.svdvals(stored.double()) - 1).abs().max() < 1e-6


def test_maxmin_sorts_each_pair():
    x = torch.tensor([[3.0, -1.0, 0.5, 2.0]])
    assert torch.equal(MaxMin()(x), torch.tensor([[3.0, -1.0, 2.0, 0.5]]))


def test_orthonormal_groupsort_has_input_gradient_norm_one_almost_everywhere():
    # Widths that never grow: every matrix has orthonormal rows, so its transpose keeps a
    # gradient's norm, MaxMin permutes it, and ||grad D(x)|| = ||w_last|| = 1 at every point
    # (almost everywhere: ties in a MaxMin pair have measure zero).
    net = nn.Sequential(nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 1))
    critic = orthonormal_groupsort(net)
    x = 10 * torch.randn(512, 32, generator=_gen(6))
    _, grads = input_grads(critic, x)
    assert_close(grads.norm(dim=1), torch.ones(512), atol=2e-6, rtol=0)


def test_ganctl_s_bjorck_critic_is_1_lipschitz_and_its_bound_comes_from_the_matrices():
    trainer = Trainer(resolve(small(lipschitz="bjorck", width=32, depth=3)))
    critic = trainer.critic
    assert any(isinstance(m, MaxMin) for m in critic.modules())
    assert not any(isinstance(m, (nn.ReLU, nn.LeakyReLU)) for m in critic.modules())
    x = 3 * torch.randn(1024, 2, generator=_gen(7))
    _, grads = input_grads(critic, x)
    # 2 -> width expands, so the input gradient is the projection of a unit vector onto two
    # dimensions: at most 1, and 1 only where it lies in the first layer's range.
    assert grads.norm(dim=1).max() <= 1 + 1e-6
    total, table = upper_bound(critic, (2,), torch.device("cpu"))
    assert abs(total - 1) < 1e-5 and {e.kind for e in table} == {"ParametrizedLinear", "MaxMin"}, table
    assert all("Björck-orthonormalised" in e.how for e in table if e.kind != "MaxMin")
    # The bound is read from the orthonormalised matrices, not assumed: scale one layer's output.
    parametrize.register_parametrization(_last_linear(critic), "weight", _Times(3.0))
    assert abs(upper_bound(critic, (2,), torch.device("cpu"))[0] - 3.0) < 1e-4


class _Times(nn.Module):
    def __init__(self, c: float):
        super().__init__()
        self.c = c

    def forward(self, w):
        return self.c * w


def _last_linear(module: nn.Module) -> nn.Module:
    return [m for m in module.modules() if isinstance(m, nn.Linear)][-1]


def test_bjorck_refuses_a_convolutional_critic_in_one_line():
    with pytest.raises(ConfigError) as err:
        Trainer(resolve(small(data="shapes", image_size=16, lipschitz="bjorck", arch="dcgan", width=8)))
    message = str(err.value)
    assert "\n" not in message and "--arch mlp" in message and "orthogonal convolutions" in message
    r = runner.invoke(
        app, ["train", "--data", "shapes", "--image-size", "16", "--lipschitz", "bjorck", "--arch", "dcgan"]
    )
    assert r.exit_code == 2 and "--arch mlp" in r.output and "Traceback" not in r.output


def test_bjorck_refuses_an_odd_width_and_a_normalised_critic():
    with pytest.raises(ConfigError, match="even --width"):
        Trainer(resolve(small(lipschitz="bjorck", width=33)))
    with pytest.raises(ConfigError, match="--critic-norm none"):
        Trainer(resolve(small(lipschitz="bjorck", critic_norm="layer")))


# --- gradient normalisation --------------------------------------------------------------------
def _relu_critic(d: int, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, 32), nn.ReLU(), nn.Linear(32, 32), nn.LeakyReLU(0.2), nn.Linear(32, 1))


def test_gn_of_a_linear_critic_is_the_closed_form():
    w = torch.tensor([0.5, -2.0, 1.0])
    x = torch.randn(64, 3, generator=_gen(8))
    d = GradientNormalized(Linear(w, b=0.7))
    f = x @ w + 0.7
    assert_close(d(x).squeeze(1), f / (w.norm() + f.abs()))


def test_gn_is_bounded_by_one_even_far_from_the_data():
    d = GradientNormalized(_relu_critic(2))
    x = torch.cat([torch.randn(1000, 2, generator=_gen(9)), 1e4 * torch.randn(1000, 2, generator=_gen(10))])
    assert d(x).abs().max() < 1


def test_gn_input_gradient_matches_finite_differences_and_is_at_most_one():
    critic = GradientNormalized(_relu_critic(4, seed=1).double())
    x = torch.randn(64, 4, generator=_gen(11), dtype=torch.float64)
    _, grads = input_grads(critic, x)  # D's own input gradient: a double backward through grad f
    eps = 1e-6
    fd = torch.stack(
        [(critic(x + eps * e) - critic(x - eps * e)).squeeze(1) / (2 * eps) for e in torch.eye(4, dtype=torch.float64)],
        dim=1,
    )
    assert_close(grads, fd, atol=1e-6, rtol=1e-5)
    # Inside a linear region grad D = grad f * ||grad f|| / (||grad f|| + |f|)^2, of norm <= 1.
    assert grads.norm(dim=1).max() <= 1


def test_gn_training_differentiates_through_the_normalisation():
    # ||grad f|| depends on the weights even where f is piecewise linear in x, so the critic's
    # parameter gradient needs grad f's graph (a double backward): it equals the one taken by
    # hand with create_graph, and differs from the one with ||grad f|| held constant.
    critic = GradientNormalized(_relu_critic(2, seed=2).double())
    x = torch.randn(16, 2, generator=_gen(12), dtype=torch.float64)

    def parameter_grads(detach: bool) -> list[torch.Tensor]:
        critic.zero_grad()
        xs = x.clone().requires_grad_(True)
        f = critic.net(xs)
        (g,) = torch.autograd.grad(f.sum(), xs, create_graph=not detach, retain_graph=True)
        norm = g.norm(dim=1, keepdim=True)
        (f / ((norm.detach() if detach else norm) + f.abs())).sum().backward()
        return [p.grad.clone() for p in critic.parameters()]

    critic.zero_grad()
    critic(x).sum().backward()
    full = [p.grad.clone() for p in critic.parameters()]
    for got, want in zip(full, parameter_grads(detach=False)):
        assert_close(got, want)
    assert any((a - b).abs().max() > 1e-6 for a, b in zip(full, parameter_grads(detach=True)))


@pytest.mark.parametrize("loss", ["wasserstein", "hinge", "ns", "lsgan"])
@pytest.mark.parametrize("method", ["gn", "bjorck"])
def test_gn_and_bjorck_train_with_every_loss(method, loss):
    trainer = Trainer(resolve(small(lipschitz=method, loss=loss, n_critic=2)))
    for _ in range(3):
        trainer.train_step()
    stats = trainer.pop_stats()
    assert math.isfinite(stats["loss_d"]) and math.isfinite(stats["loss_g"])
    if method == "gn":
        d = trainer.critic(torch.randn(256, 2) * 5)
        assert d.abs().max() < 1


def test_gn_trains_image_critics_and_normalises_each_image_over_all_its_values():
    for arch in ("dcgan", "resnet"):
        trainer = Trainer(
            resolve(small(data="shapes", image_size=16, lipschitz="gn", arch=arch, width=8, batch_size=8))
        )
        trainer.train_step()
        assert math.isfinite(trainer.pop_stats()["loss_d"])
        # D = f / (||grad f|| + |f|), the norm per image over C x H x W (not over channels alone),
        # against f and its input gradient taken here by autograd.
        critic = trainer.critic.eval()
        x = trainer.dataset.sample(4, torch.Generator().manual_seed(0), "cpu").requires_grad_(True)
        f = critic.net(x)
        (g,) = torch.autograd.grad(f.sum(), x)
        want = f.detach().reshape(-1) / (g.flatten(1).norm(dim=1) + f.detach().abs().reshape(-1))
        torch.testing.assert_close(critic(x.detach()).reshape(-1), want, rtol=1e-5, atol=1e-7)
        assert want.abs().max() < 1


# --- the certified W1 lower bound --------------------------------------------------------------
def test_the_w1_bound_never_exceeds_the_exact_w1_of_the_same_samples():
    for trial in range(20):
        g = _gen(100 + trial)
        a = torch.randn(200, 2, generator=g) * (1 + trial % 3)
        b = torch.randn(200, 2, generator=g) + torch.randn(2, generator=g)
        critic = orthonormal_groupsort(
            nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 1))
        )
        for p in critic.parameters():  # random, and certified 1-Lipschitz whatever the weights
            p.data.normal_(generator=g)
        lipschitz = upper_bound(critic, (2,), torch.device("cpu"))[0]
        bound = w1_lower_bound(critic, a, b, lipschitz)
        assert bound["value"] <= wasserstein1(a, b) + 1e-9
        assert w1_lower_bound(critic, b, a, lipschitz)["value"] <= wasserstein1(a, b) + 1e-9


def test_the_w1_bound_is_tight_for_a_translation():
    # b = a + t: W1 = ||t|| exactly, and the 1-Lipschitz critic D(x) = -<t, x> / ||t|| attains it.
    a = torch.randn(300, 2, generator=_gen(13))
    t = torch.tensor([3.0, -4.0])
    critic = Linear(-t / t.norm())
    bound = w1_lower_bound(critic, a, a + t, 1.0)
    assert abs(bound["value"] - 5.0) < 1e-5 and abs(wasserstein1(a, a + t) - 5.0) < 1e-5
    # With a certified constant L, the gap is divided by it.
    assert abs(w1_lower_bound(Linear(-2 * t / t.norm()), a, a + t, 2.0)["value"] - 5.0) < 1e-5


def test_the_w1_bound_s_standard_error_is_the_two_sample_one():
    critic = Linear(torch.tensor([1.0, 0.0]))
    a, b = torch.randn(400, 2, generator=_gen(14)), torch.randn(100, 2, generator=_gen(15))
    got = w1_lower_bound(critic, a, b, 1.0)
    want = math.sqrt(a[:, 0].double().var() / 400 + b[:, 0].double().var() / 100)
    assert abs(got["se"] - want) < 1e-9 and abs(got["critic_gap"] - float(a[:, 0].mean() - b[:, 0].mean())) < 1e-6


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("constrained")
    out = {}
    for method in ("bjorck", "gp", "gn"):
        ganctl.train(small(lipschitz=method, steps=20, ckpt_every=20, eval_samples=256), root / method)
        out[method] = next((root / method / "checkpoints").iterdir())
    return out


def test_gradnorm_certifies_bjorck_and_reports_its_w1_bound_beside_the_exact_w1(runs):
    r = runner.invoke(app, ["gradnorm", str(runs["bjorck"]), "--n", "512", "--json"])
    assert r.exit_code == 0, r.output  # no threshold was given
    report = json.loads(r.output)
    ub = report["upper_bound"]
    assert ub["certified"] and ub["value"] <= 1 + 1e-5
    w1 = report["w1_lower_bound"]
    assert w1["lipschitz"] == ub["value"] and w1["value"] <= w1["w1_exact"] + 1e-9
    assert w1["se"] > 0 and w1["n"] == 512
    text = runner.invoke(app, ["gradnorm", str(runs["bjorck"]), "--n", "512"]).output
    assert "certified W1 lower bound" in text and "exact W1 of the same samples" in text


def _lines(text: str, start: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(start)]


def test_no_w1_bound_is_printed_for_a_critic_that_is_not_certified(runs):
    report = json.loads(runner.invoke(app, ["gradnorm", str(runs["gn"]), "--n", "256", "--json"]).output)
    assert report["w1_lower_bound"] is None
    text = runner.invoke(app, ["gradnorm", str(runs["gn"]), "--n", "256"]).output
    assert not _lines(text, "certified W1 lower bound") and _lines(text, "no certified W1 lower bound")
    metrics = json.loads(runner.invoke(app, ["eval", str(runs["gn"]), "--n", "256", "--json"]).output)["metrics"]
    assert "w1_lower_bound" not in metrics and "w1" in metrics


def test_a_penalised_mlp_critic_is_certified_by_its_product_bound_and_its_w1_bound_is_loose(runs):
    # A ReLU MLP's product of exact dense norms is a certified constant, however loose: the
    # bound is reported, divided by it, and (on these samples) below the gap over 1.
    report = json.loads(runner.invoke(app, ["gradnorm", str(runs["gp"]), "--n", "256", "--json"]).output)
    ub, w1 = report["upper_bound"], report["w1_lower_bound"]
    assert ub["certified"] and ub["value"] > 1
    assert abs(w1["value"] * ub["value"] - w1["critic_gap"]) < 1e-9 and w1["value"] <= w1["w1_exact"] + 1e-9


def test_a_conditional_critic_gets_no_joint_w1_bound(tmp_path):
    ganctl.train(small(lipschitz="bjorck", conditional=True, steps=4, ckpt_every=4, eval_samples=128), tmp_path / "c")
    ckpt = next((tmp_path / "c" / "checkpoints").iterdir())
    report = json.loads(runner.invoke(app, ["gradnorm", str(ckpt), "--n", "128", "--json"]).output)
    assert report["w1_lower_bound"] is None


def test_gn_s_gradnorm_says_what_its_bound_means(runs):
    report = json.loads(runner.invoke(app, ["gradnorm", str(runs["gn"]), "--n", "256", "--json"]).output)
    assert report["upper_bound"]["value"] is None and not report["upper_bound"]["certified"]
    (layer,) = report["upper_bound"]["layers"]
    assert layer["kind"] == "GradientNormalized" and "piecewise 1-Lipschitz" in layer["how"]
    assert report["sets"]["interp"]["max"] <= 1 + 1e-5  # measured: piecewise, ||grad D|| <= 1


def test_eval_reports_the_certified_bound_next_to_the_exact_w1(runs):
    r = runner.invoke(app, ["eval", str(runs["bjorck"]), "--n", "512", "--json"])
    assert r.exit_code == 0, r.output
    metrics = json.loads(r.output)["metrics"]
    assert metrics["w1_lower_bound"] <= metrics["w1"] + 1e-9 and metrics["w1_lower_bound_se"] > 0
    nets = ganctl.load(runs["bjorck"])
    direct = analyse(nets, n=512).report.w1_lower_bound
    assert direct["value"] <= direct["w1_exact"] + 1e-9
