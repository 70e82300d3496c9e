import torch

from conftest import small
from ganctl.engine import Trainer


def run(cfg, steps=4):
    trainer = Trainer(cfg)
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
    trainer = Trainer(small(ema_decay=0.999))
    start = [p.clone() for p in trainer.ema.parameters()]
    trainer.train_step()
    # after step t=1 the decay is min(0.999, 2/11): the EMA moved 9/11 of the way
    for e, s, p in zip(trainer.ema.parameters(), start, trainer.generator.parameters()):
        torch.testing.assert_close(e, s + (p - s) * (1 - 2 / 11))


def test_no_ema_when_disabled():
    trainer = Trainer(small(ema_decay=0.0))
    assert trainer.ema is None and trainer.sampler is trainer.generator


def test_critic_gradients_do_not_leak_into_the_generator_step():
    trainer = Trainer(small(n_critic=1))
    trainer._generator_step()
    assert all(p.grad is None for p in trainer.critic.parameters())
    assert all(p.requires_grad for p in trainer.critic.parameters())
