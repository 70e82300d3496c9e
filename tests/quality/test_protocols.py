"""Numbers that stand beside the papers': FID, KID, IS and precision/recall at each side's native
resolution equal torch-fidelity's `calculate_metrics` on the same folders and the same weights
(He-normal networks the test makes: a default-initialised Inception-v3 collapses its features,
so every FID would read ~0 and prove nothing); resampling is recorded and never standard; and
reference statistics files are written, read, checked and labelled."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from ganctl.cli import app
from ganctl.quality import features, fidelity

tf_metrics = pytest.importorskip("torch_fidelity.metrics")
runner = CliRunner()
N = 12  # images a side: IS needs one per split (10); KID's subsets are then the whole sets


@pytest.fixture(autouse=True, scope="module")
def _private_cache(tmp_path_factory):
    # One cache for the module: the real folders' features are computed once for its tests.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GANCTL_CACHE", str(tmp_path_factory.mktemp("cache")))
        patch.delenv("GANCTL_INCEPTION", raising=False)
        patch.delenv("GANCTL_VGG", raising=False)
        yield


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    folder = tmp_path_factory.mktemp("weights")
    torch.save(features.random_inception_state(seed=1), folder / "inception.pth")
    torch.save(features.random_vgg16_state(seed=2), folder / "vgg16.pth")
    return folder / "inception.pth", folder / "vgg16.pth"


def pngs(folder, n, size, seed, blobs=False):
    """n RGB PNGs of size x size: uniform noise, or smooth coloured blobs (another distribution)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    for i in range(n):
        if blobs:
            cx, cy, r = rng.uniform(0.2, 0.8, 3)
            mask = ((xx - cx) ** 2 + (yy - cy) ** 2 < (r / 2) ** 2)[..., None]
            img = (mask * rng.integers(0, 256, 3) + (1 - mask) * rng.integers(0, 60, 3)).astype(np.uint8)
        else:
            img = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(img).save(folder / f"{i:03d}.png")
    return folder


def invoke(*args):
    return runner.invoke(app, ["eval", *map(str, args)])


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("imgs")
    return pngs(root / "fake", N, 32, seed=3, blobs=True), pngs(root / "real", N, 32, seed=4)


def test_fid_kid_is_and_prc_equal_torch_fidelity_s_on_the_same_folders(weights, folders):
    inception, vgg = weights
    fake, real = folders
    r = invoke("--fake", fake, "--data", real, "--inception", inception, "--vgg", vgg, "--n", N, "--json")
    assert r.exit_code == 0, r.output
    got = json.loads(r.stdout)
    common = dict(input1=str(fake), input2=str(real), cuda=False, verbose=False, cache=False, save_cpu_ram=True)
    want = tf_metrics.calculate_metrics(
        **common,
        fid=True,
        kid=True,
        isc=True,
        feature_extractor="inception-v3-compat",
        feature_extractor_weights_path=str(inception),
        kid_subset_size=N,
    )
    prc = tf_metrics.calculate_metrics(
        **common, prc=True, feature_extractor="vgg16", feature_extractor_weights_path=str(vgg)
    )
    m = got["metrics"]
    assert want["frechet_inception_distance"] > 1e-3  # the features are alive: the comparison means something
    assert m["fid[inception-unverified]"] == pytest.approx(want["frechet_inception_distance"], rel=1e-4)
    assert m["kid[inception-unverified]"] == pytest.approx(want["kernel_inception_distance_mean"], rel=1e-3)
    assert m["is[inception-unverified]"] == pytest.approx(want["inception_score_mean"], rel=1e-5)
    assert m["is_std[inception-unverified]"] == pytest.approx(want["inception_score_std"], rel=1e-4, abs=1e-9)
    assert m["precision[vgg16-unverified]"] == pytest.approx(prc["precision"], abs=1e-9)
    assert m["recall[vgg16-unverified]"] == pytest.approx(prc["recall"], abs=1e-9)
    assert {"density[vgg16-unverified]", "coverage[vgg16-unverified]"} <= m.keys()
    assert got["resolution"] == {"real": [32, 32], "fake": [32, 32], "real_resampled": False, "fake_resampled": False}
    assert got["standard"] is False and all("not the published file" in why for why in got["not_standard_because"])


