"""Scores from a classifier of the user's labelled data (`eval --classifier`): against closed
forms, a mode-collapsed generator, the held-out real data itself, a TorchScript classifier, and
through the command with its CI thresholds."""

import dataclasses
import math

import numpy as np
import pytest
import torch
from conftest import bumps, cli_args, invoke, parse_json, write_images

from ganctl.config import TrainConfig
from ganctl.data import get_dataset, load_dataset
from ganctl.quality import classifier


def test_histogram_scores_against_their_closed_forms():
    # 10 samples over 4 classes: 6 confidently class 0, 2 confidently class 1, 2 unsure (class 2).
    probs = torch.zeros(10, 4)
    probs[:6, 0] = probs[6:8, 1] = 0.95
    probs[8:, 2] = 0.5
    probs += (1 - probs.sum(1, keepdim=True)) / 4  # the rest spread evenly
    prior = torch.full((4,), 0.25)
    s = classifier.histogram_scores(probs, prior)
    assert s["confident_share"] == pytest.approx(0.8)
    # covered: at least a fifth of the even share of all samples, 10 / 4 / 5 = 0.5 -> at least 1 confident
    assert s["classes_covered"] == 2
    want = 0.6 * math.log(0.6 / 0.25) + 0.2 * math.log(0.2 / 0.25) * 2  # classes 0, 1 and 2
    assert s["class_kl"] == pytest.approx(want)


