"""benchmarks/step_bench.py runs end to end (a smoke run: times are not asserted, only what
the FLOP counter must show, which does not depend on the machine)."""

import json
import math
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "step_bench.py"


def test_the_benchmark_runs_and_counts_the_engine_s_saved_flops(tmp_path):
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--device",
            "cpu",
            "--models",
            "mlp",
            "--batches",
            "16",
            "--methods",
            "gp,r1",
            "--rounds",
            "5",
            "--block",
            "1",
            "--warmup",
            "0",
            "--threads",
            "1",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    rows = {r["method"]: r for r in json.loads(out.read_text())}
    assert rows.keys() == {"gp", "r1"}
    for r in rows.values():  # the ratio printed is the median of the rounds' ratios, each side by side
        assert len(r["round_speedups"]) == r["rounds"] == 5
        assert r["speedup"] == pytest.approx(statistics.median(r["round_speedups"]))
        assert r["speedup_range"] == [min(r["round_speedups"]), max(r["round_speedups"])]
    # The MLP critic runs the hand-written step. At interpolates it does the arithmetic of the
    # engine's autograd path, less than the textbook's (no backward pass of zeros through the
    # forward graph). For R1 both autograd loops also compute the loss's input gradient at the
    # real points in the first layer, only because those points are leaves that need a gradient
    # for the penalty; the hand-written step leaves out that one (B, 128) @ (128, 2) product.
    for r in rows.values():
        assert r["autograd_speedup"] > 0
    gp, r1 = rows["gp"], rows["r1"]
    assert gp["critic_step_gflop"] == gp["autograd_critic_step_gflop"] < gp["textbook_critic_step_gflop"]
    first_layer = 2 * 16 * 128 * 2 / 1e9  # batch 16, 128 units, 2-D points
    assert r1["autograd_critic_step_gflop"] == r1["textbook_critic_step_gflop"]
    assert abs(r1["textbook_critic_step_gflop"] - r1["critic_step_gflop"] - first_layer) < 1e-12


def test_the_engine_runs_under_autocast_in_the_benchmark(tmp_path):
    # --amp: the engine in mixed precision against the float32 textbook loop (for the GPU run);
    # under autocast the MLP critic takes the autograd path, so there is no fourth loop.
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--device",
            "cpu",
            "--models",
            "mlp",
            "--batches",
            "8",
            "--methods",
            "gp",
            "--amp",
            "bf16",
            "--rounds",
            "5",
            "--block",
            "1",
            "--warmup",
            "0",
            "--threads",
            "1",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    (row,) = json.loads(out.read_text())
    assert row["amp"] == "bf16" and "autograd_speedup" not in row  # autocast: no hand-written step to compare
    assert row["speedup_range"][0] <= row["speedup"] <= row["speedup_range"][1]
    assert "| cpu (bf16) | mlp | gp |" in result.stdout


def test_lazy_regularisation_intervals_each_get_a_row(tmp_path):
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--device",
            "cpu",
            "--models",
            "mlp",
            "--batches",
            "8",
            "--methods",
            "r1",
            "--reg-every",
            "1,3",
            "--rounds",
            "5",
            "--block",
            "1",
            "--warmup",
            "0",
            "--threads",
            "1",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert [r["reg_every"] for r in json.loads(out.read_text())] == [1, 3]


def test_the_eval_benchmark_runs_and_reports_every_space_and_size(tmp_path):
    pytest.importorskip("torch_fidelity")
    out = tmp_path / "eval.json"
    args = ["--images", "2", "--inception-images", "2", "--vgg-images", "1", "--n", "40", "--json", str(out)]
    r = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "eval_bench.py"), *args], capture_output=True, text=True, timeout=600
    )
    assert r.returncode == 0, r.stderr
    result = json.loads(out.read_text())
    cpu = [(f["space"], f["size"]) for f in result["features"] if f["device"] == "cpu"]
    spaces = ("random-conv", "inception", "vgg16")
    assert cpu == [(space, size) for space in spaces for size in (32, 64)]
    assert set(result["metrics"]["2048"]) == {"fid", "kid", "is", "pr", "dc"}
    inception_32 = next(
        f for f in result["features"] if (f["device"], f["space"], f["size"]) == ("cpu", "inception", 32)
    )
    assert result["protocol"]["cpu"]["generated_50k_h"] == pytest.approx(50 * inception_32["s_per_1000"] / 3600)


