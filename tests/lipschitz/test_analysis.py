"""The gradient-norm analysis against analytic critics, finite differences and dense
Jacobians."""

import math

import numpy as np
import pytest
import torch
from conftest import Linear, invoke, parse_json, small
from torch import nn

from ganctl.data import get_dataset
from ganctl.errors import ConfigError
from ganctl.lipschitz import analysis, bounds, transport
from ganctl.lipschitz.norms import gradient_norms, summarise
from ganctl.methods.resolve import resolve
from ganctl.training.engine import Trainer


def test_linear_critic_has_norm_w_everywhere_and_geometric_alignment():
    w = torch.tensor([3.0, 4.0])
    critic = Linear(w)
    x = torch.randn(500, 2)
    _, norms = gradient_norms(critic, x, batch=64)
    assert torch.allclose(norms, torch.full((500,), 5.0))
    stats = summarise(norms, tol=0.1)
    assert stats["mean"] == pytest.approx(5.0) and stats["above"] == 1.0 and stats["below"] == 0.0
    # Alignment: cos(w, real - fake). Fake = real - t * w gives cos 1; real - fake orthogonal to w gives 0.
    real = torch.randn(100, 2)
    g = torch.Generator().manual_seed(0)
    along = transport.alignment(critic, real, real - 0.5 * w, g)
    across = transport.alignment(critic, real, real - torch.tensor([4.0, -3.0]), g)
    assert torch.allclose(along, torch.ones(100)) and torch.allclose(across, torch.zeros(100), atol=1e-6)


def test_image_shaped_linear_critic_uses_the_norm_over_c_h_w():
    w = torch.randn(3, 8, 8)
    _, norms = gradient_norms(Linear(w), torch.randn(10, 3, 8, 8))
    assert torch.allclose(norms, torch.full((10,), float(w.norm())), rtol=1e-5)


def test_scaling_the_last_layer_by_k_scales_norms_and_bounds_by_k():
    torch.manual_seed(0)
    critic = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 1))
    x = torch.randn(200, 2)
    _, before = gradient_norms(critic, x)
    ub_before, _ = bounds.upper_bound(critic, (2,))
    with torch.no_grad():
        critic[2].weight.mul_(3.0)
    _, after = gradient_norms(critic, x)
    ub_after, _ = bounds.upper_bound(critic, (2,))
    assert torch.allclose(after, 3 * before, rtol=1e-5)
    assert ub_after == pytest.approx(3 * ub_before, rel=1e-3)


def test_finite_differences_agree_with_reported_norms_on_a_trained_critic():
    trainer = Trainer(resolve(small(lipschitz="gp", steps=20)))
    for _ in range(20):
        trainer.train_step()
    critic = trainer.critic.double()
    x = torch.randn(20, 2, dtype=torch.float64)
    _, norms = gradient_norms(critic, x)
    h = 1e-6
    with torch.no_grad():
        fd = torch.stack(
            [(critic(x + h * e) - critic(x - h * e)).reshape(-1) / (2 * h) for e in torch.eye(2, dtype=torch.float64)],
            dim=1,
        )
    assert torch.allclose(norms, fd.norm(dim=1), rtol=1e-5)


def test_convolution_operator_norm_is_the_dense_jacobians_not_the_kernels():
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 3, 3, stride=2, padding=1)
    shape = (2, 6, 6)
    jac = torch.autograd.functional.jacobian(lambda v: conv(v.reshape(1, *shape)).flatten(), torch.zeros(72))
    dense = float(torch.linalg.matrix_norm(jac, 2))
    assert bounds.operator_norm(conv, shape, iterations=200) == pytest.approx(dense, rel=1e-4)
    kernel = float(torch.linalg.matrix_norm(conv.weight.detach().reshape(3, -1), 2))
    assert abs(dense - kernel) > 0.01  # the two differ; ganctl reports the first


@pytest.mark.parametrize(
    "data,arch,method",
    [(d, a, m) for d, a in (("8gaussians", "mlp"), ("shapes", "dcgan"), ("shapes", "resnet")) for m in ("gp", "sn")]
    + [("shapes", "r3gan", "gp")],
)
def test_upper_bound_is_never_below_the_empirical_lower_bound(data, arch, method):
    trainer = Trainer(
        resolve(small(data=data, arch=arch, width=8, z_dim=8, lipschitz=method, batch_size=16, n_critic=1))
    )
    for _ in range(3):
        trainer.train_step()
    shape = trainer.dataset.shape
    x, y = torch.randn(64, *shape), torch.randn(64, *shape)
    _, norms = gradient_norms(trainer.critic, x)
    lower = max(transport.empirical_lower_bound(trainer.critic, x, y), float(norms.max()))
    upper, table = bounds.upper_bound(trainer.critic, shape)
    assert math.isfinite(upper) and upper >= lower > 0
    if arch not in ("resnet", "r3gan"):  # a chain of layers: the bound is the product of the table's constants
        assert upper == pytest.approx(math.prod(e.bound for e in table), rel=1e-12)


