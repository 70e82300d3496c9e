"""`ganctl compare` through CliRunner: outputs, resuming an interrupted comparison, and
agreement with `ganctl gradnorm` on existing checkpoints."""

import csv
import json
import math

import pytest
from conftest import cli_args
from conftest import invoke as invoke_cli
from PIL import Image

from ganctl.runfolder import RunLock

TINY = cli_args(steps=6, batch_size=64, width=32, eval_every=3, log_every=3, ckpt_every=3, eval_samples=200)


def invoke(*args):
    return invoke_cli("compare", *args)


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    out = tmp_path_factory.mktemp("cmp") / "c"
    r = invoke(*TINY, "--methods", "clip,gp", "--seeds", "2", "--out", out, "--json", "--lambda", "1")
    assert r.exit_code == 0, r.output
    return out, json.loads(r.stdout), r


def test_two_methods_write_every_output(compared):
    out, result, _ = compared
    assert (out / ".ganctl.lock").read_text() == ""  # the writer's lock, released with no holder left
    assert sorted(p.name for p in out.iterdir() if p.name != ".ganctl.lock") == [
        "clip-seed0",
        "clip-seed1",
        "compare.csv",
        "compare.json",
        "curves.png",
        "gp-seed0",
        "gp-seed1",
        "panel.png",
    ]
    assert {"runs", "methods", "best", "settings", "seconds"} <= result.keys()
    assert [(r["method"], r["seed"], r["step"]) for r in result["runs"]] == [
        ("clip", 0, 6),
        ("clip", 1, 6),
        ("gp", 0, 6),
        ("gp", 1, 6),
    ]
    # The pass-through option reached every run, and the recipe filled the rest per method.
    configs = {
        r["method"]: json.loads((out / f"{r['method']}-seed0" / "config.json").read_text()) for r in result["runs"]
    }
    assert configs["gp"]["penalty_weight"] == 1.0 and configs["clip"]["optimizer"] == "rmsprop"
    assert configs["gp"]["batch_size"] == configs["clip"]["batch_size"] == 64
    for key in ("modes", "hq_share", "w1", "interp_mean", "violation_share", "wasserstein", "s_per_step"):
        stats = result["methods"]["gp"][key]
        values = [r[key] for r in result["runs"] if r["method"] == "gp"]
        assert stats["mean"] == pytest.approx(sum(values) / 2)
        assert stats["std"] == pytest.approx(abs(values[0] - values[1]) / 2**0.5)
    assert result["best"]["w1"] == [min(("clip", "gp"), key=lambda m: result["methods"][m]["w1"]["mean"])]
    rows = list(csv.DictReader((out / "compare.csv").open()))
    assert len(rows) == 4 and float(rows[2]["w1"]) == pytest.approx(result["runs"][2]["w1"])
    assert json.loads((out / "compare.json").read_text())["runs"] == result["runs"]
    assert Image.open(out / "panel.png").width > 700 and Image.open(out / "curves.png").height > 500


def test_a_second_call_skips_finished_runs_and_an_interrupted_run_resumes(compared):
    out, first, _ = compared
    final = out / "gp-seed1" / "checkpoints" / "step-0000006.safetensors"
    kept = {p: p.stat().st_mtime_ns for p in out.glob("*/checkpoints/*.safetensors") if p != final}
    final.unlink()  # gp seed 1 stopped after its step-3 checkpoint
    r = invoke(*TINY, "--methods", "clip,gp", "--seeds", "2", "--out", out, "--json", "--lambda", "1")
    assert r.exit_code == 0, r.output
    assert r.stderr.count("finished, skipped") == 3 and "gp seed 1: resuming" in r.stderr
    assert all(p.stat().st_mtime_ns == t for p, t in kept.items())
    again = json.loads(r.stdout)
    # Resuming on the CPU is bitwise exact, so the comparison's numbers do not move.
    for a, b in zip(first["runs"], again["runs"]):
        assert {k: v for k, v in a.items() if k != "s_per_step"} == {k: v for k, v in b.items() if k != "s_per_step"}


