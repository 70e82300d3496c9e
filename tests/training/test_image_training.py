"""Short image training runs on CPU, resume on images, mixed precision and devices."""

import json
import math

import pytest
import torch
from conftest import small, straight_and_resumed
from PIL import Image

import ganctl
from ganctl.methods.registry import available_methods
from ganctl.methods.resolve import resolve
from ganctl.nets import checkpoint
from ganctl.training.engine import Trainer
from ganctl.training.schedule import lr_factor
from ganctl.training.state import capture

# bjorck orthonormalises dense layers and refuses a convolutional critic (methods/test_constrained.py).
METHODS = [m for m in available_methods() if m != "bjorck"]


def tiny_images(**changes):
    base = dict(data="shapes", width=8, z_dim=16, batch_size=16, steps=4, log_every=2, eval_samples=64)
    base.update(changes)
    return small(**base)


@pytest.mark.parametrize("method", METHODS)
def test_short_image_run_for_each_method(method, tmp_path):
    cfg = tiny_images(lipschitz=method, steps=3, eval_every=3, sample_every=3)
    summary = ganctl.train(cfg, tmp_path / "run")
    final = summary.final
    assert summary.config["arch"] == "dcgan" and summary.config["image_size"] == 32
    assert {"valid_share", "modes", "modes_hit", "modes_total"} <= final.keys() and final["modes_total"] == 20
    assert all(math.isfinite(final[k]) for k in ("loss_d", "loss_g", "critic_gap", "grad_norm"))
    assert ("wasserstein" in final) == (summary.config["loss"] == "wasserstein")  # a W1 estimate only there
    grid = Image.open(tmp_path / "run" / "samples" / "final.png")
    assert grid.size == (8 * 34 + 2, 8 * 34 + 2) and grid.mode == "RGB"
    # The checkpoint rebuilds without reading any data.
    ck = ganctl.load(tmp_path / "run")
    assert ck.config.channels == 3 and not ck.data_loaded


def test_critic_separates_real_from_fake_on_shapes():
    trainer = Trainer(resolve(tiny_images(lipschitz="gp", batch_size=32, n_critic=2)))
    for _ in range(15):
        trainer.train_step()
    assert trainer.pop_stats()["wasserstein"] > 0.05


@pytest.mark.parametrize("amp", ["none", "bf16", "fp16"])
def test_image_resume_is_bitwise_with_and_without_amp(amp, tmp_path):
    cfg = tiny_images(lipschitz="gp", amp=amp, n_critic=2)
    straight, _, resumed = straight_and_resumed(lambda: Trainer(resolve(cfg)), 4, 2, tmp_path / "c.safetensors")
    for a, b in zip(straight.generator.state_dict().values(), resumed.generator.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(straight.critic.parameters(), resumed.critic.parameters()):
        assert torch.equal(a, b)
    assert straight.guard.scaler_d.get_scale() == resumed.guard.scaler_d.get_scale()


def test_fp16_overflow_skips_the_step_and_keeps_metrics_finite():
    trainer = Trainer(resolve(tiny_images(lipschitz="gp", amp="fp16", n_critic=1)))
    trainer.guard.scaler_d = torch.amp.GradScaler("cpu", init_scale=2.0**40)  # certain overflow
    for _ in range(3):
        trainer.train_step()
    stats = trainer.pop_stats()
    assert stats["amp_skipped"] >= 1 and stats["amp_scale"] < 2.0**40
    assert all(math.isfinite(v) for v in stats.values())


def test_a_checkpoint_from_another_device_loads_and_says_so(tmp_path):
    trainer = Trainer(resolve(tiny_images()))
    trainer.train_step()
    path = checkpoint.save(capture(trainer), tmp_path / "c.safetensors")
    tensors, meta, _ = checkpoint.read(path)
    from safetensors.torch import save_file

    save_file(tensors, str(path), metadata={**meta, "rng_device": "cuda"})  # as if written on a GPU
    ck = ganctl.resume(path)
    assert ck.exact_resume is False
    assert torch.equal(ck.generator.state_dict()["1.weight"], trainer.generator.state_dict()["1.weight"])


def test_linear_lr_decay_reaches_zero_and_survives_a_longer_resume(tmp_path):
    cfg = small(lr_decay="linear", steps=4)
    trainer = Trainer(resolve(cfg))
    assert trainer.cfg.decay_steps == 4
    base = trainer.opt_g.param_groups[0]["lr"]
    lrs = []
    for _ in range(4):
        trainer.train_step()
        lrs.append(trainer.opt_g.param_groups[0]["lr"] / base)
    assert lrs == pytest.approx([1.0, 0.75, 0.5, 0.25])
    path = checkpoint.save(capture(trainer), tmp_path / "c.safetensors")
    resumed = ganctl.resume(path, overrides={"steps": 8})
    assert resumed.cfg.decay_steps == 4 and lr_factor(resumed.cfg, resumed.step) == 0.0
    assert json.loads(checkpoint.read(path)[1]["config"])["decay_steps"] == 4


AUGMENTED = [(m, "dcgan", m in ("sn", "gp")) for m in METHODS] + [("bjorck", "mlp", False), ("gp", "mlp", False)]


@pytest.mark.parametrize("method, arch, conditional", AUGMENTED)
def test_every_method_trains_with_every_augmentation_and_ada(method, arch, conditional):
    """--augment works whatever the method, loss, architecture and conditioning (projection and
    AC-GAN critics see augmented images too): two steps, every operation, ADA's controller on,
    the losses finite and the probability reported."""
    cfg = tiny_images(lipschitz=method, arch=arch, conditional=conditional, steps=2)
    cfg = cfg.replace(augment="color,translation,cutout", ada_target=0.6)
    trainer = Trainer(resolve(cfg))
    observe, after = trainer.ada.observe, []  # p as ADA's controller leaves it after each critic step

    def recording(*args, **kwargs):
        observe(*args, **kwargs)
        after.append(trainer.augment.p)

    trainer.ada.observe = recording
    for _ in range(2):
        trainer.train_step()
    stats = trainer.pop_stats()
    assert all(math.isfinite(stats[k]) for k in ("loss_d", "loss_g"))
    assert len(after) == 2 * trainer.cfg.n_critic  # every critic step reports
    assert stats["augment_p"] == pytest.approx(sum(after) / len(after), rel=1e-6, abs=1e-12)
    assert not trainer.uses_fused_step  # the hand-written MLP step has no augmentation


def test_a_resumed_channels_last_critic_keeps_its_moments_in_its_layout(tmp_path):
    # A checkpoint's Adam moments are contiguous; loaded against channels-last weights, the
    # fused update paired them by memory position and the resumed run drifted 5e-4 in two steps.
    cfg = tiny_images(lipschitz="gp", n_critic=2)
    _, _, resumed = straight_and_resumed(lambda: Trainer(resolve(cfg)), 4, 2, tmp_path / "c.safetensors")
    weights = [p for p in resumed.critic.parameters() if p.dim() == 4]
    assert weights and all(p.is_contiguous(memory_format=torch.channels_last) for p in weights)
    for p in weights:
        assert all(resumed.opt_d.state[p][k].stride() == p.stride() for k in ("exp_avg", "exp_avg_sq"))