def test_layer_norm_critic_has_no_finite_bound():
    trainer = Trainer(resolve(small(data="shapes", width=4, z_dim=8, critic_norm="layer", batch_size=8)))
    upper, table = bounds.upper_bound(trainer.critic, (3, 32, 32))
    assert upper == math.inf and any(e.kind == "GroupNorm" and e.bound == math.inf for e in table)


def test_verdicts():
    ok = summarise(torch.full((100,), 1.0))
    assert analysis.verdict(ok, 0.1)[0] == "within tolerance"
    assert analysis.verdict(summarise(torch.full((100,), 1.5)), 0.1)[0] == "violating"
    assert analysis.verdict(summarise(torch.full((100,), 1e-4)), 0.1)[0] == "vanishing"
    assert analysis.verdict(summarise(torch.full((100,), 50.0)), 0.1)[0] == "exploding"


def test_analyse_reports_every_set_with_its_statistics_and_bounds_that_bracket(tmp_path):
    trainer = Trainer(resolve(small(lipschitz="gp")))
    report = analysis.analyse(trainer.nets, n=4096, seed=0, noise_std=0.01).report
    assert set(report.sets) == {"real", "fake", "interp", "real+noise"}
    assert report.sets["interp"]["count"] == 4096
    assert report.upper_bound["value"] >= report.lower_bound.value
    keys = {
        "count",
        "mean",
        "std",
        "min",
        "q01",
        "q05",
        "q25",
        "q50",
        "q75",
        "q95",
        "q99",
        "max",
        "above",
        "below",
        "vanishing",
    }
    assert keys == set(report.sets["real"])


def test_alignment_uses_the_optimal_coupling_so_the_optimal_critic_scores_one():
    # Real points shifted by t*w: the optimal plan moves each point along w, and the linear
    # critic w.x is then optimal up to scale, so every optimally coupled pair has cos 1. The
    # same sets paired at random (as in the penalty) score far less.
    w = torch.tensor([0.6, 0.8])
    g = torch.Generator().manual_seed(0)
    real = torch.randn(300, 2, generator=g)
    fake = (real - 0.3 * w)[torch.randperm(300, generator=g)]
    perm = transport.optimal_coupling(real, fake)
    assert torch.allclose(fake[perm], real - 0.3 * w)
    coupled = transport.alignment(Linear(w), real, fake[perm], g)
    random = transport.alignment(Linear(w), real, fake, g)
    assert torch.allclose(coupled, torch.ones(300), atol=1e-6)
    assert random.mean() < 0.5


@pytest.mark.slow
def test_clipping_vanishes_and_the_penalty_holds_norms_near_one(tmp_path):
    """Gulrajani et al. 2017, Figure 1(b): a deep critic under weight clipping (c = 0.01) has
    gradient norms orders of magnitude below 1, one under the gradient penalty (the paper's
    lambda 10) has interpolate norms near 1. Checked both in the training log (the summary
    logged at eval steps) and by the analysis of the final checkpoint."""
    import json

    import ganctl

    results = {}
    for method, extra in (("clip", {}), ("gp", {"penalty_weight": 10.0, "lr_d": 1e-4, "lr_g": 1e-4})):
        cfg = small(
            data="swissroll",
            lipschitz=method,
            width=64,
            depth=5,
            batch_size=128,
            steps=200,
            eval_every=100,
            eval_samples=512,
            **extra,
        )
        ganctl.train(cfg, tmp_path / method)
        logged = [json.loads(line) for line in (tmp_path / method / "metrics.jsonl").read_text().splitlines()]
        evals = [r for r in logged if "eval/gradnorm_q50" in r]
        assert [r["step"] for r in evals] == [100, 200]
        report = analysis.analyse(ganctl.load(tmp_path / method), n=1024).report
        results[method] = (evals[-1], report)
    clip_log, clip = results["clip"]
    gp_log, gp = results["gp"]
    assert clip_log["eval/gradnorm_q50"] < 1e-2 and clip.sets["interp"]["q95"] < 1e-2
    assert clip.verdict.status == "vanishing"
    assert abs(gp_log["eval/gradnorm_q50"] - 1.0) < 0.25 and abs(gp.sets["interp"]["q50"] - 1.0) < 0.25
    assert gp.verdict.status != "vanishing"