def test_existing_checkpoints_give_gradnorms_numbers(compared):
    out, _, _ = compared
    ckpt = out / "gp-seed0" / "checkpoints" / "step-0000006.safetensors"
    r = invoke(out / "clip-seed0", ckpt, "--json")
    assert r.exit_code == 0, r.output
    row = json.loads(r.stdout)["runs"][1]
    gn = json.loads(invoke_cli("gradnorm", ckpt, "--json").stdout)
    assert row["interp_mean"] == gn["sets"]["interp"]["mean"]
    assert row["violation_share"] == gn["sets"]["interp"]["above"]
    assert row["wasserstein"] == gn["wasserstein"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--methods", "gp,gp"], "listed twice"),
        (["--methods", "gp", "--lr-dd", "1"], "No such option: --lr-dd"),
        (["--methods", "gp", "--lr-d", "fast"], "Invalid value for '--lr-d'"),
        (["--methods", "gp,bogus"], "bogus"),
        (["--seeds", "0"], "--seeds must be >= 1"),
        (["--methods", "gp", "--tune", "0"], "--tune must be >= 1"),
        (["--methods", "gp", "--tune", "2", "--tune-seeds", "0"], "--tune-seeds must be >= 1"),
        (["--methods", "gp", "--tune", "2", "--tune-metric", "violation_share"], "has no better direction"),
    ],
)
def test_bad_input_exits_2_before_training(tmp_path, args, message):
    r = invoke(*TINY, "--out", tmp_path / "x", *args)
    assert r.exit_code == 2 and message in r.stderr, r.output
    assert not (tmp_path / "x").exists()


def test_comparing_existing_runs_into_an_out_another_process_writes_is_refused(compared, tmp_path):
    out, _, _ = compared
    with RunLock(tmp_path / "busy"):
        r = invoke(out / "clip-seed0", "--out", tmp_path / "busy")
    assert r.exit_code == 2 and "another ganctl process is writing there" in r.stderr, r.output
    assert not (tmp_path / "busy" / "compare.json").exists()


def test_a_folder_holding_another_run_is_refused(compared, tmp_path):
    out, _, _ = compared
    r = invoke(*TINY, "--methods", "gp", "--seeds", "1", "--out", out, "--lambda", "5")
    assert r.exit_code == 2 and "holds a run with other settings" in r.stderr and "penalty_weight" in r.stderr


def test_image_runs_are_ranked_by_their_image_metrics(tmp_path, monkeypatch):
    monkeypatch.setenv("GANCTL_CACHE", str(tmp_path / "cache"))
    args = (
        "--data shapes --image-size 16 --width 8 --z-dim 8 --batch-size 8 --steps 2 --n-critic 1 --eval-samples 40"
        " --eval-every 0 --sample-every 0 --eval-metrics fid,pr --device cpu"
    ).split()
    r = invoke(*args, "--methods", "gp,sn", "--out", tmp_path / "c", "--json")
    assert r.exit_code == 0, r.output
    result = json.loads(r.stdout)
    fids = {m: s["fid[random-conv]"]["mean"] for m, s in result["methods"].items()}
    assert result["best"]["fid[random-conv]"] == [min(fids, key=fids.get)]
    recalls = {m: s["recall[random-conv]"]["mean"] for m, s in result["methods"].items()}
    assert result["best"]["recall[random-conv]"] == [m for m, v in recalls.items() if v == max(recalls.values())]
    rows = list(csv.DictReader((tmp_path / "c" / "compare.csv").open()))
    assert all(float(row["fid[random-conv]"]) > 0 for row in rows)


