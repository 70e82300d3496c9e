"""Data-parallel training under torchrun: two real processes on the CPU with gloo."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

import ganctl
from ganctl import distributed

ARGS = [
    "--data",
    "8gaussians",
    "--lipschitz",
    "gp",
    "--steps",
    "8",
    "--ckpt-every",
    "4",
    "--batch-size",
    "32",
    "--width",
    "16",
    "--depth",
    "2",
    "--device",
    "cpu",
    "--eval-every",
    "0",
    "--sample-every",
    "0",
    "--eval-samples",
    "100",
    "--json",
]


def run(command, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


def torchrun(*args):
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node=2",
        "-m",
        "ganctl",
        "train",
        *args,
    ]


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    summary = run([sys.executable, "-m", "ganctl", "train", *ARGS, "--nproc", "2", "--out", str(tmp / "run")], tmp)
    return tmp, summary


def test_two_processes_stay_in_sync_and_the_checkpoint_loads_in_one(two_ranks):
    tmp, summary = two_ranks
    assert summary["world_size"] == 2 and summary["ranks_in_sync"] is True and summary["step"] == 8
    ck = ganctl.load(tmp / "run")  # one process, no torchrun
    assert ck.step == 8 and ck.sampler(torch.randn(5, ck.config.z_dim)).shape == (5, 2)
    tensors = load_file(tmp / "run" / "checkpoints" / "step-0000008.safetensors")
    assert "rng.rank1" in tensors and not torch.equal(tensors["rng.rank1"], tensors["rng.train"])


def test_ranks_draw_their_own_data(two_ranks, tmp_path):
    # Had rank 1 drawn rank 0's batches, the averaged gradients would equal one process's
    # exactly ((g + g) / 2 == g in floating point) and so would the weights.
    tmp, _ = two_ranks
    run([sys.executable, "-m", "ganctl", "train", *ARGS, "--out", str(tmp_path / "one")], tmp_path)
    two = load_file(tmp / "run" / "checkpoints" / "step-0000008.safetensors")
    one = load_file(tmp_path / "one" / "checkpoints" / "step-0000008.safetensors")
    assert not torch.equal(two["critic.0.weight"], one["critic.0.weight"])


def test_resume_under_torchrun_is_exact(two_ranks, tmp_path):
    tmp, _ = two_ranks
    shutil.copytree(tmp / "run", tmp_path / "resumed")
    (tmp_path / "resumed" / "checkpoints" / "step-0000008.safetensors").unlink()
    summary = run(
        torchrun(
            "--resume", str(tmp_path / "resumed" / "checkpoints" / "step-0000004.safetensors"), "--steps", "8", "--json"
        ),
        tmp_path,
    )
    assert summary["exact_resume"] is True and summary["ranks_in_sync"] is True
    a = load_file(tmp / "run" / "checkpoints" / "step-0000008.safetensors")
    b = load_file(tmp_path / "resumed" / "checkpoints" / "step-0000008.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_one_process_world_is_a_no_op():
    world = distributed.World()
    critic = torch.nn.Linear(3, 1)
    critic(torch.ones(2, 3)).sum().backward()
    before = critic.weight.grad.clone()
    distributed.average_gradients(critic, world)
    assert torch.equal(critic.weight.grad, before)
    assert distributed.in_sync([critic], world) and distributed.all_ok(True, world)
    assert distributed.rank_seed(5, 0) == 5 and distributed.rank_seed(5, 1) != 5