def explicit_norm(layer, shape):
    """The operator norm from the explicit matrix of the layer's linear part (its Jacobian),
    independently of ganctl."""
    d = math.prod(shape)
    jac = torch.autograd.functional.jacobian(lambda v: layer(v.reshape(1, *shape)).flatten(), torch.zeros(d))
    return float(torch.linalg.matrix_norm(jac.double(), 2))


def test_a_dense_layer_s_constant_is_its_exact_spectral_norm():
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 1))
    total, table = bounds.upper_bound(net, (5,))
    assert table[0].certainty == "exact" and table[0].bound == pytest.approx(explicit_norm(net[0], (5,)), rel=1e-12)
    assert bounds.certified(table)


@pytest.mark.parametrize(
    "c_in,c_out,k,s,p,n",
    [
        (2, 3, 4, 2, 1, 8),  # DCGAN's stride-2 4 x 4
        (3, 4, 3, 1, 1, 6),  # ResNet's 3 x 3
        (2, 2, 1, 1, 0, 5),  # a 1 x 1 shortcut
        (3, 2, 3, 2, 1, 9),  # odd size, stride 2
        (2, 3, 5, 3, 2, 10),  # stride 3
    ],
)
def test_a_convolution_s_bound_is_certified_against_the_explicit_matrix(c_in, c_out, k, s, p, n):
    torch.manual_seed(c_in * 100 + k * 10 + s)
    conv = nn.Conv2d(c_in, c_out, k, stride=s, padding=p)
    true = explicit_norm(conv, (c_in, n, n))
    bound = bounds.conv2d_bound(conv.weight, conv.stride, conv.padding, (n, n))
    assert true <= bound <= 1.35 * true  # never below; the zero padding costs at most a third here
    estimate = bounds.operator_norm(conv, (c_in, n, n))
    assert estimate <= true * (1 + 1e-6)  # power iteration approaches from below: an estimate only
    assert bounds.explicit_norm(conv, (c_in, n, n)) == pytest.approx(true, rel=1e-6)  # small: exact


def test_a_large_convolution_gets_the_certified_bound_and_a_small_one_its_exact_norm():
    torch.manual_seed(0)
    last = nn.Conv2d(64, 1, 4)  # DCGAN's last layer: one output, measured exactly
    _, table = bounds.upper_bound(nn.Sequential(last), (64, 4, 4))
    assert table[0].certainty == "exact" and table[0].bound == pytest.approx(explicit_norm(last, (64, 4, 4)))
    big = nn.Conv2d(16, 32, 4, 2, 1)  # 16 x 32 x 32 in, 32 x 16 x 16 out: too large to build
    assert bounds.explicit_norm(big, (16, 32, 32)) is None
    _, table = bounds.upper_bound(nn.Sequential(big), (16, 32, 32))
    assert table[0].certainty == "certified" and table[0].bound >= bounds.operator_norm(big, (16, 32, 32))


def test_the_bound_is_seeded_and_marks_what_it_could_not_certify():
    torch.manual_seed(0)
    # too large to build explicitly: a certified convolution, an estimated up-sampling
    net = nn.Sequential(nn.Conv2d(3, 16, 4, 2, 1), nn.LeakyReLU(0.2), nn.Upsample(scale_factor=2), nn.Conv2d(16, 1, 48))
    first, table = bounds.upper_bound(net, (3, 48, 48))
    again, _ = bounds.upper_bound(net, (3, 48, 48))
    assert first == again
    assert [e.certainty for e in table] == ["certified", "exact", "estimated", "exact"]
    assert not bounds.certified(table)


def test_the_resnet_critic_counts_its_spatial_mean():
    trainer = Trainer(resolve(small(data="shapes", arch="resnet", width=8, z_dim=8, lipschitz="gp", batch_size=8)))
    total, table = bounds.upper_bound(trainer.critic, (3, 32, 32))
    mean = next(e for e in table if e.kind == "SpatialMean")
    assert mean.bound == pytest.approx(1 / 8) and mean.certainty == "exact"  # over 8 x 8
    assert bounds.certified(table) and math.isfinite(total)


