"""`ganctl train --holdout`: images set aside and never trained on, recorded in the run folder,
read by every evaluation (copying scores, the critic on seen, held-out and generated images) and
by `ganctl eval` and `--resume`; with one line for what cannot be held out."""

import json

import pytest
import torch
from conftest import bumps, cli_args, invoke, parse_json, write_images

from ganctl.config import TrainConfig
from ganctl.data import load_dataset

FLAGS = dict(arch="mlp", lipschitz="gp", width=32, z_dim=8, batch_size=16, steps=4, eval_every=2, eval_samples=64)


def test_a_held_out_split_is_never_trained_on_and_every_evaluation_reads_it(tmp_path):
    write_images(tmp_path / "bumps", bumps(40))
    run = tmp_path / "run"
    args = cli_args(data=tmp_path / "bumps", **FLAGS)
    r = invoke("train", *args, "--holdout", "0.25", "--out", run, "--eval-metrics", "none")
    assert r.exit_code == 0, r.output
    record = json.loads((run / "holdout.json").read_text())
    assert record["images"] == 40 and len(record["held_out"]) == 10
    whole = load_dataset(TrainConfig(data=str(tmp_path / "bumps")))
    split = load_dataset(TrainConfig(data=str(tmp_path / "bumps"), holdout="0.25", seed=7))  # whatever the seed
    assert torch.equal(split.held_out.images, whole.images[record["held_out"]])
    seen = {bytes(x.numpy().tobytes()) for x in split.images}
    assert len(split) == 30 and not any(bytes(x.numpy().tobytes()) in seen for x in split.held_out.images)
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    evals = [rec for rec in logged if "eval/critic_held" in rec]
    assert [rec["step"] for rec in evals] == [2, 4]
    for key in ("nearer_seen[pixels]", "held_nearer_seen[pixels]", "c_t[pixels]", "critic_seen", "critic_fake"):
        assert all(isinstance(rec[f"eval/{key}"], float) for rec in evals)
    report = parse_json(invoke("eval", run, "--n", 100, "--metrics", "none", "--json").stdout)
    assert report["copying"]["n_held"] == 10 and report["copying"]["holdout"] == "the run's --holdout split"
    assert report["copying"]["n_train"] == 30
    r = invoke("train", "--resume", run, "--steps", 6)
    assert r.exit_code == 0, r.output
    record["held_out"][0] = 39 - record["held_out"][0]  # another split than the data makes
    (run / "holdout.json").write_text(json.dumps(record))
    for command in (["train", "--resume", run, "--steps", 8], ["eval", run, "--n", 50]):
        r = invoke(*command)
        assert r.exit_code == 2 and "holdout.json: records other" in r.stderr and r.stderr.count("\n") == 1


@pytest.mark.parametrize(
    "data, holdout, message",
    [
        ("bumps", "39", "holds out 39 of the data's 40 images; hold out at least 2 and leave at least 2"),
        ("bumps", "half", "--holdout 'half': give a number of images (2 or more) or a fraction between 0 and 1"),
        ("8gaussians", "0.1", "--holdout 0.1: --data 8gaussians is drawn fresh"),
        ("shapes", "10", "--holdout 10: --data shapes is drawn fresh"),
    ],
)
def test_what_cannot_be_held_out_is_one_line(tmp_path, data, holdout, message):
    write_images(tmp_path / "bumps", bumps(40))
    source = tmp_path / "bumps" if data == "bumps" else data
    r = invoke("train", *cli_args(data=source, **FLAGS), "--holdout", holdout, "--out", tmp_path / "run")
    assert r.exit_code == 2 and message in r.stderr and r.stderr.count("\n") == 1, r.output
    assert not (tmp_path / "run").exists()
