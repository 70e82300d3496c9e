"""Data-parallel training under torchrun: two real processes on the CPU with gloo."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from conftest import cli_args
from safetensors.torch import load_file

import ganctl
from ganctl.training import distributed

ARGS = [*cli_args(lipschitz="gp", steps=8, ckpt_every=4), "--json"]


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


# --- failures: a dead rank, a hung rank, restarts ---------------------------------------------
LONG = [*ARGS[: ARGS.index("--steps")], *ARGS[ARGS.index("--ckpt-every") + 2 :]]  # ARGS without steps and checkpoints
LONG.remove("--json")


def _worker_pid(tag: str, rank: int, attempt: int = 0, timeout: float = 120) -> int:
    """The pid of the torchrun worker of global rank `rank` in the job tagged `tag` (its environment)."""
    import time
    from pathlib import Path

    want = {
        f"GANCTL_TEST_TAG={tag}".encode(),
        f"RANK={rank}".encode(),
        f"TORCHELASTIC_RESTART_COUNT={attempt}".encode(),
    }
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in Path("/proc").iterdir():
            try:
                env = set((proc / "environ").read_bytes().split(b"\0"))
            except OSError:
                continue
            if proc.name.isdigit() and want <= env:
                return int(proc.name)
        time.sleep(0.1)
    raise AssertionError(f"no rank {rank} worker of {tag}")


def _when_written(path, proc: subprocess.Popen, timeout: float = 180) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def _launch(command, tmp_path, tag):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GANCTL_TEST_TAG": tag}
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)


def test_a_killed_rank_is_one_line_with_the_step_the_checkpoint_and_the_resume_command(tmp_path):
    out = tmp_path / "run"
    command = [sys.executable, "-m", "ganctl", "train", *LONG, "--steps", "100000", "--ckpt-every", "20"]
    proc = _launch([*command, "--nproc", "2", "--out", str(out)], tmp_path, "killed")
    _when_written(out / "checkpoints" / "step-0000040.safetensors", proc)
    os.kill(_worker_pid("killed", 1), 9)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 75, err[-3000:]
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err and "ChildFailedError" not in err, err[-3000:]
    line = lines[0]
    assert "rank 1 of 2 was killed by SIGKILL" in line and "step" in line
    assert f"resume with: ganctl train --resume {out} --nproc 2" in line
    newest = sorted((out / "checkpoints").iterdir())[-1]
    assert str(newest) in line  # the newest whole checkpoint, named
    assert ganctl.load(newest).step >= 40


def test_a_hung_rank_ends_the_job_after_the_collective_timeout(tmp_path):
    import signal

    out = tmp_path / "run"
    command = [sys.executable, "-m", "ganctl", "train", *LONG, "--steps", "100000", "--ckpt-every", "20"]
    proc = _launch([*command, "--nproc", "2", "--dist-timeout", "3", "--out", str(out)], tmp_path, "hung")
    _when_written(out / "checkpoints" / "step-0000040.safetensors", proc)
    pid = _worker_pid("hung", 1)
    os.kill(pid, signal.SIGSTOP)
    try:
        _, err = proc.communicate(timeout=8)  # rank 0's 3 s timeout, then torchrun stops the group
    except subprocess.TimeoutExpired:
        os.kill(pid, signal.SIGCONT)  # torchrun waits 30 s for a stopped process to take SIGTERM
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 75, err[-3000:]
    (line,) = [line for line in err.splitlines() if line.startswith("error:")]
    assert "rank 1 of 2 stopped answering" in line and "newest checkpoint" in line, line


RESTART_STEPS = ["--steps", "120", "--ckpt-every", "20"]


@pytest.fixture(scope="module")
def unbroken(tmp_path_factory):
    """The run a restarted group must end as: the same command, never interrupted."""
    tmp = tmp_path_factory.mktemp("unbroken")
    command = [sys.executable, "-m", "ganctl", "train", *LONG, *RESTART_STEPS, "--json", "--nproc", "2"]
    summary = run([*command, "--out", "whole"], tmp)
    assert summary["restarts"] == 0
    return tmp / "whole"


@pytest.mark.parametrize("launcher", ["ganctl", "torchrun"])
def test_a_restarted_group_resumes_from_the_newest_checkpoint_and_ends_where_an_unbroken_run_does(
    tmp_path, launcher, unbroken
):
    steps = RESTART_STEPS
    if launcher == "ganctl":
        command = [sys.executable, "-m", "ganctl", "train", *LONG, *steps, "--nproc", "2", "--max-restarts", "1"]
    else:  # the user's own torchrun: the same resume, from inside `ganctl train`
        command = [*torchrun(*LONG, *steps)[:4], "--max-restarts=1", *torchrun(*LONG, *steps)[4:]]
    proc = _launch([*command, "--json", "--out", "broken"], tmp_path, f"restart-{launcher}")
    _when_written(tmp_path / "broken" / "checkpoints" / "step-0000040.safetensors", proc)
    os.kill(_worker_pid(f"restart-{launcher}", 1), 9)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    summary = json.loads(out)
    assert summary["restarts"] == 1 and summary["step"] == 120 and summary["ranks_in_sync"] is True
    assert "torchrun restarted the group (1 of 1); resuming from step" in err
    a = load_file(unbroken / "checkpoints" / "step-0000120.safetensors")
    b = load_file(tmp_path / "broken" / "checkpoints" / "step-0000120.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # resumed exactly


def test_a_restart_does_not_resume_a_folder_another_job_wrote(tmp_path, monkeypatch):
    from ganctl.runfolder import RunFolder
    from ganctl.training.loop import restart_checkpoint

    ganctl.train(
        ganctl.TrainConfig(data="8gaussians", steps=4, ckpt_every=2, eval_every=0, sample_every=0), tmp_path / "r"
    )
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job-b")
    assert restart_checkpoint(tmp_path / "r") is None  # no id: not this job's folder
    RunFolder(tmp_path / "r").torchrun_id.write_text("job-a\n")
    assert restart_checkpoint(tmp_path / "r") is None
    RunFolder(tmp_path / "r").torchrun_id.write_text("job-b\n")
    assert restart_checkpoint(tmp_path / "r") == tmp_path / "r"
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "0")
    assert restart_checkpoint(tmp_path / "r") is None  # a first attempt never resumes by itself


def test_max_restarts_needs_nproc():
    result = subprocess.run(
        [sys.executable, "-m", "ganctl", "train", "--max-restarts", "2"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2 and "--nproc" in result.stderr and "Traceback" not in result.stderr
