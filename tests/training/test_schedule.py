"""Decays of the learning rate, the penalty weight, Adam's beta2 and the EMA's half-life, in the
shapes R3GAN's code and WGAN-GP's use, and the R3GAN recipe that sets them."""

from __future__ import annotations

import math

import pytest
from conftest import small

from ganctl.errors import ConfigError
from ganctl.methods.resolve import resolve
from ganctl.training import schedule
from ganctl.training.engine import Trainer


def r3gan_cosine(cur, base, total, final):
    """brownvc/R3GAN training_loop.py's cosine_decay_with_warmup without warm-up or hold."""
    decay = 0.5 * (1 + math.cos(math.pi * cur / total))
    value = base + (1 - decay) * (final - base)
    return final if cur > total else value


@pytest.mark.parametrize("step", [0, 1, 250, 500, 999, 1000, 1500])
def test_shapes_match_their_sources(step):
    assert schedule.shaped("cosine", 2e-4, 5e-5, step, 1000) == pytest.approx(r3gan_cosine(step, 2e-4, 1000, 5e-5))
    assert schedule.shaped("linear", 1.0, 0.0, step, 1000) == max(0.0, 1.0 - step / 1000)  # WGAN-GP's
    assert schedule.shaped("none", 3.0, 7.0, step, 1000) == 3.0


def test_the_r3gan_recipe_is_its_presets():
    cfg = resolve(small(data="shapes", image_size=32, lipschitz="r3gan", batch_size=None))
    assert (cfg.loss, cfg.penalty_at, cfg.penalty_weight, cfg.gamma_final) == ("rpgan", "real+fake", 0.05, 0.005)
    assert (cfg.beta1, cfg.beta2, cfg.beta2_final, cfg.n_critic, cfg.batch_size) == (0.0, 0.9, 0.99, 1, 512)
    assert (cfg.lr_g, cfg.lr_final, cfg.ema_kimg, cfg.ema_decay_shape) == (2e-4, 0.25, 5000.0, "cosine")
    assert cfg.decay_steps == math.ceil(2e7 / 512)  # its 2e7 images
    assert resolve(small(data="shapes", image_size=32, lipschitz="r3gan", batch_size=64)).decay_steps == 312_500
    ffhq = resolve(small(data="shapes", image_size=64, lipschitz="r3gan", batch_size=None))
    assert (ffhq.penalty_weight, ffhq.gamma_final, ffhq.ema_kimg, ffhq.batch_size) == (2.0, 0.2, 500.0, 256)


def test_r3gan_s_horizon_counts_the_batch_of_every_process(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")  # as torchrun sets it in each of 4 processes
    four = resolve(small(data="shapes", image_size=32, lipschitz="r3gan", batch_size=64))
    assert four.decay_steps == 2e7 / (64 * 4)  # 78,125 steps of 256 images
    assert resolve(small(data="shapes", image_size=32, lipschitz="r3gan", decay_steps=1000)).decay_steps == 1000


def test_a_trainer_follows_every_schedule():
    cfg = resolve(small(data="shapes", image_size=16, arch="dcgan", width=8, z_dim=16, lipschitz="r3gan", batch_size=8))
    cfg = cfg.replace(decay_steps=4)
    trainer = Trainer(cfg)
    for step in range(6):
        trainer.train_step()
        t = min(step / 4, 1.0)
        c = 0.5 * (1 - math.cos(math.pi * t))
        assert trainer.strategy.weight == pytest.approx(0.05 + (0.005 - 0.05) * c)
        group = trainer.opt_d.param_groups[0]
        assert group["lr"] == pytest.approx(2e-4 * (1 + (0.25 - 1) * c))
        assert group["betas"] == pytest.approx((0.0, 0.9 + (0.99 - 0.9) * c))
    half_life = 5_000_000 * 0.5 * (1 - math.cos(math.pi * 2 / 4))  # R3GAN: 0.5 ** (batch / half-life)
    assert schedule.ema_beta(cfg, 2, 8) == pytest.approx(0.5 ** (8 / half_life))
    assert schedule.ema_beta(cfg, 0, 8) == 0.0  # a half-life of 0: the EMA is the generator
    plain = resolve(small())
    assert schedule.ema_beta(plain, 5, 64) == min(0.999, 6 / 15)  # ganctl's own warm-up, unchanged
    constant = resolve(small(ema_kimg=10.0))  # a fixed half-life of 10,000 images, StyleGAN2's ema_kimg
    assert schedule.ema_beta(constant, 0, 64) == schedule.ema_beta(constant, 500, 64) == 0.5 ** (64 / 10_000)


def test_decays_name_what_they_miss():
    with pytest.raises(ConfigError, match="--gamma-decay cosine needs --gamma-final"):
        resolve(small(lipschitz="gp", gamma_decay="cosine"))
    with pytest.raises(ConfigError, match="--lipschitz sn has no penalty weight"):
        resolve(small(lipschitz="sn", gamma_decay="linear", gamma_final=1.0))
    with pytest.raises(ConfigError, match="beta2 is Adam's; --optimizer is rmsprop"):
        resolve(small(lipschitz="r1", beta2_decay="cosine", beta2_final=0.99))
    with pytest.raises(ConfigError, match="--ema-schedule cosine schedules the half-life of --ema-kimg"):
        resolve(small(ema_decay_shape="cosine"))
    with pytest.raises(ConfigError, match="--gamma-final is where --gamma-decay ends: give --gamma-decay linear"):
        resolve(small(lipschitz="gp", gamma_final=1.0))
    with pytest.raises(ConfigError, match="--lr-final is where --lr-decay ends"):
        resolve(small(lipschitz="gp", lr_final=0.5))
    plain = resolve(small(data="shapes", image_size=32, lipschitz="r3gan", gamma_decay="none"))
    assert plain.gamma_final is None and plain.beta2_final == 0.99  # the recipe's other decays stay
