"""ganctl's metrics against independent libraries on the same inputs: density and coverage
(and precision and recall) against prdc, the reference code of Naeem et al. 2020 (torch-fidelity
computes neither density nor coverage); FID and KID on the same features against clean-fid's
functions; the exact 2-D W1 against POT's exact optimal transport. Test-only dependencies, in
the `dev` extra."""

import numpy as np
import pytest
import torch

from ganctl.lipschitz.transport import wasserstein1
from ganctl.quality import fidelity


def _features(n_real=300, n_fake=300, d=16, seed=0):
    rng = np.random.default_rng(seed)
    real = rng.normal(size=(n_real, d))
    fake = rng.normal(0.3, 1.2, size=(n_fake, d))  # another distribution: every number is away from its bound
    return real, fake


@pytest.mark.parametrize("k", [3, 5])
def test_precision_recall_density_and_coverage_equal_prdc(k):
    prdc = pytest.importorskip("prdc")
    real, fake = _features()
    want = prdc.compute_prdc(real_features=real, fake_features=fake, nearest_k=k)
    r, f = torch.from_numpy(real).float(), torch.from_numpy(fake).float()
    got = {**fidelity.precision_recall(r, f, k=k), **fidelity.density_coverage(r, f, k=k)}
    assert 0.05 < got["coverage"] < 0.95 and 0.05 < got["precision"] < 0.95  # nowhere near a bound
    for name in ("precision", "recall", "density", "coverage"):
        assert got[name] == pytest.approx(float(want[name]), abs=1e-9), name


def test_fid_equals_clean_fid_s_frechet_distance_on_the_same_features():
    cleanfid = pytest.importorskip("cleanfid.fid")
    real, fake = _features(500, 400)
    want = cleanfid.frechet_distance(real.mean(0), np.cov(real, rowvar=False), fake.mean(0), np.cov(fake, rowvar=False))
    got = fidelity.fid(torch.from_numpy(real), torch.from_numpy(fake))
    assert want > 1.0 and got == pytest.approx(want, rel=1e-6)


def test_kid_equals_clean_fid_s_kernel_distance_over_whole_sets():
    # With one subset as large as the sets, both are the unbiased MMD^2 of the whole sets, whatever
    # order the subsets are drawn in.
    cleanfid = pytest.importorskip("cleanfid.fid")
    real, fake = _features(200, 200)
    want = cleanfid.kernel_distance(real, fake, num_subsets=1, max_subset_size=200)
    got = fidelity.kid(torch.from_numpy(real).float(), torch.from_numpy(fake).float(), subsets=1, subset_size=200)
    assert want > 0.01 and got["mean"] == pytest.approx(want, rel=1e-5)


@pytest.mark.parametrize("n", [64, 512])
def test_the_exact_2d_w1_equals_pot_s_exact_transport(n):
    ot = pytest.importorskip("ot")
    rng = np.random.default_rng(n)
    a, b = rng.normal(size=(n, 2)), rng.normal(0.5, 0.8, size=(n, 2))
    weights = np.full(n, 1.0 / n)
    want = ot.emd2(weights, weights, ot.dist(a, b, metric="euclidean"))
    assert wasserstein1(torch.from_numpy(a), torch.from_numpy(b)) == pytest.approx(want, rel=1e-9)