@pytest.fixture(scope="module")
def judge(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GANCTL_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield classifier.auto(get_dataset("8gaussians"), seed=0)


def test_auto_learns_the_data_and_is_read_back_from_the_cache(judge, monkeypatch, tmp_path_factory):
    real, y = judge.held_out
    probs, _ = judge.predict(real)
    assert float((probs.argmax(1) == y).double().mean()) > 0.99  # 8 well-separated modes

    def no_training(*args, **kwargs):
        raise AssertionError("trained again")

    monkeypatch.setattr(classifier, "fit", no_training)
    monkeypatch.setenv("GANCTL_CACHE", str(tmp_path_factory.getbasetemp() / "cache0"))
    assert classifier.auto(get_dataset("8gaussians"), seed=0).sha256 == judge.sha256
    monkeypatch.setattr(classifier, "DETECTOR_STEPS", classifier.DETECTOR_STEPS + 1)
    with pytest.raises(AssertionError, match="trained again"):  # a detector trained otherwise is not the cached one
        classifier.auto(get_dataset("8gaussians"), seed=0)


def test_a_collapsed_generator_covers_two_classes_and_its_histogram_is_log_4_away(judge):
    data = get_dataset("8gaussians")
    g = torch.Generator().manual_seed(1)
    labels = torch.tensor([0, 3]).repeat(500)
    fake = data.sample_of(labels, g, "cpu")
    found = classifier.score(judge, fake, None, ("fid",))
    m = {k.split("[")[0]: v for k, v in found["metrics"].items()}
    assert m["classes_covered"] == 2 and m["confident_share"] > 0.99
    # Half the samples on each of two classes, against the held-out real frequencies p (about 1/8
    # each, so about log 4): KL = 0.5 log(0.5 / p_0) + 0.5 log(0.5 / p_3).
    p = torch.bincount(judge.held_out[1], minlength=8).double() / len(judge.held_out[1])
    want = 0.5 * math.log(0.5 / float(p[0])) + 0.5 * math.log(0.5 / float(p[3]))
    assert m["class_kl"] == pytest.approx(want, rel=1e-6) and abs(want - math.log(4)) < 0.15
    assert found["not_measured"] and "gan_test" not in m


def test_real_samples_score_the_ceiling_and_gan_train_learns_from_labelled_samples(judge):
    real, y = judge.held_out
    found = classifier.score(judge, real, y, ("fid", "pr"))
    m = {k.split("[")[0]: v for k, v in found["metrics"].items()}
    ceiling = {k.split("[")[0]: v for k, v in found["ceiling"].items()}
    assert m["gan_test"] == ceiling["accuracy"] and m["classes_covered"] == ceiling["classes_covered"] == 8
    assert m["gan_train"] > 0.97 and m["fid"] == pytest.approx(0.0, abs=1e-6)  # the same set on both sides
    assert all(k.endswith(f"[{judge.label}]") for k in found["metrics"])


def test_a_torchscript_classifier_from_a_file(judge, tmp_path):
    path = tmp_path / "judge.pt"
    torch.jit.script(judge.net).save(str(path))
    loaded = classifier.from_file(path, get_dataset("8gaussians"))
    real, _ = judge.held_out
    torch.testing.assert_close(loaded.predict(real[:50])[0], judge.predict(real[:50])[0])
    (tmp_path / "bad.pt").write_bytes(b"not a module")
    with pytest.raises(Exception, match="not a TorchScript module"):
        classifier.from_file(tmp_path / "bad.pt", get_dataset("8gaussians"))
    # Through the command: samples of any generator judged by the file, named by its hash.
    import numpy as np

    np.save(tmp_path / "p.npy", real[:200].numpy())
    r = invoke("eval", "--fake", tmp_path / "p.npy", "--data", "8gaussians", "--classifier", path, "--json")
    assert r.exit_code == 0, r.output
    report = parse_json(r.stdout)
    assert report["classifier"]["source"] == str(path) and report["classifier"]["label"] == loaded.label
    assert report["metrics"][f"classes_covered[{loaded.label}]"] == 8
    r = invoke("eval", "--fake", tmp_path / "p.npy", "--data", "8gaussians", "--classifier", tmp_path / "bad.pt")
    assert r.exit_code == 2 and "not a TorchScript module" in r.stderr and r.stderr.count("\n") == 1


def test_eval_with_a_classifier_and_its_thresholds(tmp_path, monkeypatch):
    monkeypatch.setenv("GANCTL_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "run"
    # The 2-D recipe's networks (width 128, depth 3, batch 256): 300 steps put samples on their labels' modes.
    args = cli_args(steps=300, lipschitz="sn", width=None, depth=None, batch_size=None, eval_samples=256)
    assert invoke("train", *args, "--conditional", "--out", run).exit_code == 0
    r = invoke("eval", run, "--classifier", "auto", "--n", 1000, "--json")
    assert r.exit_code == 0, r.output
    report = parse_json(r.stdout)
    label = report["classifier"]["label"]
    assert report["metrics"][f"gan_test[{label}]"] > 0.9  # a conditional 2-D GAN puts its samples on their modes
    assert report["ceiling"][f"accuracy[{label}]"] > 0.99 and report["not_measured"] == []
    r = invoke("eval", run, "--classifier", "auto", "--n", 1000, "--min-gan-test", 1.5)
    assert r.exit_code == 1 and f"gan_test[{label}]" in r.stderr and "--min-gan-test 1.5" in r.stderr
    unlabelled = tmp_path / "u"
    assert invoke("train", *cli_args(data="ring", steps=2), "--out", unlabelled).exit_code == 0
    r = invoke("eval", unlabelled, "--classifier", "auto", "--n", 100)
    assert r.exit_code == 2 and "has no class labels" in r.stderr and r.stderr.count("\n") == 1


def test_image_samples_from_files_against_a_class_folder(tmp_path, monkeypatch):
    from PIL import Image

    monkeypatch.setenv("GANCTL_CACHE", str(tmp_path / "cache"))
    colours = {"red": (220, 30, 30), "blue": (30, 30, 220)}
    g = torch.Generator().manual_seed(0)
    for name, rgb in colours.items():  # two classes (ImageFolder layout), noisy so the net must learn
        (tmp_path / "real" / name).mkdir(parents=True)
        for i in range(40):
            noise = torch.randint(-40, 40, (16, 16, 3), generator=g)
            pixels = (torch.tensor(rgb) + noise).clamp(0, 255).to(torch.uint8).numpy()
            Image.fromarray(pixels).save(tmp_path / "real" / name / f"{i}.png")
    (tmp_path / "fake").mkdir()
    for i, f in enumerate(sorted((tmp_path / "real" / "red").iterdir())[:20]):  # a generator of red only
        (tmp_path / "fake" / f"{i}.png").write_bytes(f.read_bytes())
    r = invoke("eval", "--fake", tmp_path / "fake", "--data", tmp_path / "real", "--classifier", "auto", "--json")
    assert r.exit_code == 0, r.output
    report = parse_json(r.stdout)
    m = {k.split("[")[0]: v for k, v in report["metrics"].items()}
    held = report["classifier"]["held_out"]
    assert held == 8 and m["classes_covered"] == 1 and m["confident_share"] > 0.9
    assert report["classifier"]["reject"] is False  # flat colours are like their own shuffled pixels
    assert m["class_kl"] == pytest.approx(math.log(2), abs=0.5)  # all on one class of two (the prior is 8 samples)


def test_an_npz_s_labels_are_read_for_the_classifier(tmp_path, monkeypatch):
    """Arrays keep their labels for conditional runs only; the classifier reads them anyway."""
    monkeypatch.setenv("GANCTL_CACHE", str(tmp_path / "cache"))
    g = torch.Generator().manual_seed(0)
    y = torch.arange(120) % 2
    x = torch.where(y[:, None, None, None] == 0, 40, 210) + torch.randint(-30, 30, (120, 8, 8, 1), generator=g)
    np.savez(tmp_path / "real.npz", x=x.clamp(0, 255).to(torch.uint8).numpy(), y=y.numpy())
    np.save(tmp_path / "fake.npy", (x[y == 1][:40].permute(0, 3, 1, 2).float() / 127.5 - 1).numpy())
    r = invoke(
        "eval", "--fake", tmp_path / "fake.npy", "--data", tmp_path / "real.npz", "--classifier", "auto", "--json"
    )
    assert r.exit_code == 0, r.output
    m = {k.split("[")[0]: v for k, v in parse_json(r.stdout)["metrics"].items()}
    assert m["classes_covered"] == 1 and m["class_kl"] > 0.5  # one class of two, read from the .npz's y


def test_auto_s_detector_calls_noise_and_blank_images_of_no_class(tmp_path, monkeypatch):
    """Images of no class get no confident verdict (a detector learnt against made-up images),
    while held-out real images keep theirs; where the made-up images overlap the data (flat
    colours with noise, like their own shuffled pixels) the detector is dropped (above)."""
    monkeypatch.setenv("GANCTL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(classifier, "MIN_STEPS", 300)  # an easy task: fewer steps than the default 500
    images = bumps(300, seed=4)
    left = images.float().mul(torch.arange(16.0)).sum(dim=(1, 2)) < images.float().sum(dim=(1, 2)) * 7.5
    for name, keep in (("left", left), ("right", ~left)):  # two classes: the bump's side
        write_images(tmp_path / "real" / name, images[keep])
    clf = classifier.auto(load_dataset(TrainConfig(data=str(tmp_path / "real"))), seed=0)
    assert clf.reject
    held = clf.held_out[0]
    ceiling = classifier.histogram_scores(clf.predict(held)[0], torch.ones(2) / 2)
    alone = classifier.histogram_scores(dataclasses.replace(clf, detector=None).predict(held)[0], torch.ones(2) / 2)
    assert ceiling["confident_share"] >= alone["confident_share"] - 1 / len(held)  # the detector costs them nothing
    assert ceiling["confident_share"] > 0.8 and ceiling["rejected_share"] == 0.0
    g = torch.Generator().manual_seed(1)
    made_up = {
        "uniform noise": torch.rand(200, 1, 16, 16, generator=g) * 2 - 1,
        "gaussian noise": torch.randn(200, 1, 16, 16, generator=g).clamp(-1, 1),
        "black": -torch.ones(20, 1, 16, 16),
        "white": torch.ones(20, 1, 16, 16),
        "grey": torch.zeros(20, 1, 16, 16),
    }
    for what, x in made_up.items():
        found = classifier.histogram_scores(clf.predict(x)[0], torch.ones(2) / 2)
        assert found["confident_share"] <= 0.02 and found["rejected_share"] >= 0.95, what
