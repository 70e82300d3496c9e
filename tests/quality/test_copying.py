"""The copying scores: Meehan et al.'s C_T against their code's output on the same inputs, the
Mann-Whitney z against a count of pairs, the nearer-seen share on generators that copy, draw
afresh and under-fit, and `ganctl eval --holdout` end to end with its refusals."""

import math

import numpy as np
import pytest
import torch
from conftest import bumps, invoke, parse_json, write_images
from PIL import Image

from ganctl.errors import DataError
from ganctl.quality import copying


def meehan_inputs():
    """The inputs their C_T was run on (casey-meehan/data-copying, data_copying_tests.py, at the
    snapshot read for ganctl; scipy 1.x's mannwhitneyu given 1-D arrays): training T, test Pn
    and generated Qm, half of Qm copies of T with small noise, and three cells by x0."""
    rng = np.random.default_rng(7)
    t, pn = rng.normal(size=(300, 5)), rng.normal(size=(120, 5))
    qm = np.concatenate([t[:150] + 0.05 * rng.normal(size=(150, 5)), rng.normal(size=(250, 5))])

    def cell(x):
        return (x[:, 0] > -0.5).astype(np.int64) + (x[:, 0] > 0.5).astype(np.int64)

    return t, pn, qm, cell


# Their code's output on meehan_inputs(): C_T, each cell's Z_U, and C_T with cell 2 thinned to 15
# generated samples (below tau = 20/m, so it no longer counts).
THEIR_C_T = -3.361512191726298
THEIR_Z_U = (-3.9005047902074304, -3.17849069495764, -2.863435882733925)
THEIR_C_T_THINNED = -3.592328042234959


def test_c_t_is_meehan_et_al_s_on_the_same_inputs():
    t, pn, qm, cell = meehan_inputs()
    as_t = torch.from_numpy
    found = copying.c_t(as_t(pn), as_t(cell(pn)), as_t(qm), as_t(cell(qm)), as_t(t), as_t(cell(t)), 20 / len(qm))
    assert found["c_t"] == pytest.approx(THEIR_C_T, rel=1e-12)
    assert [c["z_u"] for c in found["per_cell"]] == pytest.approx(THEIR_Z_U, rel=1e-12)
    thinned = np.concatenate([qm[cell(qm) < 2], qm[cell(qm) == 2][:15]])
    found = copying.c_t(
        as_t(pn), as_t(cell(pn)), as_t(thinned), as_t(cell(thinned)), as_t(t), as_t(cell(t)), 20 / len(thinned)
    )
    assert found["c_t"] == pytest.approx(THEIR_C_T_THINNED, rel=1e-12) and found["cells_counted"] == 2


def test_z_u_counts_the_pairs_where_a_generated_distance_is_larger():
    rng = np.random.default_rng(3)
    fake, held = rng.exponential(size=37).round(1), rng.exponential(size=23).round(1)  # ties on purpose
    u = sum((f > h) + 0.5 * (f == h) for f in fake for h in held)
    m, n = len(fake), len(held)
    expected = (u - (n * m / 2 - 0.5)) / math.sqrt(n * m * (n + m + 1) / 12)
    assert copying.z_u(fake, held) == pytest.approx(expected, rel=1e-12)


def gaussian_sets(seed=0):
    g = torch.Generator().manual_seed(seed)
    train, held, fresh = (torch.randn(n, 8, generator=g) for n in (300, 150, 2000))
    copies = train[torch.randint(300, (2000,), generator=g)] + 0.01 * torch.randn(2000, 8, generator=g)
    return train, held, fresh, copies


def test_a_generator_that_copies_is_told_from_one_that_draws_afresh_or_underfits():
    train, held, fresh, copies = gaussian_sets()
    afresh, copied = copying.nearer_seen(fresh, train, held), copying.nearer_seen(copies, train, held)
    assert abs(afresh["nearer_seen"] - 0.5) < 3 * afresh["nearer_seen_se"] and copied["nearer_seen"] > 0.99
    half = copying.nearer_seen(torch.cat([fresh[:1000], copies[:1000]]), train, held)  # half of them copies
    assert abs(half["nearer_seen"] - 0.75) < 3 * half["nearer_seen_se"]
    assert abs(afresh["held_nearer_seen"] - 0.5) < 3 * afresh["held_nearer_seen_se"] + 0.02
    assert copied["held_nearer_seen"] == afresh["held_nearer_seen"]  # the reference is the held-out set's own
    assert abs(copying.data_copying(fresh, train, held)["c_t"]) < 3
    assert copying.data_copying(copies, train, held)["c_t"] < -10
    assert copying.data_copying(3 * fresh, train, held)["c_t"] > 10  # far from the data: under-fitting


