"""FID, KID, precision/recall and density/coverage against closed forms, brute force and
torch-fidelity's own functions; the feature spaces (no downloaded weights anywhere)."""

import math

import numpy as np
import pytest
import torch

from ganctl.errors import DataError
from ganctl.quality import features, fidelity


def gaussians(n, d, shift=0.0, scale=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64) * scale + shift


def reference_frechet(x: np.ndarray, y: np.ndarray) -> float:
    """From the sample moments with scipy's matrix square root, independently of ganctl."""
    from scipy import linalg

    mu1, mu2 = x.mean(0), y.mean(0)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    root = linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * root))


def test_fid_of_identity_features_is_the_frechet_distance_of_the_sample_moments():
    x, y = gaussians(500, 6), gaussians(400, 6, shift=0.3, scale=1.5, seed=1)
    assert fidelity.fid(x, y) == pytest.approx(reference_frechet(x.numpy(), y.numpy()), rel=1e-9)


def test_fid_closed_forms():
    x = gaussians(300, 5)
    assert abs(fidelity.fid(x, x)) < 1e-9
    # One dimension: (mu1 - mu2)^2 + (sigma1 - sigma2)^2 of the sample moments.
    a, b = gaussians(1000, 1), gaussians(800, 1, shift=2.0, scale=3.0, seed=4)
    expected = float((a.mean() - b.mean()) ** 2 + (a.std() - b.std()) ** 2)
    assert fidelity.fid(a, b) == pytest.approx(expected, rel=1e-9)


def test_kid_is_near_zero_for_one_distribution_and_positive_for_a_shift():
    same = fidelity.kid(gaussians(1000, 8), gaussians(1000, 8, seed=1), subsets=50, subset_size=500)
    shifted = fidelity.kid(gaussians(1000, 8), gaussians(1000, 8, shift=0.5, seed=1), subsets=50, subset_size=500)
    assert abs(same["mean"]) < 3 * same["std"] + 1e-3  # unbiased: zero within its own noise
    assert shifted["mean"] > 10 * shifted["std"] > 0
    assert same["subset_size"] == 500 and fidelity.kid(gaussians(30, 2), gaussians(20, 2))["subset_size"] == 20


def test_kid_mmd_matches_the_unbiased_estimate_written_out():
    x, y = gaussians(40, 3).float(), gaussians(40, 3, shift=0.2, seed=2).float()
    k = lambda a, b: (a @ b / 3 + 1) ** 3  # noqa: E731
    m = len(x)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    assert float(fidelity._mmd2_unbiased(x, y)) == pytest.approx(float(xx + yy - 2 * xy), rel=1e-4, abs=1e-6)


def test_precision_recall_on_points_with_known_answers():
    real = torch.arange(10.0)[:, None]  # 0..9 on a line: with k = 1 every radius is 1
    fake = torch.tensor([[0.5], [20.0]])  # 0.5 is inside; 20 is not. Fake radii (k = 1): 19.5
    pr = fidelity.precision_recall(real, fake, k=1)
    assert pr == {"precision": 0.5, "recall": 1.0}
    pr = fidelity.precision_recall(real, real + 100.0, k=1)
    assert pr == {"precision": 0.0, "recall": 0.0}
    assert fidelity.precision_recall(real, real.clone(), k=3) == {"precision": 1.0, "recall": 1.0}


def brute_density_coverage(real, fake, k):
    """Naeem et al. 2020 written out with loops."""
    r = [sorted(abs(float(a) - float(b)) for b in real if b is not a)[k - 1] for a in real]
    inside = [[abs(float(f) - float(c)) <= rad for c, rad in zip(real, r)] for f in fake]
    density = sum(sum(row) for row in inside) / (k * len(fake))
    coverage = sum(any(inside[j][i] for j in range(len(fake))) for i in range(len(real))) / len(real)
    return density, coverage


def test_density_and_coverage_against_the_definition():
    g = torch.Generator().manual_seed(3)
    real = torch.randn(40, generator=g)
    fake = torch.randn(25, generator=g) * 0.5 + 0.3
    got = fidelity.density_coverage(real[:, None], fake[:, None], k=5)
    density, coverage = brute_density_coverage(list(real), list(fake), 5)
    assert got["density"] == pytest.approx(density) and got["coverage"] == pytest.approx(coverage)
    same = fidelity.density_coverage(real[:, None], real[:, None], k=5)
    assert same["coverage"] == 1.0 and same["density"] >= 1.0  # each point is in its own ball and k others


def test_too_few_samples_for_k_is_one_clear_error():
    with pytest.raises(DataError, match="give at least 4"):
        fidelity.precision_recall(torch.randn(3, 2), torch.randn(10, 2))