def test_published_weights_at_native_resolution_are_standard(weights, folders, monkeypatch):
    inception, vgg = weights
    fake, real = folders
    spaces = [features.inception(inception), features.vgg16(vgg)]
    monkeypatch.setattr(features, "INCEPTION_HASH_PREFIX", spaces[0].sha256[:8])  # as if they were the published files
    monkeypatch.setattr(features, "VGG_HASH_PREFIX", spaces[1].sha256[:8])
    args = ("--fake", fake, "--data", real, "--inception", inception, "--n", N, "--json")
    r = json.loads(invoke(*args, "--vgg", vgg).stdout)
    assert r["standard"] and r["not_standard_because"] == [] and "fid[inception]" in r["metrics"]
    # Precision/recall outside VGG-16 space are not the published ones.
    r = json.loads(invoke(*args, "--metrics", "fid,pr").stdout)
    assert not r["standard"] and "VGG-16" in r["not_standard_because"][0]
    # Resampling either side is never standard, and says from what to what.
    r = json.loads(invoke(*args, "--metrics", "fid", "--image-size", 16).stdout)
    assert not r["standard"] and r["resolution"]["real"] == [16, 16] and r["resolution"]["fake_resampled"]
    assert any("resampled from 32 x 32 to 16 x 16" in why for why in r["not_standard_because"])


def test_each_side_keeps_its_size_and_two_sizes_are_refused(weights, folders, tmp_path):
    fake, _ = folders
    big = pngs(tmp_path / "big", 6, 24, seed=5)
    r = invoke("--fake", fake, "--data", big, "--metrics", "fid", "--n", 6)
    assert r.exit_code == 2 and "generated images are 32 x 32 but the real ones 24 x 24" in r.stderr
    assert r.stderr.count("\n") == 1
    mixed = pngs(tmp_path / "mixed", 2, 24, seed=6)
    pngs(mixed, 1, 20, seed=7)  # 000.png is now 20 x 20, 001.png still 24 x 24
    r = invoke("--fake", fake, "--data", mixed, "--metrics", "fid")
    assert r.exit_code == 2 and "000.png is 20 x 20, 001.png is 24 x 24" in r.stderr and "--image-size" in r.stderr


def test_is_without_inception_is_one_clear_line(folders):
    fake, real = folders
    r = invoke("--fake", fake, "--data", real, "--metrics", "fid,is")
    assert r.exit_code == 2 and "Inception Score needs Inception-v3's classifier" in r.stderr
    assert "random-conv space has no classifier" in r.stderr and r.stderr.count("\n") == 1
    r = json.loads(invoke("--fake", fake, "--data", real, "--json", "--n", N).stdout)  # all: IS only where it can
    assert not any(k.startswith("is[") for k in r["metrics"]) and "fid[random-conv]" in r["metrics"]


def test_the_inception_score_against_its_definition():
    # exp E_x KL(p(y|x) || p(y)) over one split: uniform predictions score 1, confident and
    # evenly spread ones score the number of classes.
    assert fidelity.inception_score(torch.zeros(20, 7), splits=1)["mean"] == pytest.approx(1.0)
    confident = torch.full((20, 5), -50.0)
    confident[torch.arange(20), torch.arange(20) % 5] = 50.0
    assert fidelity.inception_score(confident, splits=1)["mean"] == pytest.approx(5.0, rel=1e-6)
    halves = fidelity.inception_score(confident, splits=2)  # each half sees fewer than all classes evenly
    assert 1.0 < halves["mean"] <= 5.0
    # The standard deviation is the population one over the splits' own scores.
    shuffled = confident.double()[torch.from_numpy(__import__("numpy").random.RandomState(2020).permutation(20))]
    per_split = [fidelity.inception_score(part, splits=1)["mean"] for part in shuffled.split(10)]
    assert halves["std"] == pytest.approx(abs(per_split[0] - per_split[1]) / 2)


