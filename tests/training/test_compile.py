"""--compile: compiled forwards give the eager numbers (within float tolerance), and penalised
critic passes, which torch.compile cannot double-backward, fall back to eager and say so."""

import pytest
import torch
from conftest import small

from ganctl.methods.resolve import resolve
from ganctl.training.engine import Trainer


@pytest.mark.slow
@pytest.mark.parametrize(
    "norm,note",
    [
        ("none", "hand-written MLP step, eagerly"),  # a plain MLP critic: the penalised step is fused_mlp's
        ("layer", "run eagerly (torch.compile does not support"),  # layer norm: autograd, x_hat pass eager
    ],
)
def test_compiled_training_matches_eager(norm, note):
    # reg_every 2: penalised steps alternate with fully compiled ones.
    cfg = dict(lipschitz="gp", reg_every=2, width=16, depth=2, batch_size=32, ema_decay=0.0, critic_norm=norm)
    # At a learning rate of 1e-12 the weights stay put, so both see the same inputs at every
    # step and Adam's normalisation (which turns a rounding-level gradient into a whole step
    # of lr) cannot amplify the compiled kernels' different rounding.
    still = dict(cfg, lr_d=1e-12, lr_g=1e-12)
    eager, compiled = Trainer(resolve(small(**still))), Trainer(resolve(small(compile=True, **still)))
    assert not eager.notes and note in compiled.notes[0]
    for _ in range(2):
        eager.train_step()
        compiled.train_step()
    a, b = eager.pop_stats(), compiled.pop_stats()
    for key in ("loss_d", "loss_g", "wasserstein", "penalty"):
        assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-7), key
    for net in ("critic", "generator"):
        for p, q in zip(getattr(eager, net).parameters(), getattr(compiled, net).parameters()):
            assert torch.allclose(p.grad, q.grad, rtol=1e-4, atol=1e-7), net
