"""Stacked data (VEEGAN, PacGAN): three images of a labelled grey set as channels, a mode per
triple of classes, counted by a classifier of each channel."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import invoke, parse_json

from ganctl.config import TrainConfig
from ganctl.data import load_dataset
from ganctl.data.stacked import STACKS
from ganctl.methods.resolve import data_path
from ganctl.quality.classifier import mode_scores

LEVELS = (20, 120, 230)  # three classes of grey level: 27 modes


def grey_set(path, per_class=30, side=8, seed=0):
    """An .npz of noisy grey squares, one level per class, with labels."""
    g = torch.Generator().manual_seed(seed)
    images, labels = [], []
    for k, level in enumerate(LEVELS):
        noise = torch.randint(-15, 16, (per_class, side, side, 1), generator=g)
        images.append((level + noise).clamp(0, 255).to(torch.uint8))
        labels += [k] * per_class
    np.savez(path, x=torch.cat(images).numpy(), y=np.array(labels))
    return path


def test_each_channel_is_an_image_of_its_modes_class(tmp_path):
    base = grey_set(tmp_path / "grey.npz")
    data = load_dataset(TrainConfig(data=f"stacked:{base}"))
    assert data.shape == (3, 8, 8) and len(data) == STACKS and data.classes.count == 27
    assert data.classes.names[5] == "0-1-2"  # 5 = (0 * 3 + 1) * 3 + 2
    k = torch.tensor(LEVELS)
    channel_level = data.images[:2000].float().mean(dim=(2, 3))  # (n, 3): each channel's grey level
    classes = (channel_level[..., None] - k).abs().argmin(-1)
    assert torch.equal((classes[:, 0] * 3 + classes[:, 1]) * 3 + classes[:, 2], data.targets[:2000])
    counts = torch.bincount(data.targets, minlength=27).double()  # three independent uniform draws
    assert (counts / STACKS - 1 / 27).abs().max() < 0.003
    again = load_dataset(TrainConfig(data=f"stacked:{base}"))  # the same stacks every time
    assert again.fingerprint() == data.fingerprint()


def test_mode_scores_closed_forms():
    uniform = torch.arange(27).repeat(10)
    assert mode_scores(uniform, 27) == {"modes_covered": 27, "modes_kl": pytest.approx(0.0, abs=1e-12)}
    one = torch.full((100,), 4)
    assert mode_scores(one, 27) == {"modes_covered": 1, "modes_kl": pytest.approx(math.log(27))}
    half = torch.tensor([0, 1] * 50)  # two modes equally: KL = log(27 / 2)
    assert mode_scores(half, 27)["modes_kl"] == pytest.approx(math.log(27 / 2))


def test_stacked_paths_are_stored_absolute(tmp_path, monkeypatch):
    base = grey_set(tmp_path / "grey.npz")
    monkeypatch.chdir(tmp_path)
    assert data_path("stacked:grey.npz") == f"stacked:{base.resolve()}"


def test_bad_stacked_data_is_one_line(tmp_path):
    unlabelled = tmp_path / "u.npz"
    np.savez(unlabelled, x=np.zeros((4, 8, 8, 1), np.uint8))
    for data, why in [
        ("stacked:", "name the labelled grey set"),
        (f"stacked:{tmp_path / 'missing'}", "is no folder"),
        (f"stacked:{unlabelled}", "has no labels"),
    ]:
        r = invoke("eval", "--fake", unlabelled, "--data", data)
        assert r.exit_code == 2 and why in r.stderr and "Traceback" not in r.output, r.output


def test_eval_counts_modes_as_pacgan(tmp_path, monkeypatch):
    """Real stacks cover the modes the held-out ones do; a generator of one stack covers one mode
    with KL log 27 to uniform; the gate fails it."""
    monkeypatch.setenv("GANCTL_CACHE", str(tmp_path / "cache"))
    data = f"stacked:{grey_set(tmp_path / 'grey.npz')}"
    stacks = load_dataset(TrainConfig(data=data))
    real = stacks.images[:540].float() / 127.5 - 1
    np.save(tmp_path / "real.npy", real.numpy())
    np.save(tmp_path / "one.npy", real[:1].repeat(540, 1, 1, 1).numpy())
    common = ["--data", data, "--classifier", "auto", "--metrics", "fid", "--n", 540, "--json"]
    r = invoke("eval", "--fake", tmp_path / "real.npy", *common)
    assert r.exit_code == 0, r.output
    report = parse_json(r.stdout)
    label = report["classifier"]["label"]
    m, ceiling = report["metrics"], report["ceiling"]
    assert ceiling[f"accuracy[{label}]"] == 1.0 and report["classifier"]["stacks"] == 540
    assert m[f"modes_covered[{label}]"] == ceiling[f"modes_covered[{label}]"] == 27
    assert m[f"modes_kl[{label}]"] < 0.05
    common[common.index("fid")] = "none"  # --metrics none: no FID anywhere, the classifier's space too
    r = invoke("eval", "--fake", tmp_path / "one.npy", *common, "--min-modes-covered", 20)
    assert r.exit_code == 1, r.output
    m = parse_json(r.stdout)["metrics"]
    assert not any(k.startswith("fid") for k in m)
    assert m[f"modes_covered[{label}]"] == 1 and m[f"modes_kl[{label}]"] == pytest.approx(math.log(27))
    assert f"modes_covered[{label}] 1 < --min-modes-covered 20" in r.stderr


def test_stacked_data_counts_pacgans_26000_samples_by_default():
    from ganctl.quality.evaluate import default_n

    assert default_n("stacked:digits") == 26_000 and default_n("digits") == default_n(None) == 10_000


def test_a_conditional_run_is_refused_modes_without_a_stack(tmp_path):
    """51 classes make 132,651 modes, more than the 128,000 stacks: some mode has no image to
    condition on, and one line says so."""
    from ganctl.errors import DataError

    k = 51
    np.savez(tmp_path / "many.npz", x=np.arange(k, dtype=np.uint8).repeat(16).reshape(k, 4, 4, 1), y=np.arange(k))
    data = f"stacked:{tmp_path / 'many.npz'}"
    assert load_dataset(TrainConfig(data=data)).classes.count == k**3  # unconditional: fine
    with pytest.raises(DataError, match="modes of --data .* have no stack among its 128,000; train it unconditionally"):
        load_dataset(TrainConfig(data=data, conditional=True))
