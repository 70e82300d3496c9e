"""`compare --jobs N` and `compare --launcher ray`: real worker processes, real signals and a
real local Ray instance, each against the sequential comparison of the same seeds."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch
from conftest import cli_args, run_ganctl
from safetensors.torch import load_file

from ganctl.errors import ConfigError
from ganctl.fleet.executors import Placement, placed
from ganctl.fleet.jobs import Job

STEPS = 300
ARGS = [
    "--methods",
    "gp",
    "--seeds",
    "2",
    # bitwise equality on the CPU needs the same thread count in every run
    *cli_args(steps=STEPS, ckpt_every=20, eval_samples=200, threads=1),
]
RUNS = ("gp-seed0", "gp-seed1")


def compare(out: Path, *extra: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    return run_ganctl("compare", *ARGS, "--out", out, *extra, env=env, check=check)


def start(out: Path, *extra: str, env: dict | None = None) -> subprocess.Popen:
    command = [sys.executable, "-m", "ganctl", "compare", *ARGS, "--out", str(out), *extra]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def final(out: Path, run: str) -> dict[str, torch.Tensor]:
    return load_file(out / run / "checkpoints" / f"step-{STEPS:07d}.safetensors")


def assert_same_runs(a: Path, b: Path) -> None:
    for run in RUNS:
        x, y = final(a, run), final(b, run)
        assert x.keys() == y.keys()
        different = [k for k in x if not torch.equal(x[k], y[k])]
        assert not different, f"{run}: {different[:5]}"


def when_written(path: Path, proc: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def sequential(tmp_path_factory):
    out = tmp_path_factory.mktemp("seq") / "c"
    compare(out, "--jobs", "1")
    return out


def test_two_jobs_at_once_give_the_sequential_numbers_bitwise(sequential, tmp_path):
    out = tmp_path / "c"
    result = compare(out, "--jobs", "2")
    assert_same_runs(sequential, out)
    shown = result.stderr  # progress: stderr, one prefixed line per event when piped
    assert "[1/2] gp seed 0: training" in shown and "[2/2] gp seed 1: training" in shown
    assert all(f"[gp seed {s}] done: {STEPS} steps" in shown for s in (0, 1)), shown  # every job is shown
    again = compare(out, "--jobs", "2")  # resuming works as today: finished runs are skipped
    assert again.stderr.count("finished, skipped") == 2, again.stderr


def test_ctrl_c_stops_every_job_with_a_checkpoint_and_the_same_command_resumes_them(sequential, tmp_path):
    out = tmp_path / "c"
    proc = start(out, "--jobs", "2")
    for run in RUNS:
        when_written(out / run / "checkpoints" / "step-0000020.safetensors", proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    (line,) = [line for line in err.splitlines() if line.startswith("interrupted by SIGINT")]
    # Every job still running stopped after the step it was on, with a checkpoint, before the end;
    # on a loaded machine one job can finish before the other has reached step 20.
    last = {run: sorted((out / run / "checkpoints").glob("step-*.safetensors"))[-1].name for run in RUNS}
    stopped = [run for run in RUNS if last[run] != f"step-{STEPS:07d}.safetensors"]
    assert stopped, last
    assert f"{len(stopped)} run(s) stopped with a checkpoint" in line and "Traceback" not in err, err[-3000:]
    compare(out, "--jobs", "2")
    assert_same_runs(sequential, out)


def test_a_failing_job_is_one_line_with_its_own_exit_code(tmp_path):
    out = tmp_path / "c"
    out.mkdir()
    (out / "gp-seed1").write_text("not a folder")  # seed 1 cannot write its run folder
    parallel = compare(out, "--jobs", "2", check=False)
    assert parallel.returncode == 2  # the job's own code: a ConfigError, as a sequential comparison exits
    (line,) = [line for line in parallel.stderr.splitlines() if line.startswith("error:")]
    assert line.startswith(
        f"error: gp seed 1 ({out / 'gp-seed1'}): --out {out / 'gp-seed1'}: exists and is not a folder"
    )
    assert "Traceback" not in parallel.stderr
    assert (out / "gp-seed1").read_text() == "not a folder"  # nothing the user saved is touched


@pytest.mark.parametrize(
    ("placement", "message"),
    [
        (Placement(jobs=0), "--jobs must be >= 1, got 0"),
        (Placement(launcher="slurm"), "--launcher 'slurm' is not one of: local, ray"),
        (Placement(launcher="ray", retries=-1), "--ray-retries must be >= 0, got -1"),
        (Placement(ray_address="auto"), "--ray-address needs --launcher ray"),
    ],
)
def test_a_bad_placement_is_refused_by_name(placement, message):
    with pytest.raises(ConfigError, match="^" + message.replace("(", r"\(").replace(")", r"\)") + "$"):
        placement.check()


def test_bad_placement_flags_are_one_line_before_anything_runs(tmp_path):
    result = compare(tmp_path / "c", "--jobs", "0", check=False)
    assert result.returncode == 2 and "--jobs must be >= 1, got 0" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "c").exists()


def test_parallel_jobs_get_their_own_share_of_threads_or_their_own_gpu(monkeypatch):
    from ganctl import config as configs

    cpu = configs.TrainConfig(device="cpu")
    jobs = [Job(method="gp", seed=s, config=cpu, run_dir=Path(f"r{s}")) for s in range(4)]
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    assert [job.config.threads for job in placed(jobs, 2)] == [4, 4, 4, 4]
    mine = [Job(method="gp", seed=0, config=configs.TrainConfig(device="cpu", threads=3), run_dir=Path("r"))]
    assert placed(mine, 2)[0].config.threads == 3  # --threads wins
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    gpu = [Job(method="gp", seed=s, config=configs.TrainConfig(device="cuda"), run_dir=Path(f"r{s}")) for s in range(4)]
    assert [job.config.device for job in placed(gpu, 4)] == ["cuda:0", "cuda:1", "cuda:2", "cuda:0"]


# --- a real local Ray instance, 2 CPUs, started by the test ---------------------------------------
@pytest.fixture(scope="module")
def ray_cluster():
    pytest.importorskip("ray")
    ray_bin = Path(sys.executable).with_name("ray")
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # Ray's socket paths must stay short
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "RAY_TMPDIR": temp, "OMP_NUM_THREADS": "1"}
    head = [str(ray_bin), "start", "--head", "--num-cpus", "2", "--port", str(port)]
    subprocess.run(
        [*head, "--include-dashboard", "false", "--disable-usage-stats"],
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )
    try:
        yield env
    finally:
        subprocess.run([str(ray_bin), "stop", "--force"], env=env, capture_output=True, timeout=120)
        shutil.rmtree(temp, ignore_errors=True)


def _ray_task_pids() -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            title = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if proc.name.isdigit() and title.startswith(b"ray::_ray_job"):
            pids.append(int(proc.name))
    return pids


def test_ray_tasks_give_the_sequential_numbers_and_a_killed_worker_is_retried_from_its_checkpoint(
    sequential, ray_cluster, tmp_path
):
    out = tmp_path / "c"
    proc = start(out, "--launcher", "ray", "--ray-address", "auto", "--jobs", "2", env=ray_cluster)
    firsts = [out / run / "checkpoints" / "step-0000040.safetensors" for run in RUNS]
    for first in firsts:
        when_written(first, proc)
    written = [first.stat().st_ino for first in firsts]
    pids = _ray_task_pids()  # both jobs in flight, one task each
    assert len(pids) == 2, pids
    os.kill(pids[0], signal.SIGKILL)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    assert "[1/2] gp seed 0: training" in err
    assert [first.stat().st_ino for first in firsts] == written  # resumed after them, not trained again
    assert_same_runs(sequential, out)


def test_no_cluster_to_join_is_one_line_before_ray_is_asked():
    from ganctl.fleet import executors

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{s.getsockname()[1]}"  # a port nothing listens on once closed

    class Ray:  # ray.init retries such an address for minutes; it must not be reached
        def init(self, **kwargs):
            raise AssertionError("ray.init called")

    with pytest.raises(ConfigError) as caught:
        executors._connect(Ray(), address)
    message = str(caught.value)
    assert message.startswith(f"--ray-address {address}: cannot join a Ray cluster (nothing answers there")
    assert "ray start --head" in message


def test_the_ray_launcher_without_ray_installed_says_which_extra_to_install(monkeypatch):
    import sys

    from ganctl.fleet import executors

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray then raises ImportError
    with pytest.raises(ConfigError, match=r"^--launcher ray needs Ray: pip install 'ganctl\[ray\]'$"):
        executors._ray()
