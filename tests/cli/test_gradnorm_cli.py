"""`ganctl gradnorm` through CliRunner: JSON schema, thresholds and exit codes, pictures."""

import json

import pytest
from conftest import small
from PIL import Image
from typer.testing import CliRunner

import ganctl
from ganctl.cli import app
from ganctl.lipschitz import analysis

runner = CliRunner()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("gn")
    for method in ("clip", "gp"):
        ganctl.train(small(lipschitz=method, steps=10, ckpt_every=4), root / method)
    return root


@pytest.fixture(scope="module")
def run(runs):
    """One checkpoint file (a folder means the whole trajectory)."""
    return runs / "gp" / "checkpoints" / "step-0000010.safetensors"


def invoke(*args):
    return runner.invoke(app, ["gradnorm", *map(str, args)])


def test_json_schema_and_agreement_with_the_library(run):
    r = invoke(run, "--n", "512", "--json", "--noise", "0.01")
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert {
        "sets",
        "alignment",
        "lower_bound",
        "upper_bound",
        "verdict",
        "seconds",
        "thresholds",
        "checkpoint",
        "step",
    } <= report.keys()
    assert set(report["sets"]) == {"real", "fake", "interp", "real+noise"}
    assert report["upper_bound"]["value"] >= report["lower_bound"]["value"]
    same = analysis.analyse(ganctl.load(run), n=512, seed=0, noise_std=0.01).report
    assert report["sets"]["interp"]["mean"] == pytest.approx(same.sets["interp"]["mean"], rel=1e-6)


def test_thresholds_give_exit_1_with_the_numbers(run):
    r = invoke(run, "--n", "256", "--max-norm", "1e-6")
    assert r.exit_code == 1 and "--max-norm 1e-06 (by" in r.stderr
    r = invoke(run, "--n", "256", "--min-norm", "1e6", "--json")
    assert r.exit_code == 1 and json.loads(r.stdout)["thresholds"]["passed"] is False
    assert invoke(run, "--n", "256", "--max-norm", "1e6", "--max-violation", "1.0").exit_code == 0


def test_png_histogram_and_plain_table_when_piped(run, tmp_path):
    r = invoke(run, "--n", "256", "--png", tmp_path / "h.png")
    assert r.exit_code == 0 and Image.open(tmp_path / "h.png").size == (640, 360)
    header = next(line for line in r.stderr.splitlines() if line.startswith("set\t"))
    assert header.split("\t")[1:4] == ["mean", "std", "min"] and "verdict:" in r.stderr


@pytest.mark.parametrize("args, message", [(["--n", "0"], "--n must be > 0"), (["--tol", "-1"], "--tol must be")])
def test_bad_input_exits_2(run, args, message):
    r = invoke(run, *args)
    assert r.exit_code == 2 and message in r.stderr


def test_missing_checkpoint_exits_2(tmp_path):
    r = invoke(tmp_path / "none")
    assert r.exit_code == 2 and "none" in r.stderr


def test_a_run_folder_gives_the_trajectory_over_its_checkpoints(runs, tmp_path):
    r = invoke(runs / "clip", runs / "gp", "--n", "256", "--json", "--png", tmp_path / "t.png")
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert [run["name"] for run in report["runs"]] == ["clip", "gp"]
    for run in report["runs"]:
        assert [c["step"] for c in run["checkpoints"]] == [4, 8, 10]
    # Each row is the single-checkpoint report of that checkpoint (same points, same seed).
    last = report["runs"][1]["checkpoints"][-1]
    single = json.loads(invoke(last["checkpoint"], "--n", "256", "--json").stdout)
    assert last["sets"] == single["sets"] and last["alignment"] == single["alignment"]
    assert Image.open(tmp_path / "t.png").size == (760, 400)
    # Thresholds judge each run's last checkpoint; the message names the run.
    r = invoke(runs / "clip", runs / "gp", "--n", "256", "--min-norm", "0.5")
    assert r.exit_code == 1 and "clip: interp_mean" in r.stderr and "gp:" not in r.stderr
    assert r.stderr.splitlines()[0].split("\t")[:3] == ["run", "step", "interp_mean"]


def test_data_option_measures_on_other_real_points(run):
    own = json.loads(invoke(run, "--n", "256", "--json").stdout)
    other = json.loads(invoke(run, "--n", "256", "--json", "--data", "ring").stdout)
    assert other["data"] == "ring" and own["data"] == "8gaussians"
    assert other["sets"]["real"] != own["sets"]["real"] and other["sets"]["fake"] == own["sets"]["fake"]
    r = invoke(run, "--data", "shapes")
    assert r.exit_code == 2 and "--data shapes" in r.stderr and "(2,)" in r.stderr
