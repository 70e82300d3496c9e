"""The certified W1 lower bound (`ganctl eval --w1-bound`): against translations, whose W1 is
known exactly, against a sample of the same distribution, in the order of known distances,
and through the command line with its threshold."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from ganctl.cli import app
from ganctl.quality.w1bound import Protocol, certified_w1

pytest.importorskip("orthogonium")

runner = CliRunner()


def blobs(n: int, seed: int, side: int = 16) -> torch.Tensor:
    """Images in [-1, 1]: smooth random blobs, a little like data."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand((n, 1, 4, 4), generator=g) * 1.6 - 0.8
    return torch.nn.functional.interpolate(low, size=(side, side), mode="bilinear", align_corners=False)


def test_a_translation_s_w1_is_bounded_from_below_and_never_overstated():
    """Shifting every pixel by delta moves the distribution by delta * sqrt(H W): W1 exactly."""
    real, delta = blobs(800, 0), 0.1
    fake = blobs(800, 1) + delta
    exact = delta * 16
    found = certified_w1(real, fake, Protocol(steps=300, width=8, lr=3e-3))
    assert found["lipschitz"] <= 1 + 1e-5
    assert found["value"] <= exact + 3 * found["se"]  # a lower bound, within its sampling error
    assert found["value"] > 0.5 * exact  # and a useful one: the critic found the direction
    assert found["n_held"] == [160, 160] and found["n_train"] == [640, 640]


def test_on_points_a_translation_is_found_nearly_whole():
    g = torch.Generator().manual_seed(0)
    real = torch.randn((2000, 2), generator=g)
    fake = torch.randn((2000, 2), generator=g) + torch.tensor([1.5, 0.0])
    found = certified_w1(real, fake, Protocol(steps=300, width=32))
    assert 1.2 < found["value"] <= 1.5 + 3 * found["se"]


def test_two_samples_of_one_distribution_are_held_out_near_zero():
    found = certified_w1(blobs(600, 0), blobs(600, 1), Protocol(steps=150, width=8))
    assert abs(found["value"]) < 3 * found["se"] + 0.05
    assert found["train_value"] > found["value"]  # the training parts' gap is the biased one


def test_the_bound_orders_generators_by_their_known_distance():
    real = blobs(600, 0)
    values = [
        certified_w1(
            real,
            blobs(600, 1) + noise * torch.randn(600, 1, 16, 16, generator=torch.Generator().manual_seed(2)),
            Protocol(steps=150, width=8),
        )["value"]
        for noise in (0.05, 0.2, 0.5)
    ]
    assert values[0] < values[1] < values[2]


def test_the_same_seed_gives_the_same_bound():
    real, fake = blobs(200, 0), blobs(200, 1) + 0.2
    a, b = (certified_w1(real, fake, Protocol(steps=20, width=8, seed=3)) for _ in range(2))
    assert a["value"] == b["value"] and a["protocol"]["seed"] == 3


def test_eval_w1_bound_through_the_command_line_with_its_threshold(tmp_path):
    samples = tmp_path / "fake.npy"
    np.save(samples, (blobs(200, 1, side=32).expand(-1, 3, -1, -1) + 0.3).clamp(-1, 1).numpy())
    args = ["eval", "--fake", str(samples), "--data", "shapes", "--metrics", "none", "--n", "200", "--w1-bound"]
    r = runner.invoke(app, [*args, "--w1-steps", "30", "--json"])
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    found = report["w1_bound"]
    assert report["metrics"]["w1_bound"] == found["value"] > 0
    assert found["protocol"]["steps"] == 30 and found["lipschitz"] <= 1 + 1e-5
    gated = runner.invoke(app, [*args, "--w1-steps", "30", "--max-w1-bound", str(found["value"] / 2)])
    assert gated.exit_code == 1 and "w1_bound" in gated.output
    lone = runner.invoke(app, ["eval", "--fake", str(samples), "--data", "shapes", "--w1-steps", "30"])
    assert lone.exit_code == 2 and "--w1-bound" in lone.output and "Traceback" not in lone.output


def test_on_2d_points_the_bound_sits_below_the_exact_w1_of_the_same_samples(tmp_path):
    """An independent reference: `eval`'s exact W1 (an optimal matching) of the same points."""
    points = tmp_path / "points.npy"
    np.save(points, (0.5 * torch.randn(600, 2, generator=torch.Generator().manual_seed(0))).numpy())
    args = ["eval", "--fake", str(points), "--data", "8gaussians", "--n", "600", "--w1-bound", "--w1-steps", "150"]
    r = runner.invoke(app, [*args, "--json"])
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    found, exact = report["w1_bound"], report["metrics"]["w1"]
    assert 0.5 * exact < found["value"] <= exact + 3 * found["se"]


def test_a_critic_whose_bound_is_not_certified_claims_nothing(monkeypatch):
    from ganctl.errors import ConfigError
    from ganctl.lipschitz.bounds import LayerBound
    from ganctl.quality import w1bound

    monkeypatch.setattr(w1bound, "upper_bound", lambda *a, **k: (1.0, [LayerBound("0", "X", 1.0, "?", "estimated")]))
    with pytest.raises(ConfigError, match="not certified"):
        certified_w1(blobs(40, 0), blobs(40, 1), Protocol(steps=2, width=8))


def test_a_checkpoint_s_generator_is_bounded_and_bad_inputs_are_one_line(tmp_path):
    from conftest import small

    import ganctl
    from ganctl.errors import DataError
    from ganctl.quality.w1bound import critic_for

    run = tmp_path / "run"
    ganctl.train(small(data="shapes", arch="dcgan", width=8, z_dim=16, batch_size=16, image_size=16, steps=2), run)
    r = runner.invoke(
        app, ["eval", str(run), "--metrics", "none", "--n", "100", "--w1-bound", "--w1-steps", "10", "--json"]
    )
    assert r.exit_code == 0, r.output
    found = json.loads(r.stdout)["w1_bound"]
    assert found["n_held"] == [20, 20] and found["lipschitz"] <= 1 + 1e-5 and found["value"] > 0  # an untrained G
    stats = tmp_path / "ref.npz"
    np.savez(stats, mu=np.zeros(3), sigma=np.eye(3))
    alone = runner.invoke(app, ["eval", "--fake", str(tmp_path), "--ref-stats", str(stats), "--w1-bound"])
    assert alone.exit_code == 2 and "--w1-bound" in alone.output and "give --data" in alone.output
    with pytest.raises(DataError, match="square images of side"):
        critic_for((3, 20, 20), 8)