@pytest.mark.parametrize("shift", sorted(transport.ALIGNMENT_REFERENCE))
def test_alignment_references_of_the_optimal_critic(shift):
    # Pg = Pr shifted by v; the optimal critic -<x, v/|v|>. On the empirical optimal coupling it
    # scores about 0.9, not 1; on independent pairs it does not score near 0.
    ds = get_dataset("8gaussians")
    coupled, independent = [], []
    for seed in range(5):
        g = torch.Generator().manual_seed(seed)
        v = torch.tensor([0.6, 0.8]) * shift
        real, fake = ds.sample(512, g, "cpu"), ds.sample(512, g, "cpu") + v
        critic = nn.Linear(2, 1, bias=False)
        with torch.no_grad():
            critic.weight.copy_(-v[None] / v.norm())
        independent.append(float(transport.alignment(critic, real, fake, g).mean()))
        pairs = fake[transport.optimal_coupling(real, fake)]
        coupled.append(float(transport.alignment(critic, real, pairs, g).mean()))
    want_coupled, want_independent = transport.ALIGNMENT_REFERENCE[shift]
    assert np.mean(coupled) == pytest.approx(want_coupled, abs=0.02) and np.mean(coupled) < 1.0
    assert np.mean(independent) == pytest.approx(want_independent, abs=0.02) and np.mean(independent) > 0.1
    # an exact translated copy is coupled point to point: then it is 1
    exact = ds.sample(64, torch.Generator().manual_seed(9), "cpu")
    copy = exact + v
    assert float(transport.alignment(critic, exact, copy[transport.optimal_coupling(exact, copy)], g).min()) > 1 - 1e-6


def test_verdicts_and_labels_follow_the_loss():
    low = summarise(torch.full((100,), 0.3))
    assert analysis.verdict(low, 0.1, "wasserstein")[0] == "under-using"
    word, detail = analysis.verdict(low, 0.1, "ns")
    assert word == "inside the bound" and "optimal" not in detail
    ns = Trainer(resolve(small(lipschitz="r1")))  # the non-saturating loss
    ns.train_step()
    stats = ns.pop_stats()
    assert "critic_gap" in stats and "wasserstein" not in stats
    report = analysis.analyse(ns.nets, n=256).report
    assert report.critic_gap == report.to_dict()["critic_gap"] and report.wasserstein is None
    assert "wasserstein" not in report.to_dict()  # no W1 estimate is claimed under the ns loss


def test_gradnorm_of_a_run_that_augments_measures_through_its_augmentation(tmp_path):
    run = tmp_path / "aug"
    args = ["--data", "shapes", "--image-size", 16, "--arch", "dcgan", "--width", 8, "--z-dim", 16]
    args += ["--batch-size", 8, "--steps", 2, "--augment", "translation,cutout", "--eval-samples", 64]
    assert invoke("train", *args, "--sample-every", 0, "--out", run).exit_code == 0
    ckpt = run / "checkpoints" / "step-0000002.safetensors"
    result = invoke("gradnorm", ckpt, "--n", 64, "--json")
    assert result.exit_code == 0, result.output
    report = parse_json(result.stdout)
    assert report["augment"] == {
        "policy": "translation,cutout",
        "p": 1.0,
        "lipschitz_factor": 1.0,  # shifts and cutouts copy or zero pixels
        "upper_bound": report["upper_bound"]["value"],
    }
    plain = invoke("gradnorm", ckpt, "--n", 64)
    assert "measured through the run's augmentation (translation,cutout, p 1)" in plain.stderr
    assert f"(x 1 for the augmentation: {report['augment']['upper_bound']:.4g})" in plain.stderr


def test_an_augmenting_critic_without_a_finite_bound_reports_its_factor_alone():
    cfg = dict(data="shapes", image_size=16, arch="dcgan", width=8, z_dim=16, batch_size=8, lipschitz="gp")
    trainer = Trainer(resolve(small(**cfg, critic_norm="layer", augment="color")))
    report = analysis.analyse(trainer.nets, n=32).report
    assert report.upper_bound["value"] is None  # layer norm: no global constant
    assert report.augment == {"policy": "color", "p": 1.0, "lipschitz_factor": 3.0}  # RGB: saturation 2, contrast 1.5


def test_ganctl_grad_norms_is_the_command_as_one_library_call(tmp_path):
    """`ganctl.grad_norms` gives the report `ganctl gradnorm --json` prints; the trajectory, one
    report per checkpoint in step order."""
    import ganctl

    ganctl.train(small(lipschitz="gp", steps=6, ckpt_every=2), tmp_path / "run")
    newest = tmp_path / "run" / "checkpoints" / "step-0000006.safetensors"
    found = ganctl.grad_norms(newest, n=128, seed=1)
    r = invoke("gradnorm", newest, "--n", 128, "--seed", 1, "--json")
    assert r.exit_code == 0, r.output
    printed = parse_json(r.stdout)
    assert found.report.sets == printed["sets"] and found.report.verdict.status == printed["verdict"]["status"]
    assert found.norms["interp"].shape == (128,)
    steps = [report.step for report in ganctl.grad_norm_trajectory(tmp_path / "run", n=64)]
    assert steps == [2, 4, 6]
    with pytest.raises(ConfigError, match="--n must be > 0"):
        ganctl.grad_norms(newest, n=0)
