"""The CUDA paths, on a GPU (skipped without one; `benchmarks/gpu_check.sh` runs them with
`-m gpu`): mixed-precision penalties against float32, a GPU checkpoint resumed on the CPU, a
non-finite step caught on the GPU, the hand-written MLP step and channels-last on CUDA."""

import math

import pytest
import torch
from conftest import fused_and_autograd_stats, small

import ganctl
from ganctl.errors import NonFinite
from ganctl.methods.resolve import resolve
from ganctl.nets import checkpoint
from ganctl.training.engine import Trainer
from ganctl.training.state import capture, restore

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def on_gpu(**changes):
    return small(device="cuda", **changes)


def shapes(**changes):
    return on_gpu(data="shapes", image_size=32, width=16, z_dim=16, batch_size=16, n_critic=1, **changes)


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_a_mixed_precision_penalty_matches_float32_on_the_gpu(amp):
    # The same weights and batch: the penalised critic loss under autocast (fp16: through the
    # gradient scaler and back) within the precision's rounding of the float32 one.
    full, mixed = Trainer(resolve(shapes(lipschitz="gp"))), Trainer(resolve(shapes(lipschitz="gp", amp=amp)))
    restore(mixed, capture(full))
    full.critic_step()
    mixed.critic_step()
    a, b = full.pop_stats(), mixed.pop_stats()
    tol = 2e-2 if amp == "bf16" else 5e-3
    for key in ("penalty", "loss_d"):
        assert math.isfinite(b[key]) and abs(a[key] - b[key]) <= tol * max(1.0, abs(a[key])), (key, a[key], b[key])


def test_a_gpu_checkpoint_resumes_on_the_cpu(tmp_path):
    trainer = Trainer(resolve(on_gpu(lipschitz="gp")))
    for _ in range(2):
        trainer.train_step()
    path = checkpoint.save(capture(trainer), tmp_path / "c.safetensors")
    resumed = ganctl.resume(path, device="cpu")
    assert resumed.device.type == "cpu" and resumed.exact_resume is False and resumed.step == 2
    for a, b in zip(trainer.critic.state_dict().values(), resumed.critic.state_dict().values()):
        assert torch.equal(a.cpu(), b)
    resumed.train_step()  # and it trains on
    assert all(torch.isfinite(p).all() for p in resumed.critic.parameters())


def test_a_nonfinite_step_is_caught_on_the_gpu():
    trainer = Trainer(resolve(on_gpu(lipschitz="gp", lr_d=1e30, lr_g=1e30, optimizer="rmsprop")))
    with pytest.raises(NonFinite) as caught:
        for _ in range(20):
            trainer.train_step()
    assert caught.value.quantity.startswith(("critic", "generator"))
    assert all(torch.isfinite(p).all() for p in trainer.critic.parameters())


def test_the_hand_written_mlp_step_on_cuda_follows_autograd():
    for a, b in fused_and_autograd_stats(on_gpu(lipschitz="gp", lr_d=1e-7, lr_g=1e-7)):
        for key in ("loss_d", "penalty", "loss_g"):
            assert abs(a[key] - b[key]) <= 1e-4 * max(1.0, abs(b[key])), key


def test_image_runs_use_channels_last_and_tf32_only_inside_their_steps():
    before = torch.backends.cuda.matmul.allow_tf32
    trainer = Trainer(resolve(shapes(lipschitz="gp", tf32=not before)))
    assert trainer.critic[0].weight.is_contiguous(memory_format=torch.channels_last)
    trainer.train_step()
    assert torch.backends.cuda.matmul.allow_tf32 == before  # restored after the step