def test_a_cell_without_held_out_images_is_made_again_with_fewer():
    train, held, fresh, _ = gaussian_sets(1)
    apart = torch.tensor([6.0] + [0.0] * 7)
    train, fresh = torch.cat([train - apart, train + apart]), torch.cat([fresh - apart, fresh + apart])
    lopsided = held - apart  # the cells of the cluster at +6 get no held-out image
    found = copying.data_copying(fresh, train, lopsided, k=6)
    assert found["cells"] < found["cells_asked"] == 6 and all(c["held_share"] > 0 for c in found["per_cell"])
    with pytest.raises(DataError, match="at least 2 held-out"):
        copying.nearer_seen(fresh, train, held[:1])


def blobs(n, seed):
    return bumps(n, seed).numpy()


def test_eval_holdout_scores_copies_draws_them_and_gates(tmp_path):
    train, held = blobs(120, 0), blobs(60, 1)
    write_images(tmp_path / "train", train)
    write_images(tmp_path / "held", held)
    write_images(tmp_path / "copies", train[np.random.default_rng(2).integers(0, 120, 200)])
    write_images(tmp_path / "fresh", blobs(200, 3))
    picture = tmp_path / "copies.png"
    common = ("--data", tmp_path / "train", "--holdout", tmp_path / "held", "--metrics", "none", "--json")
    r = invoke("eval", "--fake", tmp_path / "copies", *common, "--copies", picture, "--max-copying", 0.6)
    assert r.exit_code == 1 and "--max-copying 0.6" in r.stderr
    report = parse_json(r.stdout)
    copied = report["metrics"]
    assert copied["nearer_seen[pixels]"] > 0.95 and copied["c_t[pixels]"] < -3
    assert report["copying"]["n_train"] == 120 and report["copying"]["n_held"] == 60
    with Image.open(picture) as drawn:  # 16 samples, each beside its training and held-out neighbour, x4
        assert drawn.size == (6 * 64 + 7 * 2, 8 * 64 + 9 * 2)
    r = invoke("eval", "--fake", tmp_path / "fresh", *common, "--max-copying", 0.6)
    fresh = parse_json(r.stdout)["metrics"]
    assert r.exit_code == 0 and fresh["nearer_seen[pixels]"] < 0.65 and abs(fresh["c_t[pixels]"]) < 3
    assert abs(fresh["held_nearer_seen[pixels]"] - 0.5) < 0.2


@pytest.mark.parametrize(
    "holdout, message",
    [
        ("overlap", "3 of its 10 images are also in the training data"),
        ("big", "its images are 1 x 24 x 24, the training images 1 x 16 x 16"),
        (None, "need real images the generator never saw"),
    ],
)
def test_eval_refuses_a_holdout_it_cannot_trust(tmp_path, holdout, message):
    train = blobs(40, 0)
    write_images(tmp_path / "train", train)
    write_images(tmp_path / "fake", blobs(20, 5))
    write_images(tmp_path / "overlap", np.concatenate([train[:3], blobs(7, 6)]))
    write_images(tmp_path / "big", np.arange(10, dtype=np.uint8)[:, None, None] + np.zeros((10, 24, 24), np.uint8))
    args = ["--holdout", tmp_path / holdout] if holdout else ["--copies", tmp_path / "c.png"]
    r = invoke("eval", "--fake", tmp_path / "fake", "--data", tmp_path / "train", "--metrics", "none", *args)
    assert r.exit_code == 2 and message in r.stderr and r.stderr.count("\n") == 1
    assert not (tmp_path / "c.png").exists()


def test_copying_in_a_feature_network_s_space_and_the_classifier_s_needs_it(tmp_path):
    train = blobs(80, 0)
    write_images(tmp_path / "train", train)
    write_images(tmp_path / "held", blobs(40, 1))
    write_images(tmp_path / "copies", train[np.random.default_rng(2).integers(0, 80, 100)])
    common = ["--fake", tmp_path / "copies", "--data", tmp_path / "train", "--holdout", tmp_path / "held"]
    r = invoke("eval", *common, "--metrics", "none", "--copying-features", "random-conv", "--json")
    found = parse_json(r.stdout)
    assert r.exit_code == 0 and found["metrics"]["nearer_seen[random-conv]"] > 0.95
    assert found["copying"]["space"] == "random-conv"
    r = invoke("eval", *common, "--copying-features", "classifier")
    assert r.exit_code == 2 and "add --classifier" in r.stderr and r.stderr.count("\n") == 1
    r = invoke("eval", *common, "--copying-features", "edges")
    assert r.exit_code == 2 and "pixels, random-conv, inception, dinov2, classifier" in r.stderr
