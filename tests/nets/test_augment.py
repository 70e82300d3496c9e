"""--augment: DiffAugment's operations as its code defines them, ADA's controller, and the one
convention every input gradient follows under augmentation (through the augmentation, with
respect to the un-augmented image), checked on a linear critic."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import Linear, bumps, small, straight_and_resumed, write_images

import ganctl
from ganctl.errors import ConfigError
from ganctl.methods import penalties
from ganctl.methods.resolve import resolve
from ganctl.nets.augment import (
    ADA_INTERVAL,
    R_V_LIMIT,
    Ada,
    Augment,
    Augmenter,
    as_trained,
    brightness,
    contrast,
    cutout,
    r_v,
    saturation,
    translation,
)
from ganctl.training.engine import Trainer


def shifted(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """out[i, j] = x[i + dy, j + dx], zero outside: written here by slicing."""
    out = torch.zeros_like(x)
    h, w = x.shape[-2:]
    out[..., max(0, -dy) : h - max(0, dy), max(0, -dx) : w - max(0, dx)] = x[
        ..., max(0, dy) : h - max(0, -dy), max(0, dx) : w - max(0, -dx)
    ]
    return out


def test_translation_shifts_by_up_to_an_eighth_of_the_side_letting_zeros_in():
    x = torch.arange(1.0, 257.0).view(1, 1, 16, 16).repeat(300, 2, 1, 1)
    out = translation(x, torch.Generator().manual_seed(0))
    seen = set()
    for a, b in zip(x, out):
        found = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3) if torch.equal(shifted(a, dy, dx), b)]
        assert len(found) == 1, "not a shift of at most round(16 / 8) = 2 pixels"
        seen.add(found[0])
    assert len(seen) == 25  # every shift in [-2, 2]^2 is drawn


def test_cutout_zeros_a_square_of_half_the_side_clipped_at_the_border():
    x = torch.ones(2000, 3, 16, 16)
    zero = cutout(x, torch.Generator().manual_seed(0)) == 0
    assert torch.equal(zero[:, :1].expand_as(zero), zero)  # the same square on every channel
    rows, cols = zero[:, 0].any(dim=2), zero[:, 0].any(dim=1)
    assert torch.equal(zero[:, 0], rows[:, :, None] & cols[:, None, :])  # a rectangle
    heights, widths = rows.sum(1), cols.sum(1)
    assert heights.max() == widths.max() == 8 and heights.min() >= 4  # 8 x 8, cut by the border to 4 at least
    tops = rows.float().argmax(1)  # the centre ranges over 16 + 1 rows: a square at the top edge is cut
    assert (heights[tops == 0] < 8).any() and (heights == 8).float().mean() > 0.4


def test_colour_operations_are_diffaugments():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(500, 3, 8, 8, generator=g) * 2 - 1
    shift = brightness(x, g) - x
    assert torch.allclose(shift, shift[:, :1, :1, :1].expand_as(shift), atol=1e-6)
    assert shift.min() >= -0.5 and shift.max() < 0.5 and shift.std() > 0.25  # u - 0.5, u ~ U[0, 1)
    grey = x[:, :1].expand(-1, 3, -1, -1)
    assert torch.allclose(saturation(grey, g), grey, atol=1e-6)  # no colour to scale
    sat = saturation(x, g)
    assert torch.allclose(sat.mean(1), x.mean(1), atol=1e-5)  # the grey level is kept
    factor = (sat - x.mean(1, keepdim=True)) / (x - x.mean(1, keepdim=True))
    factor = factor[:, 0, 0, 0]
    assert factor.min() >= 0 and factor.max() < 2  # 2u
    con = contrast(x, g)
    assert torch.allclose(con.mean((1, 2, 3)), x.mean((1, 2, 3)), atol=1e-5)
    spread = con.std((1, 2, 3)) / x.std((1, 2, 3))
    assert spread.min() >= 0.5 - 1e-5 and spread.max() < 1.5  # u + 0.5


def test_each_operation_touches_a_share_p_of_the_samples():
    x = torch.ones(4000, 1, 8, 8)
    g = torch.Generator().manual_seed(1)
    assert torch.equal(Augment(("cutout",))(x, g, 0.0), x)
    touched = (Augment(("cutout",))(x, g, 0.3) != x).flatten(1).any(1).float().mean()
    assert abs(float(touched) - 0.3) < 0.03
    assert (Augment(("cutout",))(x, g, 1.0) != x).flatten(1).any(1).all()


def test_the_augmentation_s_lipschitz_factor_bounds_d_of_t_and_is_reached():
    """A linear critic <w, x>: through colour its gradient is 2u1 (u2 + 0.5) w when w has zero
    mean over the channels at every pixel and over the image, so the bound 3 ||w|| is
    approached and never passed; any other w stays under it too."""
    assert Augment(("color",)).lipschitz_factor(3) == 3.0 and Augment(("color",)).lipschitz_factor(1) == 1.5
    assert Augment(("translation", "cutout")).lipschitz_factor(3) == 1.0
    g = torch.Generator().manual_seed(0)
    pattern = torch.randn(8, 8, generator=g)
    pattern -= pattern.mean()
    orthogonal = torch.stack([pattern, -pattern, torch.zeros(8, 8)])
    for w, reached in ((orthogonal, True), (torch.randn(3, 8, 8, generator=g), False)):
        for policy in (("color",), ("color", "translation", "cutout")):
            x = torch.rand(4096, 3, 8, 8, generator=g) * 2 - 1
            critic, augment = Linear(w), Augment(policy)
            seen = penalties.grad_norm(penalties.input_grads(lambda v: critic(augment(v, g)), x)[1])  # noqa: B023
            ratio = seen / w.norm()
            assert float(ratio.max()) <= Augment(policy).lipschitz_factor(3) + 1e-5
            if reached and policy == ("color",):
                assert float(ratio.max()) > 2.9


def test_ada_moves_p_as_stylegan2_ada_does():
    """Every 4 critic steps p moves by sign(r - target) * batch * 4 / (kimg * 1000), floored at 0."""
    ada = Ada(target=0.6, kimg=500)
    step = 64 * ADA_INTERVAL / 500_000
    for _ in range(ADA_INTERVAL):
        ada.observe(torch.ones(64))  # r = 1 > 0.6
    assert ada.p == pytest.approx(step) and ada.last == 1.0
    for _ in range(ADA_INTERVAL - 1):
        ada.observe(-torch.ones(64))
    assert ada.p == pytest.approx(step)  # not yet: four steps make an adjustment
    ada.observe(-torch.ones(64))
    assert ada.p == 0.0
    for _ in range(ADA_INTERVAL):
        ada.observe(-torch.ones(64))
    assert ada.p == 0.0  # floored
    even = Ada(target=0.0, kimg=500, p=0.5)
    for _ in range(ADA_INTERVAL):
        even.observe(torch.tensor([1.0, -1.0]))
    assert even.p == 0.5  # on the target: np.sign is 0
    copy = Ada(0.6, 500)
    copy.load(ada.state())
    assert copy.state() == ada.state()


def image_trainer(**changes) -> Trainer:
    base = dict(data="shapes", image_size=16, arch="dcgan", width=8, z_dim=16, batch_size=16, lipschitz="r1")
    return Trainer(resolve(small(**{**base, **changes})))


def test_gradnorm_measures_as_training_penalises():
    critic = Linear(torch.ones(3, 16, 16))
    x = torch.rand(64, 3, 16, 16) * 2 - 1
    g = torch.Generator().manual_seed(0)
    plain = penalties.grad_norm(penalties.input_grads(as_trained(critic, Augmenter(small()), g), x)[1])
    assert torch.allclose(plain, torch.full((64,), math.sqrt(768.0)))
    shifts = Augmenter(small(data="shapes", augment="translation"))
    seen = penalties.grad_norm(penalties.input_grads(as_trained(critic, shifts, g), x)[1])
    assert (seen <= math.sqrt(768.0) + 1e-4).all() and (seen < math.sqrt(768.0) - 1).any()
    assert as_trained(critic, Augmenter(small(data="shapes", augment="translation", augment_p=0.0)), g) is critic


def test_augmented_adaptive_relativistic_run_resumes_bitwise(tmp_path):
    """R3GAN's recipe (relativistic pairs, R1 + R2, cosine decays of lr, gamma, beta2 and the
    EMA's half-life) with every augmentation under ADA: resumed at step 3 it ends where an
    uninterrupted run does, p included."""
    cfg = dict(lipschitz="r3gan", augment="color,translation,cutout", augment_p=0.5, ada_target=0.6, ada_kimg=0.05)
    cfg.update(steps=6, decay_steps=6)
    path = tmp_path / "c.safetensors"
    straight, first, resumed = straight_and_resumed(lambda: image_trainer(**cfg), 6, 3, path)
    assert straight.ada.p != 0.5 and resumed.ada.state() == straight.ada.state()  # p moved at step 4
    for a, b in zip(straight.generator.state_dict().values(), resumed.generator.state_dict().values()):
        assert torch.equal(a, b)
    stats = straight.pop_stats()
    assert stats["augment_p"] > 0 and "ada_heuristic" in stats
    assert ganctl.load(path).augment.p == first.ada.p


def test_bad_augmentation_settings_are_refused():
    with pytest.raises(ConfigError, match="'flip' is not one of: color, translation, cutout"):
        resolve(small(data="shapes", augment="color,flip"))
    with pytest.raises(ConfigError, match="augmentation is for images"):
        resolve(small(augment="color"))
    with pytest.raises(ConfigError, match="--ada-target needs --augment"):
        resolve(small(data="shapes", ada_target=0.6))
    with pytest.raises(ConfigError, match="--augment-p must be in"):
        resolve(small(data="shapes", augment="cutout", augment_p=1.5))


def test_ada_adjusts_on_the_signs_of_every_process():
    """Under torchrun each rank sees its own batch; the sums of all of them move one p (ADA's
    step counts every real image behind the signs: here two ranks of 64)."""
    one, two = Ada(target=0.6, kimg=500), Ada(target=0.6, kimg=500)

    def other_rank_all_negative(sums: list[float]) -> list[float]:
        return [sums[0] - 64.0 * ADA_INTERVAL, sums[1] + 64.0 * ADA_INTERVAL]

    for _ in range(ADA_INTERVAL):
        one.observe(torch.ones(64))
        two.observe(torch.ones(64), other_rank_all_negative)
    assert one.p == pytest.approx(64 * ADA_INTERVAL / 500_000) and one.last == 1.0
    assert two.last == 0.0 and two.p == 0.0  # r = 0 < 0.6 once the other rank counts


def test_every_policy_names_operations_that_exist_and_are_bounded():
    """The policies' composition lives in the settings (torch-free, for --help); the operations
    and their Jacobian bounds here, by the same names."""
    from ganctl.config import AUGMENT_POLICIES
    from ganctl.nets.augment import OP_NORMS, OPS

    named = {op for ops in AUGMENT_POLICIES.values() for op in ops}
    assert named == set(OPS) == set(OP_NORMS)


def test_ada_s_validation_heuristic_is_r_v():
    """r_v = (E[D(train)] - E[D(validation)]) / (E[D(train)] - E[D(generated)]): 0 when unseen
    images score as the training ones, 1 when as generated ones; p moves by its side of the
    target, once per ADA_INTERVAL critic steps, on every process's sums."""
    assert r_v(2.0, 2.0, 0.0) == 0.0 and r_v(2.0, 0.0, 0.0) == 1.0 and r_v(3.0, 2.0, 1.0) == 0.5
    assert r_v(1.0, 0.0, 1.0) == R_V_LIMIT and r_v(1.0, 1.5, 2.0) == 0.0  # no real-generated gap left
    ada, asked = Ada(target=0.6, kimg=500, heuristic="validation"), []

    def unseen_scored_as_generated():
        asked.append(1)
        return torch.zeros(64)

    for _ in range(ADA_INTERVAL):
        ada.observe_outputs(torch.full((64,), 2.0), torch.zeros(64), unseen_scored_as_generated)
    assert len(asked) == 1 and ada.last == 1.0 and ada.p == pytest.approx(64 * ADA_INTERVAL / 500_000)
    for _ in range(ADA_INTERVAL):
        ada.observe_outputs(torch.full((64,), 2.0), torch.zeros(64), lambda: torch.full((64,), 1.8))
    assert ada.last == pytest.approx(0.1) and ada.p == 0.0  # r_v 0.1 < 0.6: back down
    copy = Ada(0.6, 500, heuristic="validation")
    copy.load(ada.state())
    assert copy.state() == ada.state()
    old = {k: v for k, v in ada.state().items() if k != "fake"}  # a checkpoint from before the heuristic
    copy.load(old)
    assert copy.fake_total == 0.0


def test_a_run_adapting_on_held_out_images_reads_them_and_resumes_bitwise(tmp_path):
    """--ada-heuristic validation on a --holdout split: the critic is read on held-out images at
    each adjustment (in eval mode), and a resumed run ends where an uninterrupted one does."""
    folder = tmp_path / "blobs"
    write_images(folder, bumps(48))
    cfg = dict(
        data=str(folder), arch="mlp", lipschitz="gp", width=32, z_dim=8, batch_size=16, holdout="0.25",
        augment="translation", augment_p=0.5, ada_target=0.1, ada_heuristic="validation", ada_kimg=0.05, steps=6,
    )  # fmt: skip
    straight, _, resumed = straight_and_resumed(lambda: Trainer(resolve(small(**cfg))), 6, 3, tmp_path / "c.st")
    assert len(straight.dataset) == 36 and len(straight.dataset.held_out) == 12
    assert straight.ada.last is not None and straight.ada.p != 0.5  # r_v moved it
    assert resumed.ada.state() == straight.ada.state()
    for a, b in zip(straight.generator.state_dict().values(), resumed.generator.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(ConfigError, match="--ada-heuristic validation reads the critic on held-out images"):
        resolve(small(**{**cfg, "holdout": None}))
