"""A run folder nothing can corrupt: one writer at a time (real processes), a full disk handled
cleanly, bounded checkpoints, and a resume that steps over a damaged newest checkpoint."""

import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys

import pytest
import torch
from conftest import LONG_RUN, small, start_training, wait_for
from typer.testing import CliRunner

import ganctl
from ganctl import runfolder
from ganctl.cli import app
from ganctl.nets import checkpoint
from ganctl.runfolder import RunLock, list_checkpoints

runner = CliRunner()


def test_a_second_writer_exits_2_before_writing_anything(tmp_path):
    out = tmp_path / "run"
    first = start_training(out, "--ckpt-every", "50", "--seed", "1")
    try:
        wait_for(first, "starting")
        second = subprocess.run(
            [sys.executable, "-m", "ganctl", *LONG_RUN, "--ckpt-every", "50", "--seed", "5", "--out", str(out)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert second.returncode == 2, second.stderr
        assert f"pid {first.pid} on {socket.gethostname()}" in second.stderr and "another ganctl" in second.stderr
        assert second.stderr.count("\n") == 1 and "Traceback" not in second.stderr
        assert json.loads((out / "config.json").read_text())["seed"] == 1  # the first one's, untouched
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=120)
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps))  # one writer's log, no interleaving
    assert (out / ".ganctl.lock").read_text() == ""  # released


def test_a_lock_left_by_a_dead_process_is_taken_over_with_a_note(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    out = tmp_path / "run"
    out.mkdir()
    (out / ".ganctl.lock").write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "since": "then"}))
    command = ["train", "--data", "8gaussians", "--steps", "2", "--width", "8", "--eval-samples", "100"]
    r = runner.invoke(app, [*command, "--out", str(out)])  # 100 points: the exact W1 of 2048 took 14 s
    assert r.exit_code == 0, r.output
    assert f"took over {out}'s lock from a writer that is gone (pid {dead.pid}" in r.stderr


def test_readers_take_no_lock(tmp_path):
    ganctl.train(small(steps=2), tmp_path / "run")
    with RunLock(tmp_path / "run"):  # a writer holds it
        r = runner.invoke(app, ["gradnorm", str(tmp_path / "run"), "--n", "64", "--json"])
        assert r.exit_code == 0, r.output
        with pytest.raises(ganctl.errors.ConfigError, match="another ganctl process is writing there"):
            RunLock(tmp_path / "run").__enter__()


def error_lines(result):
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


class DiskFull:
    """safetensors' save_file failing as it does on a full disk, from the nth call on."""

    def __init__(self, n):
        from safetensors.torch import save_file

        self.n, self.calls, self.real = n, 0, save_file

    def __call__(self, tensors, filename, metadata=None):
        self.calls += 1
        if self.calls >= self.n:
            with open(filename, "wb") as fh:
                fh.write(b"half")  # what the failed write left in its temporary file
            raise RuntimeError(
                f'Error while serializing: I/O error: No space left on device (os error 28) at path "{filename}"'
            )
        return self.real(tensors, filename, metadata=metadata)


TRAIN = [
    "train",
    "--data",
    "8gaussians",
    "--steps",
    "10",
    "--width",
    "8",
    "--depth",
    "1",
    "--ckpt-every",
    "2",
    "--eval-every",
    "0",
    "--sample-every",
    "0",
    "--log-every",
    "1",
]


def test_a_full_disk_is_one_line_exit_74_and_the_run_resumes_from_the_named_checkpoint(tmp_path, monkeypatch):
    out = tmp_path / "run"
    monkeypatch.setattr("ganctl.nets.checkpoint.save_file", DiskFull(3))
    r = runner.invoke(app, [*TRAIN, "--out", str(out)])
    assert r.exit_code == 74, r.output
    last = out / "checkpoints" / "step-0000004.safetensors"
    assert error_lines(r) == [r.stderr.splitlines()[-1]] and "Traceback" not in r.output
    assert "step-0000006.safetensors: No space left on device (ENOSPC)" in r.stderr
    assert f"last good checkpoint {last}; continue with: ganctl train --resume {last}" in r.stderr
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]  # no temporary file left
    assert [p.name for p in list_checkpoints(out)] == ["step-0000002.safetensors", "step-0000004.safetensors"]
    assert ganctl.load(last).step == 4
    monkeypatch.undo()
    resumed = runner.invoke(app, ["train", "--resume", str(last), "--json"])
    assert resumed.exit_code == 0, resumed.output
    assert json.loads(resumed.stdout)["step"] == 10


