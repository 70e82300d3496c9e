"""`ganctl eval` end to end: checkpoints and files scored, numbers checked against an independent
computation on the same features, thresholds and exit codes, image metrics during training and
TensorBoard."""

import json

import numpy as np
import pytest
import torch
from conftest import small
from PIL import Image
from typer.testing import CliRunner

import ganctl
from ganctl.cli import app
from ganctl.data.shapes import ShapesSet
from ganctl.quality import evaluate, features, scores

runner = CliRunner()


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GANCTL_CACHE", str(tmp_path / "cache"))


def tiny_shapes(**changes):
    base = dict(data="shapes", image_size=16, width=8, z_dim=8, batch_size=16, steps=2, n_critic=1, eval_samples=64)
    return small(**{**base, **changes})


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ev") / "run"
    ganctl.train(tiny_shapes(eval_every=0), out)
    return out


def invoke(*args):
    return runner.invoke(app, ["eval", *map(str, args)])


def test_a_checkpoint_gets_every_metric_labelled_with_its_feature_space(image_run):
    r = invoke(image_run, "--n", 40, "--json")
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    names = {"fid", "kid", "kid_std", "precision", "recall", "density", "coverage"}
    assert {f"{m}[random-conv]" for m in names} <= report["metrics"].keys()
    assert {"valid_share", "modes", "modes_hit"} <= report["metrics"].keys()  # the shapes judge
    space = report["feature_space"]
    assert (space["name"], space["standard"], len(space["sha256"])) == ("random-conv", False, 64)
    assert report["n_fake"] == report["n_real"] == 40 and report["real_fingerprint"] == "shapes/1/16"
    assert report["source"]["step"] == 2 and report["thresholds"]["passed"]


