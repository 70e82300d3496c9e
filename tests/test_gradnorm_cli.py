"""`ganctl gradnorm` through CliRunner: JSON schema, thresholds and exit codes, pictures."""

import json

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import ganctl
from conftest import small
from ganctl.analysis import gradnorm as analysis
from ganctl.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gn") / "run"
    ganctl.train(small(lipschitz="gp", steps=10), out)
    return out


def invoke(*args):
    return runner.invoke(app, ["gradnorm", *map(str, args)])


def test_json_schema_and_agreement_with_the_library(run):
    r = invoke(run, "--n", "512", "--json", "--noise", "0.01")
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert {"sets", "alignment", "lower_bound", "upper_bound", "verdict", "seconds", "thresholds", "checkpoint", "step"} <= report.keys()
    assert set(report["sets"]) == {"real", "fake", "interp", "real+noise"}
    assert report["upper_bound"]["value"] >= report["lower_bound"]["value"]
    same = analysis.analyse(ganctl.load(run).trainer, n=512, seed=0, noise_std=0.01)
    assert report["sets"]["interp"]["mean"] == pytest.approx(same["sets"]["interp"]["mean"], rel=1e-6)


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