@pytest.mark.parametrize("code", [errno.EDQUOT, errno.EIO, errno.EROFS, errno.EACCES])
def test_other_write_errors_in_the_metrics_log(tmp_path, monkeypatch, code):
    out = tmp_path / "run"
    real_open, calls = open, []

    def failing(path, mode="r", *args, **kwargs):
        if str(path).endswith("metrics.jsonl") and "a" in mode:
            calls.append(path)
            if len(calls) == 5:
                raise OSError(code, os.strerror(code), str(path))
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(runfolder, "open", failing, raising=False)
    r = runner.invoke(app, [*TRAIN, "--out", str(out)])
    assert r.exit_code == 74, r.output
    assert f"cannot write {out / 'metrics.jsonl'}: {os.strerror(code)} ({errno.errorcode[code]})" in r.stderr
    assert "last good checkpoint" in r.stderr and len(error_lines(r)) == 1


def test_a_real_small_filesystem_fills_up_cleanly(tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("this machine cannot mount a small tmpfs")
    try:
        r = runner.invoke(app, [*TRAIN, "--steps", "1000", "--ckpt-every", "1", "--out", str(mount / "run")])
        assert r.exit_code == 74, r.output
        assert "No space left on device (ENOSPC)" in r.stderr and "continue with: ganctl train --resume" in r.stderr
        assert not [p for p in mount.rglob("*") if p.name.endswith(".tmp")]
        for path in list_checkpoints(mount / "run"):
            checkpoint.read_state(path)  # every checkpoint left is whole
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_keep_last_bounds_the_checkpoints(tmp_path):
    ganctl.train(small(steps=10, ckpt_every=2, keep_last=2), tmp_path / "run")
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == [
        "step-0000008.safetensors",
        "step-0000010.safetensors",
    ]


def test_an_interrupted_deletion_leaves_the_newest_checkpoint_loadable(tmp_path, monkeypatch):
    real_unlink = type(tmp_path).unlink

    def interrupted(self, missing_ok=False):
        if self.name.startswith("step-"):
            raise KeyboardInterrupt  # killed between the write and the deletion
        return real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(type(tmp_path), "unlink", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ganctl.train(small(steps=10, ckpt_every=2, keep_last=1), tmp_path / "run")
    found = list_checkpoints(tmp_path / "run")
    assert [p.name for p in found] == ["step-0000002.safetensors", "step-0000004.safetensors"]
    assert ganctl.load(found[-1]).step == 4


def test_keep_last_can_change_on_resume_and_compare_still_resumes(tmp_path):
    ganctl.train(small(steps=4, ckpt_every=1), tmp_path / "run")
    ganctl.train(out=tmp_path / "run", resume=tmp_path / "run", overrides={"steps": 6, "keep_last": 1})
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == ["step-0000006.safetensors"]
    args = [
        "compare",
        "--data",
        "8gaussians",
        "--methods",
        "gp",
        "--steps",
        "4",
        "--width",
        "8",
        "--depth",
        "1",
        "--ckpt-every",
        "1",
        "--keep-last",
        "1",
        "--eval-every",
        "0",
        "--eval-samples",  # this test is about the checkpoints: a small evaluation (W1 on 2048 points: 4 s)
        "200",
        "--out",
        str(tmp_path / "cmp"),
    ]
    assert runner.invoke(app, args).exit_code == 0
    args[args.index("--steps") + 1] = "6"
    r = runner.invoke(app, args)
    assert r.exit_code == 0 and "gp seed 0: resuming" in r.stderr, r.output
    assert [p.name for p in list_checkpoints(tmp_path / "cmp" / "gp-seed0")] == ["step-0000006.safetensors"]


def test_resume_of_a_run_skips_a_damaged_newest_checkpoint(tmp_path):
    ganctl.train(small(steps=6, ckpt_every=2), tmp_path / "run")
    twin = tmp_path / "twin"
    shutil.copytree(tmp_path / "run", twin)
    newest = tmp_path / "run" / "checkpoints" / "step-0000006.safetensors"
    newest.write_bytes(newest.read_bytes()[:200])  # truncated
    strict = runner.invoke(app, ["train", "--resume", str(newest), "--steps", "8"])  # a file: strict
    assert strict.exit_code == 2 and "not a readable safetensors file" in strict.stderr
    r = runner.invoke(app, ["train", "--resume", str(tmp_path / "run"), "--steps", "8"])
    assert r.exit_code == 0, r.output
    assert f"skipped an unreadable checkpoint, {newest}" in r.stderr and "resuming from" in r.stderr
    # bitwise as resuming from the checkpoint before it
    ganctl.train(out=twin, resume=twin / "checkpoints" / "step-0000004.safetensors", overrides={"steps": 8})
    a = ganctl.load(tmp_path / "run" / "checkpoints" / "step-0000008.safetensors")
    b = ganctl.load(twin / "checkpoints" / "step-0000008.safetensors")
    for x, y in zip(a.critic.state_dict().values(), b.critic.state_dict().values()):
        assert torch.equal(x, y)
