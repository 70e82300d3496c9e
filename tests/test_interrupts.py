"""Interrupting training with real signals in real processes: SIGINT and SIGTERM stop after
the current step with a checkpoint (exit 130 / 143); SIGKILL loses only the steps since the
last checkpoint, which still loads and resumes."""

import os
import signal
import subprocess
import sys

import pytest
import torch
from conftest import start_training, wait_for

import ganctl
from ganctl.nets import checkpoint
from ganctl.runfolder import list_checkpoints


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_stops_after_the_step_with_a_checkpoint(tmp_path, sig, code):
    proc = start_training(tmp_path / "run", "--ckpt-every", "20")
    wait_for(proc, "checkpoint")  # past the first checkpoint
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    assert "continue with: ganctl train --resume" in err and "Traceback" not in err
    last = list_checkpoints(tmp_path / "run")[-1]
    assert str(last) in err
    ck = ganctl.load(last)
    assert ck.step > 20 and last.name == f"step-{ck.step:07d}.safetensors"  # the step it stopped at
    # and it resumes
    r = subprocess.run(
        [sys.executable, "-m", "ganctl", "train", "--resume", str(last), "--steps", str(ck.step + 3), "--json"],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=120,
    )
    assert r.returncode == 0, r.stderr


def test_sigkill_loses_only_the_steps_since_the_last_checkpoint(tmp_path):
    proc = start_training(tmp_path / "run", "--ckpt-every", "20")
    wait_for(proc, "step-0000040")
    proc.kill()
    proc.wait(timeout=60)
    found = list_checkpoints(tmp_path / "run")
    for path in found:  # a kill mid-write can leave a temporary file, never a partial checkpoint
        checkpoint.read(path)
    ck = ganctl.load(found[-1])
    assert ck.step % 20 == 0 and ck.step >= 40
    assert torch.isfinite(ck.sampler(torch.randn(4, ck.config.z_dim))).all()


def test_a_second_ctrl_c_exits_at_once_and_leaves_every_checkpoint_whole(tmp_path):
    proc = start_training(tmp_path / "run", "--ckpt-every", "20")
    wait_for(proc, "checkpoint")
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGINT)  # whether it lands before, during or after the final write
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    found = list_checkpoints(tmp_path / "run")
    assert found
    for path in found:
        checkpoint.read(path)