def test_trials_fill_each_method_s_own_space_the_same_way_every_time():
    from ganctl.fleet.tuning import trials
    from ganctl.methods.registry import search_space

    for method in ("clip", "gp", "r1", "sn"):
        space = search_space(method)
        drawn = trials(method, 16)
        assert drawn == trials(method, 16) and len({str(t) for t in drawn}) == 16
        for name, dim in space.items():
            values = [t[name] for t in drawn]
            if dim.kind == "log":
                assert all(dim.values[0] <= v <= dim.values[1] for v in values)
                assert max(values) / min(values) > 3  # spread over the range, not clumped
            else:
                assert set(values) == set(dim.values)  # every choice tried in 16 trials
    assert "clip" in search_space("clip") and "penalty_weight" in search_space("gp")


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    out = tmp_path_factory.mktemp("tune") / "t"
    r = invoke(*TINY, "--methods", "gp,sn", "--tune", "2", "--seeds", "1", "--out", out, "--json")
    assert r.exit_code == 0, r.output
    return out, json.loads(r.stdout), r


def test_tuning_gives_every_method_the_same_budget_and_reports_on_fresh_seeds(tuned):
    out, result, _ = tuned
    tuning = result["tuning"]
    assert (tuning["metric"], tuning["trials"], tuning["tune_seeds"], tuning["report_seeds"]) == ("w1", 2, [1000], [0])
    for method in ("gp", "sn"):
        r = tuning["methods"][method]
        scores = [t["score"] for t in r["trials"]]
        assert len(scores) == 2 and r["best_so_far"] == [scores[0], min(scores)]
        assert r["best_trial"] == scores.index(min(scores))
        config = json.loads((out / f"{method}-seed0" / "config.json").read_text())
        assert config["lr_g"] == config["lr_d"] == pytest.approx(r["chosen"]["lr"]) and config["seed"] == 0
        assert config["n_critic"] == r["chosen"]["n_critic"] and config["lr_decay"] == r["chosen"]["lr_decay"]
        assert (out / "tune" / method / f"trial-{r['best_trial']}-seed1000" / "config.json").is_file()
    assert [(row["method"], row["seed"]) for row in result["runs"]] == [("gp", 0), ("sn", 0)]
    assert json.loads((out / "tune.json").read_text())["methods"]["gp"]["chosen"] == tuning["methods"]["gp"]["chosen"]
    assert Image.open(out / "budget.png").width > 300


def test_an_interrupted_tuning_resumes_where_it_stopped(tuned):
    out, first, _ = tuned
    final = out / "tune" / "sn" / "trial-1-seed1000" / "checkpoints" / "step-0000006.safetensors"
    final.unlink()
    r = invoke(*TINY, "--methods", "gp,sn", "--tune", "2", "--seeds", "1", "--out", out, "--json")
    assert r.exit_code == 0, r.output
    assert r.stderr.count("finished, skipped") == 5 and "sn trial 1 seed 1000: resuming" in r.stderr
    assert json.loads(r.stdout)["tuning"]["methods"]["sn"]["chosen"] == first["tuning"]["methods"]["sn"]["chosen"]
    table = invoke(*TINY, "--methods", "gp,sn", "--tune", "2", "--seeds", "1", "--out", out)  # the terminal's view
    chosen = first["tuning"]["methods"]["sn"]
    assert table.exit_code == 0 and f"sn: trial {chosen['best_trial']} of 2 (w1 " in table.stderr, table.output
    assert f"{out / 'tune.json'}, {out / 'budget.png'}" in table.stderr


def test_tuning_refuses_report_seeds_among_the_tuning_seeds(tmp_path):
    r = invoke(*TINY, "--methods", "gp", "--tune", "2", "--seed", "1000", "--out", tmp_path / "x")
    assert r.exit_code == 2 and "overlap the tuning seeds" in r.stderr


def test_a_trial_whose_score_is_undefined_scores_worst():
    from ganctl.fleet.tuning import _score

    # summary.json is strict JSON: a NaN W1 was written as null, and ranks below every number
    assert _score({"w1": None, "modes": 3}, "w1") == math.inf
    assert _score({"fid[inception]": 12.5}, "fid") == 12.5