def test_agrees_with_torch_fidelity_where_it_is_installed():
    tf_fid = pytest.importorskip("torch_fidelity.metric_fid")
    from torch_fidelity.metric_kid import mmd2
    from torch_fidelity.metric_prc import calculate_precision_recall_full

    x, y = gaussians(600, 10).float(), gaussians(500, 10, shift=0.2, scale=1.3, seed=1).float()
    stats = [tf_fid.fid_features_to_statistics(t) for t in (x, y)]
    want = tf_fid.fid_statistics_to_metric(*stats, verbose=False)[tf_fid.KEY_METRIC_FID]
    assert fidelity.fid(x, y) == pytest.approx(want, rel=1e-5)
    a, b = x[:300], y[:300]
    kernel = lambda p, q: (p.double().numpy() @ q.double().numpy().T / 10 + 1) ** 3  # noqa: E731
    want = mmd2(kernel(a, a), kernel(a, b), kernel(b, b))
    assert float(fidelity._mmd2_unbiased(a, b)) == pytest.approx(want, rel=1e-4)
    precision, recall = calculate_precision_recall_full(y, x, neighborhood=3)  # (generated, real)
    got = fidelity.precision_recall(x, y)
    assert got["precision"] == pytest.approx(precision, abs=1e-6) and got["recall"] == pytest.approx(recall, abs=1e-6)


# --- feature spaces -----------------------------------------------------------------------
def test_random_conv_is_fixed_by_its_seed_and_labelled():
    a, b = features.random_conv(), features.random_conv()
    assert a.sha256 == b.sha256 and a.label == "random-conv" and not a.standard
    images = torch.rand(6, 3, 32, 32) * 2 - 1
    fa = a.features(images)
    assert fa.shape == (6, a.dims) and torch.equal(fa, b.features(images))
    assert torch.equal(a.features(images[:, :1]), a.features(images[:, :1].expand(-1, 3, -1, -1)))  # grey = RGB grey
    assert torch.equal(features.RandomConv(seed=1).stages[0].weight, features.RandomConv(seed=1).stages[0].weight)
    assert features.state_sha256(features.RandomConv(seed=1)) != a.sha256


@pytest.fixture(scope="module")
def random_inception(tmp_path_factory):
    """A randomly initialised Inception-v3 in torch-fidelity's layout, saved as a .pth file."""
    extractor = pytest.importorskip("torch_fidelity.feature_extractor_inceptionv3").FeatureExtractorInceptionV3
    state = features.random_inception_state()
    path = tmp_path_factory.mktemp("w") / "inception.pth"
    torch.save(state, path)
    return path, extractor


def test_inception_loads_a_file_in_the_standard_layout(random_inception, monkeypatch):
    path, extractor = random_inception
    space = features.inception(path)
    assert (space.label, space.standard, space.dims) == ("inception-unverified", False, 2048)
    images = torch.rand(2, 3, 24, 24) * 2 - 1
    got = space.features(images)
    reference = extractor("ref", ["2048"], feature_extractor_weights_path=str(path))  # torch-fidelity alone
    pixels = ((images + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    with torch.inference_mode():
        want = reference(pixels)[0]
    torch.testing.assert_close(got, want)
    monkeypatch.setattr(features, "INCEPTION_HASH_PREFIX", space.sha256[:8])  # as if it were the published file
    assert features.inception(path).label == "inception" and features.inception(path).standard


@pytest.mark.parametrize(
    "content, message",
    [
        (lambda good: good[: len(good) // 2], "not a readable PyTorch weights file"),
        (lambda good: b"not a zip at all", "not a readable PyTorch weights file"),
        (None, "not Inception-v3 weights"),
    ],
)
def test_a_wrong_or_truncated_weights_file_is_one_clear_error(random_inception, tmp_path, content, message):
    path, _ = random_inception
    bad = tmp_path / "bad.pth"
    if content is None:
        torch.save({"fc.weight": torch.zeros(3, 3)}, bad)
    else:
        bad.write_bytes(content(path.read_bytes()))
    with pytest.raises(DataError, match=message) as info:
        features.inception(bad)
    assert str(bad) in str(info.value) and "\n" not in str(info.value)


def test_a_missing_weights_file_names_it(tmp_path):
    pytest.importorskip("torch_fidelity")
    with pytest.raises(DataError, match="no such file"):
        features.inception(tmp_path / "nowhere.pth")


def test_metrics_are_finite_on_features():
    real, fake = gaussians(200, 4).float(), gaussians(150, 4, shift=1.0, seed=1).float()
    out = fidelity.compute(real, fake, fidelity.METRICS)
    assert set(out) == {"fid", "kid", "kid_std", "precision", "recall", "density", "coverage"}
    assert all(math.isfinite(v) for v in out.values()) and out["fid"] > 0.5
