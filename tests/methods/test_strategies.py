import math

import pytest
import torch
from conftest import Linear, small
from torch import nn
from torch.testing import assert_close

from ganctl.errors import ConfigError
from ganctl.methods import penalties
from ganctl.methods.registry import available_methods, compared_methods
from ganctl.methods.resolve import resolve
from ganctl.methods.strategies import build_strategy
from ganctl.training.engine import Trainer


def test_registry_lists_every_method():
    assert available_methods() == ["clip", "gp", "zgp", "r1", "r2", "r3gan", "sn", "gn", "bjorck", "aoc", "none"]
    with pytest.raises(ConfigError, match="clip, gp, zgp, r1, r2, r3gan, sn, gn, bjorck, aoc"):
        resolve(small(lipschitz="wgan"))


@pytest.mark.parametrize(
    "method,expected",
    [
        ("clip", dict(optimizer="rmsprop", lr_d=5e-5, lr_g=5e-5, n_critic=5, clip=0.01, loss="wasserstein")),
        (
            "gp",
            dict(
                optimizer="adam",
                lr_d=1e-4,
                beta1=0.5,
                beta2=0.9,
                n_critic=5,
                penalty_weight=10.0,
                gp_target=1.0,
                penalty_at="interp",
            ),
        ),
        ("zgp", dict(penalty_weight=10.0, penalty_at="interp", n_critic=5)),
        ("r1", dict(optimizer="rmsprop", lr_d=1e-4, n_critic=1, penalty_weight=20.0, penalty_at="real", loss="ns")),
        ("r2", dict(penalty_at="fake", loss="ns")),
        ("sn", dict(optimizer="adam", lr_d=2e-4, beta1=0.0, beta2=0.9, n_critic=5, loss="hinge", lr_decay="linear")),
        ("none", dict(optimizer="adam", lr_d=2e-4, beta1=0.5, beta2=0.999, n_critic=1, loss="ns", batch_size=128)),
    ],
)
def test_published_recipes_resolve(method, expected):
    cfg = resolve(small(data="shapes", lipschitz=method, batch_size=None))  # the papers' recipes are for images
    for key, value in {"batch_size": 64, **expected}.items():
        assert getattr(cfg, key) == value, key


def test_the_wgan_gp_resnet_recipe_is_its_cifar_code_s():
    cfg = resolve(small(data="shapes", lipschitz="gp", arch="resnet", batch_size=None))
    assert (cfg.lr_d, cfg.lr_g, cfg.beta1, cfg.beta2, cfg.n_critic, cfg.penalty_weight, cfg.lr_decay) == (
        2e-4,
        2e-4,
        0.0,
        0.9,
        5,
        10.0,
        "linear",
    )
    assert resolve(small(data="shapes", lipschitz="gp", arch="dcgan")).lr_d == 1e-4
    assert resolve(small(lipschitz="gp", arch="mlp")).lr_d == 1e-3  # 2-D data: the 2-D recipe


def test_r1_applies_the_strength_of_the_code_it_cites():
    # GAN_stability adds reg_param * E||grad D(x_real)||^2 with reg_param 10 and no 1/2
    # (gan_training/train.py compute_grad2); ganctl writes gamma/2 E||grad||^2, so its recipe's
    # gamma is 20. On a linear critic D(x) = w.x the gradient is w everywhere: the penalty is
    # 10 ||w||^2 exactly.
    cfg = resolve(small(data="shapes", lipschitz="r1"))
    assert cfg.penalty_weight == 20.0
    w = torch.tensor([0.3, -1.2, 2.0])
    x = torch.randn(16, 3, generator=torch.Generator().manual_seed(0))
    _, grads = penalties.input_grads(Linear(w), x)
    assert_close(build_strategy(cfg).penalty([grads]), 10.0 * w.pow(2).sum())


def test_two_d_data_uses_the_measured_recipes_and_flags_still_win():
    # The winners of `compare --tune 6` (docs/results.md), rounded to two figures; gp keeps its
    # hand-swept recipe (its winner was unstable).
    cfg = resolve(small(lipschitz="sn"))
    assert (cfg.lr_g, cfg.lr_d, cfg.n_critic, cfg.beta1, cfg.beta2, cfg.lr_decay) == (
        1.8e-3,
        1.8e-3,
        1,
        0.0,
        0.9,
        "linear",
    )
    cfg = resolve(small(lipschitz="gp"))
    assert (cfg.penalty_weight, cfg.lr_g, cfg.lr_d, cfg.n_critic, cfg.beta1, cfg.beta2, cfg.lr_decay) == (
        0.1,
        1e-3,
        1e-3,
        5,
        0.5,
        0.9,
        "none",
    )
    assert resolve(small(lipschitz="gp", penalty_weight=10.0)).penalty_weight == 10.0
    assert (resolve(small(lipschitz="clip")).clip, resolve(small(lipschitz="clip", data="shapes")).clip) == (
        0.0045,
        0.01,
    )
    for method, lr in (("gn", 7.7e-4), ("bjorck", 1.6e-3)):  # tuned later, by the same command
        cfg = resolve(small(lipschitz=method))
        assert (cfg.lr_g, cfg.lr_d, cfg.n_critic, cfg.beta1, cfg.beta2, cfg.lr_decay) == (lr, lr, 5, 0.0, 0.9, "linear")
    for method in compared_methods():  # every compared method has a 2-D recipe
        two_d, image = resolve(small(lipschitz=method)), resolve(small(lipschitz=method, data="shapes"))
        assert two_d.lr_d != image.lr_d, method
    assert resolve(small(lipschitz="r2")).penalty_weight == 20.0  # r2 was not tuned: the published strength


