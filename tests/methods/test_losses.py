import math

import pytest
import torch
from torch.testing import assert_close

from ganctl.errors import ConfigError
from ganctl.methods.losses import available_losses, get_loss

D_REAL = torch.tensor([[2.0], [0.0]])
D_FAKE = torch.tensor([[-1.0], [3.0]])


def sp(x: float) -> float:
    return math.log1p(math.exp(x))


@pytest.mark.parametrize(
    "name,critic,generator",
    [
        ("wasserstein", 1.0 - 1.0, -1.0),  # E[D(fake)] - E[D(real)] = 1 - 1; -E[D(fake)]
        ("hinge", (0 + 1) / 2 + (0 + 4) / 2, -1.0),
        ("ns", (sp(-2) + sp(0)) / 2 + (sp(-1) + sp(3)) / 2, (sp(1) + sp(-3)) / 2),
        ("lsgan", 0.5 * (1 + 1) / 2 + 0.5 * (1 + 9) / 2, 0.5 * (4 + 4) / 2),
    ],
)
def test_losses_match_closed_forms(name, critic, generator):
    loss = get_loss(name)
    assert_close(loss.critic(D_REAL, D_FAKE), torch.tensor(critic))
    assert_close(loss.generator(D_FAKE), torch.tensor(generator))


def test_unknown_loss_lists_the_valid_ones():
    with pytest.raises(ConfigError, match="wasserstein, hinge, ns, lsgan"):
        get_loss("wgan")
    assert available_losses() == ["wasserstein", "hinge", "ns", "lsgan", "rpgan"]


@pytest.mark.parametrize("name", available_losses())
def test_critic_grad_is_autograd_s_derivative(name):
    # Including the hinge's kinks (D(x) = 1, D(G(z)) = -1) and far tails for softplus.
    d_real = torch.tensor([[2.0], [0.0], [1.0], [-30.0], [25.0]], dtype=torch.float64, requires_grad=True)
    d_fake = torch.tensor([[-1.0], [3.0], [0.5], [30.0], [-25.0]], dtype=torch.float64, requires_grad=True)
    loss = get_loss(name)
    want = torch.autograd.grad(loss.critic(d_real, d_fake), (d_real, d_fake))
    got = loss.critic_grad(d_real.detach(), d_fake.detach())
    for g, w in zip(got, want):
        assert_close(g, w, rtol=1e-12, atol=1e-15)


def test_relativistic_pairing_matches_r3gans_code():
    """R3GAN/Trainer.py: D's loss softplus(-(D(x_i) - D(G(z_i)))), G's softplus(-(D(G(z_i)) - D(x_i))),
    each pair within one batch."""
    loss = get_loss("rpgan")
    assert loss.pairs
    assert_close(loss.critic(D_REAL, D_FAKE), torch.tensor((sp(-3) + sp(3)) / 2))
    assert_close(loss.generator(D_FAKE, D_REAL), torch.tensor((sp(3) + sp(-3)) / 2))
    shifted = loss.critic(D_REAL + 7.0, D_FAKE + 7.0)  # a critic's offset means nothing to it
    assert_close(shifted, loss.critic(D_REAL, D_FAKE))
    with pytest.raises(ValueError, match="real batch"):
        loss.generator(D_FAKE)


def test_each_loss_judges_overfitting_by_what_it_compares():
    """ADA's r_t = E[sign D(x)] where a logit of 0 is the loss's boundary (ns, hinge), 1/2 for
    lsgan's 0-1 coding, and the paired difference where the output has no origin (wasserstein,
    rpgan): shifting every output by a constant leaves those unchanged."""
    real, fake = torch.tensor([3.0, -1.0, 0.2, 0.7]), torch.tensor([1.0, -2.0, 0.5, 0.9])
    assert get_loss("ns").overfit_sign(real, fake).tolist() == [1, -1, 1, 1]
    assert get_loss("hinge").overfit_sign(real, fake).tolist() == [1, -1, 1, 1]
    assert get_loss("lsgan").overfit_sign(real, fake).tolist() == [1, -1, -1, 1]
    for name in ("wasserstein", "rpgan"):
        sign = get_loss(name).overfit_sign
        assert sign(real, fake).tolist() == [1, 1, -1, -1]
        assert torch.equal(sign(real + 100.0, fake + 100.0), sign(real, fake))