# One set's covariance can be singular (a unit alive only in the other set); the reference's
# sqrtm warns, and still agrees to 1e-4.
@pytest.mark.filterwarnings("ignore:Matrix is singular")
def test_fid_and_kid_match_an_independent_computation_on_the_same_features(image_run):
    from scipy import linalg

    n = 300  # more samples than feature dimensions (240): full-rank covariances for scipy's sqrtm
    report = json.loads(invoke(image_run, "--n", n, "--metrics", "fid,kid", "--json").stdout)
    nets = ganctl.load(image_run)
    space = features.random_conv()
    fake = torch.cat(list(evaluate.generated_chunks(nets, n, seed=0))).double()
    real = torch.cat(list(ShapesSet(16).chunks(n, torch.Generator().manual_seed(0), scores.CHUNK)))
    x, y = space.features(real).double().numpy(), space.features(fake.float()).double().numpy()
    # A random ReLU network has a few dead units: constant in both sets, they add nothing to the
    # FID but make the covariances singular for scipy's sqrtm, so the reference drops them.
    alive = (x.std(0) > 0) | (y.std(0) > 0) | (x.mean(0) != y.mean(0))
    xa, ya = x[:, alive], y[:, alive]
    mu1, mu2, s1, s2 = xa.mean(0), ya.mean(0), np.cov(xa, rowvar=False), np.cov(ya, rowvar=False)
    want = ((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * linalg.sqrtm(s1 @ s2).real)
    assert report["metrics"]["fid[random-conv]"] == pytest.approx(want, rel=1e-4)
    # KID over subsets of the whole set (300 < 1000) is the unbiased MMD^2 of the two sets.
    m, d = len(x), x.shape[1]
    k = lambda a, b: (a @ b.T / d + 1) ** 3  # noqa: E731
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    mmd = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2 * kxy.mean()
    assert report["metrics"]["kid[random-conv]"] == pytest.approx(mmd, rel=1e-3)
    assert report["metrics"]["kid_std[random-conv]"] == pytest.approx(0.0, abs=1e-6)


def test_the_real_features_are_cached_and_reused(image_run, monkeypatch):
    space = features.random_conv()
    first = scores.real_features(space, ShapesSet(16), 30, seed=5)
    calls = []
    real_extract = space.extract
    monkeypatch.setattr(space, "extract", lambda x: calls.append(len(x)) or real_extract(x))
    again = scores.real_features(space, ShapesSet(16), 30, seed=5)
    assert calls == [] and torch.equal(first.features, again.features) and again.cache == first.cache
    scores.real_features(space, ShapesSet(16), 30, seed=6)  # another sample: computed
    assert sum(calls) == 30


def write_pngs(folder, images):
    folder.mkdir(parents=True, exist_ok=True)
    pixels = ((images + 1) * 127.5).round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
    for i, p in enumerate(pixels):
        Image.fromarray(p).save(folder / f"{i:03d}.png")


def test_a_folder_of_any_generator_s_images_is_scored(tmp_path):
    shapes = ShapesSet(16)
    write_pngs(tmp_path / "good", shapes.sample(40, torch.Generator().manual_seed(9), "cpu"))
    write_pngs(tmp_path / "noise", torch.rand(40, 3, 16, 16) * 2 - 1)
    common = ("--data", "shapes", "--image-size", 16, "--n", 40, "--metrics", "fid,pr", "--json")
    good = json.loads(invoke("--fake", tmp_path / "good", *common).stdout)["metrics"]
    noise = json.loads(invoke("--fake", tmp_path / "noise", *common).stdout)["metrics"]
    assert good["valid_share"] == 1.0 and noise["valid_share"] == 0.0  # PNG round trip is exact
    assert good["fid[random-conv]"] < noise["fid[random-conv]"] / 5
    assert good["precision[random-conv]"] > 0.8 and noise["precision[random-conv]"] == 0.0
    r = invoke("--fake", tmp_path / "noise", *common[:-1], "--max-fid", 1.0, "--min-precision", 0.5)
    assert r.exit_code == 1 and r.stderr.count("threshold broken") == 2 and "(by " in r.stderr


def test_points_from_any_generator_are_scored(tmp_path):
    points = ganctl.data.get_dataset("8gaussians").sample(500, torch.Generator().manual_seed(1), "cpu")
    np.save(tmp_path / "p.npy", points.numpy())
    r = invoke("--fake", tmp_path / "p.npy", "--data", "8gaussians", "--json", "--min-modes", 8, "--min-hq", 0.9)
    assert r.exit_code == 0, r.output
    metrics = json.loads(r.stdout)["metrics"]
    assert metrics["modes"] == 8 and metrics["hq_share"] > 0.95 and metrics["w1"] < 0.3


@pytest.mark.parametrize(
    "make, args, message",
    [
        (lambda p: None, ["--fake", "{p}/none", "--data", "shapes"], "no such file or folder"),
        (lambda p: (p / "empty").mkdir(), ["--fake", "{p}/empty", "--data", "shapes"], "no images found"),
        (
            lambda p: np.save(p / "a.npy", np.zeros((5, 8, 8, 3), np.uint8)),
            ["--fake", "{p}/a.npy", "--data", "shapes"],
            "the generated images are 8 x 8 but the real ones 32 x 32",
        ),
        (
            lambda p: write_pngs(p / "few", torch.rand(3, 3, 8, 8)),
            ["--fake", "{p}/few", "--data", "{p}/few", "--metrics", "pr"],
            "so at least 4 real images",
        ),
        (lambda p: None, ["--fake", "{p}/x.npy"], "--fake needs --data"),
        (lambda p: None, ["--data", "shapes"], "give a run folder or checkpoint"),
        (lambda p: None, ["RUN", "--metrics", "fid,bogus"], "bogus is not one of"),
        (lambda p: None, ["RUN", "--min-hq", "0.5"], "--min-hq: hq_share was not measured here"),
        (lambda p: None, ["RUN", "--features", "inception"], "needs the weights file"),
        (
            lambda p: (p / "w.pth").write_bytes(b"truncated"),
            ["RUN", "--inception", "{p}/w.pth"],
            "not a readable PyTorch",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_2(image_run, tmp_path, make, args, message, monkeypatch):
    monkeypatch.delenv("GANCTL_INCEPTION", raising=False)
    make(tmp_path)
    r = invoke(*[str(image_run) if a == "RUN" else a.format(p=tmp_path) for a in args], "--n", 20)
    assert r.exit_code == 2, r.output
    assert message in r.stderr and "Traceback" not in r.output and r.stderr.count("\n") == 1


def test_inception_weights_from_a_file_through_the_command(image_run, tmp_path):
    pytest.importorskip("torch_fidelity")
    torch.save(features.random_inception_state(), tmp_path / "w.pth")
    r = invoke(image_run, "--inception", tmp_path / "w.pth", "--n", 6, "--metrics", "fid", "--json")
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert "fid[inception-unverified]" in report["metrics"] and not report["feature_space"]["standard"]


def test_an_image_run_logs_its_metrics_at_eval_steps(tmp_path):
    cfg = tiny_shapes(steps=2, eval_every=2, sample_every=2, eval_metrics="fid,kid,pr,dc", tensorboard=True)
    summary = ganctl.train(cfg, tmp_path)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    evaluated = [r for r in records if "eval/fid[random-conv]" in r]
    assert [r["step"] for r in evaluated] == [2]
    assert {"eval/precision[random-conv]", "eval/coverage[random-conv]", "eval/valid_share"} <= evaluated[0].keys()
    assert summary.final["fid[random-conv]"] == evaluated[0]["eval/fid[random-conv]"]  # fixed inputs
    measured = summary.image_metrics_on
    assert (measured["n_fake"], measured["n_real"], measured["real_fingerprint"]) == (64, 64, "shapes/1/16")
    assert measured["feature_space"]["label"] == "random-conv" and len(measured["feature_space"]["sha256"]) == 64
    events = list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert events
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(events[0]), size_guidance={"images": 0, "histograms": 0, "scalars": 0}).Reload()
    assert {"eval/fid/random-conv", "loss_d"} <= set(acc.Tags()["scalars"])
    assert acc.Tags()["histograms"] == ["gradnorm/interp"] and acc.Tags()["images"] == ["samples"]
    assert acc.Scalars("eval/fid/random-conv")[0].value == pytest.approx(evaluated[0]["eval/fid[random-conv]"])


def test_without_tensorboard_the_flag_is_one_clear_line(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name.startswith("torch.utils.tensorboard"):
            raise ImportError("No module named 'tensorboard'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    r = runner.invoke(
        app, ["train", "--data", "8gaussians", "--steps", "2", "--tensorboard", "--out", str(tmp_path / "r")]
    )
    assert r.exit_code == 2 and "pip install 'ganctl[tensorboard]'" in r.stderr and "Traceback" not in r.output
    assert not (tmp_path / "r" / "checkpoints").exists()


def test_ganctl_evaluate_is_the_command_as_one_library_call(image_run):
    """`ganctl.evaluate` with the command's options gives the very numbers `ganctl eval --json`
    prints, as a typed result."""
    from ganctl.errors import ConfigError

    found = ganctl.evaluate(image_run, n=40, seed=3, metrics="fid,kid,pr")
    r = invoke(image_run, "--n", 40, "--seed", 3, "--metrics", "fid,kid,pr", "--json")
    assert r.exit_code == 0, r.output
    assert found.metrics == json.loads(r.stdout)["metrics"] and "fid[random-conv]" in found.metrics
    assert found.standard is False and found.to_dict()["n_fake"] == 40
    with pytest.raises(ConfigError, match="give a run folder or checkpoint"):
        ganctl.evaluate()


def test_the_samples_gan_train_keeps_count_in_the_memory_check(monkeypatch):
    """Generated images are read a chunk at a time, but GAN-train (a conditional generator judged
    by a classifier) keeps them all: then, and only then, they count."""
    from ganctl import memory
    from ganctl.errors import ConfigError
    from ganctl.quality.evaluate import CHUNK, Request, check_size

    shape, n = (3, 32, 32), 1000
    chunk = memory.FLOAT * CHUNK * 3 * 32 * 32
    monkeypatch.setattr(memory, "available", lambda device="cpu": chunk + memory.FLOAT * n * 3 * 32 * 32 // 2)
    check_size(Request(n=n), shape, None)  # a chunk at a time: fits
    with pytest.raises(ConfigError, match="--n 1000"):
        check_size(Request(n=n), shape, None, held=True)