def test_flags_override_recipes():
    cfg = resolve(small(lipschitz="gp", lr_d=3e-4, n_critic=2, penalty_weight=0.1, loss="hinge"))
    assert (cfg.lr_d, cfg.n_critic, cfg.penalty_weight, cfg.loss, cfg.lr_g) == (3e-4, 2, 0.1, "hinge", 1e-3)


@pytest.mark.parametrize(
    "changes,message",
    [
        (dict(lipschitz="clip", penalty_weight=1.0), "--lambda/--gamma does not apply to --lipschitz clip"),
        (dict(lipschitz="gp", clip=0.1), "--clip does not apply"),
        (dict(lipschitz="sn", reg_every=4), "lazy regularisation needs a penalty"),
        (dict(lipschitz="r1", penalty_at="fake"), "--penalty-at fake is not available for --lipschitz r1"),
        (dict(lipschitz="zgp", gp_target=1.0), "--gp-target does not apply"),
        (dict(lipschitz="clip", beta1=0.5), "--beta1 and --beta2 apply to --optimizer adam only"),
        (dict(penalty_weight=-1.0), "--lambda/--gamma must be >= 0"),
        (dict(reg_every=0), "--reg-every must be > 0"),
        (dict(ema_decay=1.0), "--ema-decay must be in"),
        (dict(penalty_at="everywhere", lipschitz="zgp"), "--penalty-at 'everywhere' is not one of"),
    ],
)
def test_impossible_settings_are_refused(changes, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")):
        resolve(small(**changes))


@pytest.mark.parametrize("method", ["gp", "zgp", "r1", "r2"])
def test_batch_norm_critic_is_refused_under_a_penalty(method):
    with pytest.raises(ConfigError, match="batch normalisation"):
        Trainer(resolve(small(lipschitz=method, critic_norm="batch")))


def test_batch_norm_is_allowed_without_a_penalty():
    """Without a penalty there is no per-sample gradient for batch norm to mix: the critic is
    built with it and trains through it (its running statistics move), the losses finite."""
    trainer = Trainer(resolve(small(lipschitz="clip", critic_norm="batch")))
    norms = [m for m in trainer.critic.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    assert norms and all(int(m.num_batches_tracked) == 0 for m in norms)
    trainer.train_step()
    stats = trainer.pop_stats()
    assert all(int(m.num_batches_tracked) > 0 for m in norms) and math.isfinite(stats["loss_d"])


@pytest.mark.parametrize("target,one_sided", [(1.0, False), (0.5, False), (1.0, True)])
def test_gp_strategy_on_linear_critic_is_lambda_times_closed_form(target, one_sided):
    cfg = resolve(small(lipschitz="gp", penalty_weight=7.0, gp_target=target, one_sided=one_sided))
    w = torch.tensor([0.3, 0.4])  # norm 0.5
    from ganctl.methods import penalties

    _, g = penalties.input_grads(Linear(w), torch.randn(9, 2))
    gap = 0.5 - target
    expected = 7.0 * (max(gap, 0.0) if one_sided else gap) ** 2
    assert_close(build_strategy(cfg).penalty([g]), torch.tensor(expected))


def test_r1_uses_half_gamma_and_zgp_real_fake_sums_both_sets():
    w = torch.tensor([1.0, 2.0])  # ||w||^2 = 5
    from ganctl.methods import penalties

    _, g = penalties.input_grads(Linear(w), torch.randn(4, 2))
    assert_close(build_strategy(resolve(small(lipschitz="r1", penalty_weight=10.0))).penalty([g]), torch.tensor(25.0))
    both = build_strategy(resolve(small(lipschitz="zgp", penalty_at="real+fake", penalty_weight=2.0)))
    assert_close(both.penalty([g, g]), torch.tensor(20.0))


def test_clipped_weights_stay_in_the_box():
    trainer = Trainer(resolve(small(lipschitz="clip", clip=0.02)))
    params = list(trainer.critic.parameters())
    assert all(p.abs().max() <= 0.02 for p in params)  # clipped from the start
    for _ in range(3):
        trainer.train_step()
    assert all(p.abs().max() <= 0.02 for p in params)
    assert any(float(p.detach().abs().max()) == pytest.approx(0.02) for p in params)  # the bound is active


def _weights(critic: nn.Module) -> list[torch.Tensor]:
    return [m.weight for m in critic.modules() if isinstance(m, nn.Linear)]


def test_spectral_norm_layers_have_unit_top_singular_value():
    trainer = Trainer(resolve(small(lipschitz="sn")))
    for _ in range(10):
        trainer.train_step()
    trainer.critic.eval()
    for w in _weights(trainer.critic):
        sigma = torch.linalg.matrix_norm(w.detach(), ord=2)
        assert abs(float(sigma) - 1.0) < 0.05


def test_spectral_norm_runs_no_power_iteration_in_eval_mode():
    trainer = Trainer(resolve(small(lipschitz="sn")))
    buffers = {k: v.clone() for k, v in trainer.critic.state_dict().items() if k.endswith("_u")}
    trainer.nets.critic_values(torch.randn(16, 2))
    trainer.pop_stats()
    after = trainer.critic.state_dict()
    assert all(torch.equal(after[k], v) for k, v in buffers.items())
    trainer.train_step()  # a training forward does advance it
    after = trainer.critic.state_dict()
    assert any(not torch.equal(after[k], v) for k, v in buffers.items())


def test_lazy_regularisation_keeps_the_asked_lr_and_betas():
    # The penalty rides in an ordinary step (N batches, N steps): StyleGAN2's N/(N+1) correction,
    # made for a separate regularisation step, does not apply. Read after N steps.
    n = 4
    lazy = Trainer(
        resolve(small(lipschitz="gp", reg_every=n, n_critic=1, lr_decay="none", lr_d=1e-3, lr_g=1e-3, beta1=0.5))
    )
    penalised = []
    for _ in range(2 * n):
        lazy.train_step()
        penalised.append("penalty" in lazy.pop_stats())
    # penalty on critic steps 0 and n only
    assert penalised == [True, False, False, False, True, False, False, False]
    for opt in (lazy.opt_d, lazy.opt_g):
        group = opt.param_groups[0]
        assert (group["lr"], group["betas"]) == (1e-3, (0.5, 0.9))
    assert lazy.critic_steps == 2 * n and all(s["step"] == 2 * n for s in lazy.opt_d.state.values())


def test_lazy_penalty_is_weighted_by_its_interval():
    # On a penalised step, the critic's update equals that of a loss with weight N * lambda.
    torch.manual_seed(0)
    a = Trainer(
        resolve(small(lipschitz="gp", reg_every=3, n_critic=1, penalty_weight=2.0, optimizer="rmsprop", lr_d=1e-3))
    )
    b = Trainer(
        resolve(small(lipschitz="gp", reg_every=1, n_critic=1, penalty_weight=6.0, optimizer="rmsprop", lr_d=1e-3))
    )
    a.critic_step()
    b.critic_step()
    for pa, pb in zip(a.critic.parameters(), b.critic.parameters()):
        assert_close(pa, pb)


@pytest.mark.parametrize(
    "changes",
    [
        dict(lipschitz="gp"),
        dict(lipschitz="gp", gp_target=0.5, one_sided=True),
        dict(lipschitz="zgp", penalty_at="real+fake"),
        dict(lipschitz="r1"),
        dict(lipschitz="r2"),
    ],
)
def test_penalty_grads_are_the_derivative_of_the_penalty(changes):
    # The hand-written MLP step backpropagates these; they must be d penalty / d g exactly.
    strategy = build_strategy(resolve(small(**changes)))
    sets = len(strategy.penalty_at.split("+"))
    grads = [torch.randn(16, 2, dtype=torch.float64, requires_grad=True) for _ in range(sets)]
    want = torch.autograd.grad(strategy.penalty(grads), grads)
    for got, w in zip(strategy.penalty_grads([g.detach() for g in grads]), want):
        assert_close(got, w, rtol=1e-12, atol=1e-15)


def test_flattened_images_take_gp_s_image_recipe_at_n_critic_2_and_other_archs_keep_theirs():
    mlp = resolve(small(data="shapes", arch="mlp", lipschitz="gp"))
    settings = (mlp.n_critic, mlp.lr_g, mlp.lr_d, mlp.beta1, mlp.beta2, mlp.penalty_weight)
    assert settings == (2, 1e-4, 1e-4, 0.5, 0.9, 10.0)
    assert resolve(small(data="shapes", lipschitz="gp")).n_critic == 5  # DCGAN: WGAN-GP's own
    assert resolve(small(data="shapes", arch="mlp", lipschitz="gp", n_critic=5)).n_critic == 5  # a flag wins
    assert resolve(small(arch="mlp", lipschitz="gp")).n_critic == 5  # 2-D data: its own recipe
