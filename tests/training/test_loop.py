"""Short real training runs on CPU: every method must improve on its own starting point."""

import pytest
from conftest import small

from ganctl.methods.registry import available_methods
from ganctl.methods.resolve import resolve
from ganctl.training.engine import Trainer
from ganctl.training.evaluator import Evaluator

METHODS = available_methods()


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_quality_moves_the_right_way(method):
    # Each method runs its 2-D recipe; the run is 250 steps long so that a linear decay's
    # horizon is the run's own.
    cfg = small(
        data="8gaussians",
        lipschitz=method,
        width=64,
        depth=2,
        batch_size=128,
        eval_samples=512,
        ema_decay=0.0,
        steps=250,
    )
    trainer = Trainer(resolve(cfg))
    evaluator = Evaluator(trainer.nets)
    before = evaluator.measure()
    for _ in range(250):
        trainer.train_step()
    after = evaluator.measure()
    # The untrained generator puts everything near the origin, about 1 away from every mode (W1
    # 1.30). After 250 steps every method has moved it by at least 18 % (measured: none 1.07,
    # gp 0.32); no method has samples within 3 std of a mode yet (hq_share 0 to 0.04), so the
    # mode metrics say nothing this early.
    assert after["w1"] < 0.9 * before["w1"], (before, after)


@pytest.mark.slow
def test_gradient_penalty_pulls_interpolate_norms_towards_one():
    # The paper's recipe, lambda 10 (the 2-D recipe's 0.1 lets norms exceed 1).
    paper = dict(penalty_weight=10.0, lr_d=1e-4, lr_g=1e-4, n_critic=5, beta1=0.5, beta2=0.9, lr_decay="none")
    trainer = Trainer(resolve(small(data="8gaussians", lipschitz="gp", width=64, batch_size=128, **paper)))
    for _ in range(150):
        trainer.train_step()
    assert abs(trainer.pop_stats()["grad_norm"] - 1.0) < 0.25


@pytest.mark.slow
def test_weight_clipping_keeps_gradient_norms_far_below_one():
    # The WGAN-GP paper's point about clipping: a clipped critic's gradients are tiny.
    trainer = Trainer(resolve(small(data="8gaussians", lipschitz="clip", width=64, batch_size=128)))
    for _ in range(150):
        trainer.train_step()
    assert trainer.pop_stats()["grad_norm"] < 0.1


def test_a_run_takes_its_thread_count_and_gives_the_process_back(tmp_path, monkeypatch):
    import torch

    import ganctl

    seen = []
    step = Trainer.train_step

    def recording(self):
        seen.append(torch.get_num_threads())
        step(self)

    monkeypatch.setattr(Trainer, "train_step", recording)
    torch.set_num_threads(2)
    ganctl.train(small(steps=2), tmp_path / "a")  # 0: torch's own, untouched
    assert seen == [2, 2] and torch.get_num_threads() == 2
    seen.clear()
    ganctl.train(small(steps=2, threads=1), tmp_path / "c")
    assert seen == [1, 1] and torch.get_num_threads() == 2
    seen.clear()
    torch.set_num_threads(1)
    ganctl.train(small(steps=2, threads=2), tmp_path / "b")
    assert seen == [2, 2] and torch.get_num_threads() == 1
