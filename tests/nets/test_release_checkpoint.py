"""A checkpoint written by ganctl 0.1.0 before the package was arranged in wings (8gaussians, gp,
width 8, depth 1, seed 3, 3 steps) still loads, samples and resumes to the very numbers that
release gave. The expected values were printed by that release."""

from pathlib import Path

import pytest
import torch

import ganctl

RELEASE = Path(__file__).parent / "data" / "release-0.1.0.safetensors"
# ganctl.load(RELEASE).sample(4, torch.Generator().manual_seed(0)) under 0.1.0
SAMPLES = [
    [-0.11908843368291855, -0.5642606019973755],
    [-0.5631847977638245, -0.9074152708053589],
    [-1.0520237684249878, -1.6106030941009521],
    [-0.13043397665023804, -0.3472454249858856],
]
# ganctl.resume(RELEASE, overrides={"steps": 5}), two train_step() calls, then the sums of the
# generator's and the critic's parameters in float64, under 0.1.0 with one torch thread (the
# thread count changes the order of float sums, so the numbers are bitwise only at one count)
RESUMED = (-4.254132846137509, 0.35075196623802185)
# Bitwise on the machine that printed them; another CPU's matrix kernels round the last bit of a
# few float32 weights differently (seen: 2.3e-10 on this sum, 5e-11 of it, on an AVX-512 EPYC).
# A setting, a step or a random stream that differed would move these sums by 1e-4 and more.
KERNEL_ROUNDING = 1e-9


def test_a_release_checkpoint_loads_and_samples_as_it_did():
    nets = ganctl.load(RELEASE)
    assert nets.step == 3 and nets.cfg.lipschitz == "gp" and nets.cfg.seed == 3
    assert nets.sample(4, torch.Generator().manual_seed(0)).tolist() == SAMPLES


def test_a_release_checkpoint_resumes_to_the_release_s_numbers():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        trainer = ganctl.resume(RELEASE, overrides={"steps": 5})
        for _ in range(2):
            trainer.train_step()
        with torch.no_grad():
            sums = tuple(
                float(sum(p.double().sum() for p in m.parameters())) for m in (trainer.generator, trainer.critic)
            )
    finally:
        torch.set_num_threads(threads)
    assert trainer.step == 5
    assert sums == pytest.approx(RESUMED, rel=KERNEL_ROUNDING, abs=0)


def test_the_release_file_reads_with_plain_safetensors_and_json():
    import json

    from safetensors import safe_open

    with safe_open(str(RELEASE), "pt") as fh:
        meta = fh.metadata()
        assert meta["format"] == "ganctl.checkpoint" and meta["format_version"] == "1"
        assert json.loads(meta["config"])["penalty_weight"] == 0.1
        assert int(fh.get_tensor("state.step")) == 3


def test_a_release_run_folder_is_taken_up_by_compare_with_the_same_flags(tmp_path):
    """Settings added since (decays, augmentation) stay unset unless asked, so a run written by
    0.1.0 is the same run to a compare of the flags that made it, not 'a run with other
    settings'."""
    import shutil

    from ganctl.config import TrainConfig
    from ganctl.fleet.jobs import Job, status
    from ganctl.methods.resolve import resolve

    run = tmp_path / "gp-seed3"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copy(RELEASE, run / "checkpoints" / "step-0000003.safetensors")
    flags = TrainConfig(data="8gaussians", lipschitz="gp", width=8, depth=1, seed=3, steps=3)
    cfg = resolve(flags).replace(**{k: getattr(ganctl.load(RELEASE).cfg, k) for k in ("batch_size", "log_every")})
    assert status(Job("gp", 3, run, cfg)) == "done"