def test_real_digits_races_both_contenders_and_puts_ganctl_s_fid_beside_the_judge(tmp_path):
    pytest.importorskip("sklearn")
    out = tmp_path / "digits.json"
    command = [sys.executable, str(ROOT / "benchmarks" / "real_digits.py"), "--seconds", "2", "--every", "1"]
    command += ["--n", "100", "--draws", "2", "--threads", "1", "--clock", "cpu", "--folder", str(tmp_path / "d")]
    command += ["--ganctl", "mlp=--arch mlp --lipschitz gp --width 64 --depth 2", "--json", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(out.read_text())
    assert summary["judge"]["accuracy"] > 0.95  # an SVM on real digits: a judge worth the name
    assert {r["name"] for r in summary["results"]} == {"textbook", "mlp"}
    for r in summary["results"]:
        assert r["seconds"] >= 2 and r["steps"] > 0 and len(r["curve"]) >= 2
        assert 0 <= r["final"]["confident"] <= 1 and r["final"]["fid_random_conv"] > 0
        assert r["draw_noise"]["draws"] == 2
    mlp = next(r for r in summary["results"] if r["name"] == "mlp")
    assert mlp["config"]["n_critic"] == 2  # the recipe of flattened images
    assert len(list((tmp_path / "d").iterdir())) == 10  # a folder per digit


def _rank_metrics():
    import importlib.util

    spec = importlib.util.spec_from_file_location("rank_metrics", ROOT / "benchmarks" / "rank_metrics.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_rank_metrics_correlates_each_number_with_the_judge_in_the_direction_that_agrees():
    # The script's own logic (its generators, judge and classifier are tested where they live;
    # the measurement is benchmarks/results-cpu-digits-rank.json).
    rank = _rank_metrics()
    judge = [0.0, 0.1, 0.3, 0.5, 0.2]
    rows = [
        {
            "judge": j,
            "fid_random_conv": 1 - j,
            "confident": j,
            "classes": round(10 * j),
            "class_kl": -j,
            "fid_classifier": 0,
        }
        for j in judge
    ]
    assert rank.spearman(rows, "fid_random_conv") == pytest.approx(1.0)  # lower FID, better: agrees
    assert rank.spearman(rows, "class_kl") == pytest.approx(1.0)
    assert rank.spearman(rows, "confident") == pytest.approx(1.0)
    rows[0]["confident"], rows[3]["confident"] = rows[3]["confident"], rows[0]["confident"]
    assert rank.spearman(rows, "confident") < 1.0
    assert math.isnan(rank.spearman(rows, "fid_classifier"))  # a constant number ranks nothing
    low, high = rank.bootstrap(rows, "fid_random_conv", draws=200)
    assert low <= high <= 1.0 and high == pytest.approx(1.0)


def test_rank_metrics_samples_at_fractions_of_its_cpu_time():
    rank = _rank_metrics()
    steps = []

    def step():
        steps.append(1)
        sum(range(20_000))  # some CPU

    samples = rank.snapshots(step, lambda n, g: torch.full((n, 1, 2, 2), float(len(steps))), 0.05, [0.2, 1.0], 3)
    assert [s.shape for s in samples] == [(3, 1, 2, 2)] * 2
    assert 0 < samples[0][0, 0, 0, 0] < samples[1][0, 0, 0, 0]  # more steps by the later fraction


def _load(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_small_data_summarises_each_size_and_contender_over_seeds_and_draws_nested_subsets(tmp_path):
    small = _load("small_data")
    keys = ("confident", "classes", "kl", "clf_classes", "clf_kl", "clf_fid")
    rows = [{"fraction": 0.1, "contender": "gp", "seed": s, **{k: float(s) for k in keys}} for s in range(3)]
    rows.append({"fraction": 0.0, "contender": "gp+ada", "seed": 0, "ada_p": 0.0})  # shapes: no judge
    (row,) = small.summary(rows)
    assert (row["fraction"], row["contender"], row["seeds"]) == (0.1, "gp", 3)
    assert row["confident"] == [1.0, 1.0]  # mean and sample sd of 0, 1, 2
    folders = small.subsets(tmp_path, (0.1, 0.25))
    counts = {f: sum(1 for _ in folders[f].rglob("*.png")) for f in folders}
    assert counts == {0.1: 180, 0.25: 449}
    names = {f: {p.name for p in folders[f].rglob("*.png")} for f in folders}
    assert names[0.1] <= names[0.25]  # the smaller set is part of the larger one


def test_small_data_measures_memorisation_on_the_digits_the_critic_never_saw():
    from types import SimpleNamespace

    from torch import nn

    small = _load("small_data")
    everything = torch.arange(5 * 4, dtype=torch.uint8).reshape(5, 1, 2, 2) * 10
    seen = everything[[3, 0, 1]]
    as_float = seen.float().div(127.5).sub(1.0)

    class Knows(nn.Module):  # +1 on a seen digit, 0 on an unseen one, -1 on a sample
        def forward(self, x):
            hit = (x[:, None] == as_float[None]).flatten(2).all(-1).any(-1)
            return torch.where(x[:, 0, 0, 0] > 1.5, -1.0, hit.float())

    nets = SimpleNamespace(
        critic=Knows(), augment=SimpleNamespace(p=0.0), sample=lambda n, g, raw: torch.full((n, 1, 2, 2), 2.0)
    )
    small._WORKER["all"] = SimpleNamespace(images=everything)
    trainer = SimpleNamespace(dataset=SimpleNamespace(images=seen), nets=nets)
    copies = as_float[[0, 1, 0, 1]]  # a generator that draws its first two seen digits again
    found = small.memorised(trainer, copies)
    assert (found["d_seen"], found["d_unseen"], found["d_fake"]) == (1.0, 0.0, -1.0)
    assert found["overfit"] == 0.5  # unseen digits sit halfway between the seen ones and the samples
    assert found["nearer_seen"] == 1.0
    unseen_copies = everything[[2, 4]].float().div(127.5).sub(1.0)
    assert small.memorised(trainer, unseen_copies)["nearer_seen"] == 0.0
    small._WORKER["all"] = SimpleNamespace(images=seen)
    assert small.memorised(trainer, copies) == {}  # none held out


def test_real_digits_writes_the_readme_s_digits_folder_and_stops(tmp_path):
    """`python benchmarks/real_digits.py --folder digits --write-only`: the README's ./digits,
    1797 grey 16 px images in a sub-folder per digit, and nothing trained."""
    pytest.importorskip("sklearn")
    command = [sys.executable, str(ROOT / "benchmarks" / "real_digits.py"), "--folder", str(tmp_path / "d")]
    result = subprocess.run([*command, "--write-only"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == [str(k) for k in range(10)]
    assert len(list((tmp_path / "d").rglob("*.png"))) == 1797 and "judge" not in result.stdout


def test_the_profile_puts_every_second_in_one_bin_and_finds_the_direct_optimizer_kernel(tmp_path):
    out = tmp_path / "profile.json"
    command = [sys.executable, str(ROOT / "benchmarks" / "profile_step.py"), "--cases", "2d-gp", "--iters", "2"]
    result = subprocess.run([*command, "--warmup", "2", "--threads", "1", "--json", str(out)], capture_output=True)
    assert result.returncode == 0, result.stderr[-3000:]
    (row,) = json.loads(out.read_text())
    share = row["share"]
    assert set(share) == {"matmul", "optimizer", "data", "autograd", "other ops", "Python and dispatch"}
    # ganctl calls the fused Adam kernel outside torch.optim's step: it must still count as the optimizer
    assert share["matmul"] > 0 and share["optimizer"] > 0 and share["data"] > 0
    assert row["fused_mlp_step"] and row["n_critic"] == 5


def test_time_to_quality_times_whole_processes_and_judges_every_seed(tmp_path):
    out = tmp_path / "t.json"
    command = [sys.executable, str(ROOT / "benchmarks" / "time_to_quality.py"), "--seeds", "2", "--jobs", "2"]
    command += ["--setting", "tiny=--steps 5 --batch-size 32 --width 16 --eval-samples 256", "--json", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    (setting,) = json.loads(out.read_text())["settings"]
    assert [r["seed"] for r in setting["runs"]] == [0, 1] and all(r["steps"] == 5 for r in setting["runs"])
    assert all(0 <= r["hq"] <= 1 and 0 <= r["modes"] <= 25 and r["wall_s"] > 0 for r in setting["runs"])
    assert setting["goal_met"] is False  # five steps cover no 25 modes
    assert "| tiny | 5 |" in result.stdout