def test_reference_statistics_are_written_read_and_checked(weights, folders, tmp_path):
    inception, _ = weights
    fake, real = folders
    stats = tmp_path / "real.npz"
    r = invoke("--data", real, "--save-stats", stats, "--inception", inception, "--json")
    assert r.exit_code == 0, r.output
    saved = json.loads(r.stdout)["saved"]
    assert saved["n"] == N and saved["resolution"] == [32, 32] and saved["verified"]
    with np.load(stats) as f:
        assert f["mu"].shape == (2048,) and f["sigma"].shape == (2048, 2048)
        assert str(f["feature_sha256"]) == features.inception(inception).sha256 and int(f["n"]) == N
    both = ("--fake", fake, "--inception", inception, "--metrics", "fid", "--n", N, "--json")
    from_images = json.loads(invoke(*both, "--data", real).stdout)
    from_stats = json.loads(invoke(*both, "--ref-stats", stats).stdout)
    key = "fid[inception-unverified]"
    assert from_stats["metrics"][key] == pytest.approx(from_images["metrics"][key], rel=1e-9)
    assert from_stats["reference"]["verified"] and from_stats["resolution"]["real"] == [32, 32]
    # KID and precision need the real images themselves.
    r = invoke("--fake", fake, "--inception", inception, "--ref-stats", stats, "--metrics", "fid,kid")
    assert r.exit_code == 2 and "need the real images (--data)" in r.stderr


def test_a_file_from_another_space_is_refused_and_a_bare_one_labelled(weights, folders, tmp_path):
    inception, _ = weights
    fake, real = folders
    other = tmp_path / "other.npz"
    assert invoke("--data", real, "--save-stats", other, "--features", "random-conv").exit_code == 0
    r = invoke("--fake", fake, "--inception", inception, "--ref-stats", other, "--metrics", "fid")
    assert r.exit_code == 2 and "240-d features, but the inception-unverified space has 2048" in r.stderr
    moved = tmp_path / "moved.npz"  # the right size, another network's hash
    with np.load(tmp_path / "other.npz") as f:
        np.savez(moved, mu=np.zeros(2048), sigma=np.eye(2048), feature_sha256=f["feature_sha256"])
    r = invoke("--fake", fake, "--inception", inception, "--ref-stats", moved, "--metrics", "fid")
    assert r.exit_code == 2 and "computed with other weights (sha256" in r.stderr
    assert "compute them again with --save-stats" in r.stderr and r.stderr.count("\n") == 1
    bare = tmp_path / "ttur.npz"  # TTUR's and pytorch-fid's layout: mu and sigma alone
    np.savez(bare, mu=np.zeros(2048), sigma=np.eye(2048))
    r = json.loads(
        invoke("--fake", fake, "--inception", inception, "--ref-stats", bare, "--metrics", "fid", "--json").stdout
    )
    assert not r["reference"]["verified"] and not r["standard"]
    assert any("names no feature space" in why for why in r["not_standard_because"])


def test_the_inception_score_is_logged_during_training(weights, tmp_path):
    import ganctl
    from ganctl.config import TrainConfig

    inception, _ = weights
    cfg = TrainConfig(
        data="shapes", image_size=16, width=4, z_dim=8, batch_size=8, n_critic=1, steps=2, eval_every=2,
        sample_every=0, eval_samples=20, eval_metrics="fid,is", eval_features="inception", inception=str(inception),
        device="cpu",
    )  # fmt: skip
    summary = ganctl.train(cfg, tmp_path / "run")
    final = summary.final
    assert final["is[inception-unverified]"] >= 1.0 and "is_std[inception-unverified]" in final
    assert summary.image_metrics_on["resolution"]["real"] == [16, 16]
    r = runner.invoke(app, ["train", "--data", "shapes", "--eval-metrics", "is", "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "--eval-features inception" in r.stderr
