"""Class-conditional GANs: labels from every source that has them, conditional generators and
critics (projection, AC-GAN, concatenation) with every Lipschitz method, penalties at fixed
labels against closed forms, checkpoints with their classes, per-class sampling, gradient norms
and metrics, and bad input as one line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import small
from PIL import Image
from torch import nn
from typer.testing import CliRunner

import ganctl
from ganctl.cli import app
from ganctl.config import TrainConfig
from ganctl.data import get_dataset, load_dataset
from ganctl.data.shapes import ShapesSet
from ganctl.errors import ConfigError, DataError
from ganctl.methods.registry import available_methods
from ganctl.methods.resolve import resolve
from ganctl.models import build_models
from ganctl.models.conditional import ConditionalBatchNorm, ConditionalCritic
from ganctl.training.engine import Trainer

runner = CliRunner()


def tiny(**changes):
    base = dict(conditional=True, width=16, depth=2, batch_size=32, steps=4, n_critic=1, eval_samples=64)
    return small(**{**base, **changes})


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GANCTL_CACHE", str(tmp_path / "cache"))


# --- labels from the data ---------------------------------------------------------------------
@pytest.mark.parametrize("name", ["8gaussians", "25gaussians"])
def test_a_mixture_s_label_is_its_component(name):
    ds = get_dataset(name)
    x, y = ds.sample_labelled(2000, torch.Generator().manual_seed(0), "cpu")
    nearest = torch.cdist(x, ds.mixture.centres_tensor()).argmin(dim=1)
    assert torch.equal(nearest, y) and ds.classes.count == ds.mixture.components
    g = torch.Generator().manual_seed(0)  # the same draws as the unconditional sample
    assert torch.equal(ds.sample(2000, torch.Generator().manual_seed(0), "cpu"), x)
    assert torch.equal(torch.cdist(ds.sample_of(y, g, "cpu"), ds.mixture.centres_tensor()).argmin(dim=1), y)
    assert get_dataset("8gaussians").classes.names[:4] == ("E", "W", "N", "S")


def test_shapes_classes_are_its_modes_as_the_judge_names_them():
    shapes = ShapesSet(16)
    x, y = shapes.sample_labelled(300, torch.Generator().manual_seed(1), "cpu")
    assert torch.equal(shapes.judge(x), y) and shapes.classes.names[0] == "red circle"
    sevens = shapes.sample_of(torch.full((50,), 7), torch.Generator().manual_seed(2), "cpu")
    assert (shapes.judge(sevens) == 7).all()


def _png(path, value, size=8):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size, 3), value, dtype=np.uint8)).save(path)


def test_an_image_folder_s_sub_folders_are_its_classes(tmp_path):
    root = tmp_path / "pets"
    for i in range(3):
        _png(root / "cats" / f"{i}.png", 10 + i)
        _png(root / "dogs" / "inner" / f"{i}.png", 200 + i)  # nested inside a class folder
    data = load_dataset(TrainConfig(data=str(root), conditional=True))
    assert data.classes.names == ("cats", "dogs")
    assert (data.images[data.targets == 1] >= 200).all() and (data.images[data.targets == 0] < 20).all()
    x, y = data.sample_labelled(40, torch.Generator().manual_seed(0), "cpu")
    assert ((x[y == 1] > 0.5).all() and (x[y == 0] < -0.5).all()) and data.classes.count == 2
    assert torch.equal(load_dataset(TrainConfig(data=str(root), conditional=True)).targets, data.targets)  # cached


def test_an_npz_s_labels_are_read_and_checked(tmp_path):
    images = np.zeros((6, 8, 8), dtype=np.uint8)
    np.savez(tmp_path / "d.npz", images=images, y=np.array([0, 1, 2, 0, 1, 2]))
    data = load_dataset(TrainConfig(data=str(tmp_path / "d.npz"), conditional=True))
    assert data.classes.names == ("0", "1", "2") and data.targets.tolist() == [0, 1, 2, 0, 1, 2]
    np.savez(tmp_path / "n.npz", images=images, labels=np.arange(6) % 2, class_names=np.array(["odd", "even"]))
    assert load_dataset(TrainConfig(data=str(tmp_path / "n.npz"), conditional=True)).classes.names == ("odd", "even")


FOUR = np.zeros((4, 8, 8), np.uint8)


@pytest.mark.parametrize(
    "arrays, message",
    [
        (
            dict(images=FOUR, y=np.array([0, 1, 2, 3]), classes=np.array(["a", "b"])),
            "label 2 names no class; its 2 class names are numbered 0 to 1",
        ),
        (dict(images=FOUR, y=np.array([0, 1])), "2 labels for 4 images"),
        (dict(images=FOUR, y=np.array([0, -1, 0, 0])), "label -1 is negative"),
        (dict(images=FOUR, y=np.array([-6, -1, -2, -3])), "label -6 is negative; labels number the classes 0 to K-1"),
        (dict(images=FOUR), "read from its 'y' or 'labels' array"),
    ],
)
def test_bad_labels_are_one_line_exit_2_and_nothing_written(tmp_path, arrays, message):
    data = tmp_path / "d.npz"
    np.savez(data, **arrays)
    out = tmp_path / "run"
    r = runner.invoke(app, ["train", "--data", str(data), "--conditional", "--steps", "1", "--out", str(out)])
    assert r.exit_code == 2 and message in r.stderr and r.stderr.count("\n") == 1 and "Traceback" not in r.output
    assert not (out / "checkpoints").exists()


def test_a_class_folder_with_no_images_and_data_without_labels_are_one_line(tmp_path):
    _png(tmp_path / "f" / "cats" / "0.png", 1)
    (tmp_path / "f" / "dogs").mkdir()
    with pytest.raises(DataError, match="class folder dogs has no images"):
        load_dataset(TrainConfig(data=str(tmp_path / "f"), conditional=True))
    load_dataset(TrainConfig(data=str(tmp_path / "f")))  # unconditional: nothing to refuse
    _png(tmp_path / "flat" / "0.png", 1)
    with pytest.raises(DataError, match="sub-folders, one per class"):
        load_dataset(TrainConfig(data=str(tmp_path / "flat"), conditional=True))
    with pytest.raises(DataError, match="the mixtures have them"):
        load_dataset(TrainConfig(data="swissroll", conditional=True))


# --- models -----------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["dcgan", "resnet"])
def test_conditional_batch_norm_gives_each_class_its_gain_and_bias(arch):
    cfg = resolve(
        TrainConfig(data="shapes", image_size=16, arch=arch, width=8, z_dim=8, conditional=True, num_classes=4)
    )
    g, _ = build_models(cfg, (3, 16, 16))
    norms = [m for m in g.modules() if isinstance(m, ConditionalBatchNorm)]
    plain = [m for m in g.modules() if type(m) is nn.BatchNorm2d]
    assert norms and len(plain) == len(norms) and not any(m.affine for m in plain)  # only the CBNs' own
    with torch.no_grad():
        for m in norms:  # make the classes differ
            m.gain.weight.uniform_(0.5, 1.5)
            m.bias.weight.normal_()
    g.eval()
    z = torch.randn(1, 8).repeat(4, 1)
    x = g(z, torch.arange(4))
    assert not torch.allclose(x[0], x[1]) and torch.allclose(g(z[:1], torch.tensor([2])), x[2:3], atol=1e-6)


@pytest.mark.parametrize("cond", ["projection", "acgan", "concat"])
def test_conditional_critics_at_fixed_labels(cond):
    arch = "mlp" if cond == "concat" else "dcgan"
    cfg = resolve(
        TrainConfig(
            data="shapes", image_size=16, arch=arch, width=8, z_dim=8, conditional=True, num_classes=3, cond=cond
        )
    )
    _, d = build_models(cfg, (3, 16, 16))
    assert isinstance(d, ConditionalCritic) and d.kind == cond
    x = torch.randn(5, 3, 16, 16)
    value, logits = d.forward_all(x, torch.zeros(5, dtype=torch.long))
    assert value.shape == (5, 1) and (logits is not None) == (cond == "acgan")
    if cond == "acgan":
        assert logits.shape == (5, 3) and torch.equal(
            d(x, torch.zeros(5, dtype=torch.long)), d(x, torch.ones(5, dtype=torch.long))
        )
    else:
        assert not torch.allclose(d(x, torch.zeros(5, dtype=torch.long)), d(x, torch.ones(5, dtype=torch.long)))


def test_concat_is_for_mlp_critics_and_the_settings_need_conditional():
    with pytest.raises(ConfigError, match="--cond concat concatenates"):
        resolve(TrainConfig(data="shapes", arch="dcgan", conditional=True, cond="concat"))
    with pytest.raises(ConfigError, match="add --conditional"):
        resolve(TrainConfig(data="shapes", cond="acgan"))
    with pytest.raises(ConfigError, match="apply to --cond acgan"):
        resolve(TrainConfig(data="shapes", conditional=True, cond="projection", acgan_scale=1.0))
    gp = resolve(TrainConfig(data="shapes", conditional=True, lipschitz="gp"))
    assert (gp.cond, gp.acgan_scale, gp.acgan_scale_g) == ("acgan", 1.0, 0.1)  # WGAN-GP's conditional code
    assert resolve(TrainConfig(data="shapes", conditional=True, lipschitz="sn")).cond == "projection"
    assert resolve(TrainConfig(data="8gaussians", conditional=True)).cond == "concat"


# --- training ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "method, data, cond",
    [
        (method, data, cond)
        for method in available_methods()
        for data, cond in (("8gaussians", "concat"), ("shapes", "projection"), ("shapes", "acgan"))
        if not (method == "bjorck" and data == "shapes")  # an MLP critic only (methods/test_constrained.py)
    ],
)
def test_every_method_trains_with_every_conditioning(method, data, cond):
    image = dict(image_size=16, width=8, z_dim=8, batch_size=8) if data == "shapes" else {}
    trainer = Trainer(resolve(tiny(data=data, lipschitz=method, cond=cond, **image)))
    assert not trainer.uses_fused_step  # a conditional critic takes the autograd path
    for _ in range(2):
        trainer.train_step()
    stats = trainer.pop_stats()
    assert all(np.isfinite(v) for v in stats.values()) and ("acgan_d" in stats) == (cond == "acgan")


def test_conditional_8gaussians_learns_its_classes(tmp_path):
    summary = ganctl.train(small(conditional=True, lipschitz="sn", steps=800, eval_every=0, width=64), tmp_path / "run")
    final = summary.final
    assert final["class_consistency"] > 0.9 and final["modes"] == 8, final


# --- checkpoints and commands --------------------------------------------------------------------
@pytest.fixture(scope="module")
def shapes_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cond") / "run"
    cfg = tiny(data="shapes", image_size=16, width=8, z_dim=8, batch_size=8, lipschitz="sn", ckpt_every=2)
    ganctl.train(cfg, out)
    return out


def test_the_checkpoint_carries_the_class_count_and_names(shapes_run):
    ck = ganctl.load(shapes_run)
    assert ck.cfg.num_classes == 20 and ck.class_names[1] == "green circle" and ck.cfg.cond == "projection"
    trainer = ganctl.resume(shapes_run, overrides={"steps": 6})
    assert trainer.nets.class_names == ck.class_names
    r = runner.invoke(app, ["train", "--resume", str(shapes_run), "--no-conditional"])
    assert r.exit_code == 2 and "cannot change --conditional" in r.stderr


def test_sample_a_class_by_name_or_index_and_a_grid_with_a_row_per_class(shapes_run, tmp_path):
    r = runner.invoke(app, ["sample", str(shapes_run), "--out", str(tmp_path / "g.png"), "--n", "40", "--json"])
    assert r.exit_code == 0, r.output
    grid = Image.open(tmp_path / "g.png")
    assert grid.size[1] > grid.size[0] * 5  # 20 rows of 2
    by_name = np.load(_sample(shapes_run, tmp_path / "a.npy", "--class", "blue square"))
    by_index = np.load(_sample(shapes_run, tmp_path / "b.npy", "--class", "7"))
    assert np.array_equal(by_name, by_index)
    r = runner.invoke(app, ["sample", str(shapes_run), "--out", str(tmp_path / "c.png"), "--class", "20"])
    assert (
        r.exit_code == 2 and "not one of the checkpoint's 20 classes" in r.stderr and not (tmp_path / "c.png").exists()
    )


def _sample(run, out, *args):
    r = runner.invoke(app, ["sample", str(run), "--out", str(out), "--n", "5", *args])
    assert r.exit_code == 0, r.output
    return out


def test_class_on_an_unconditional_checkpoint_is_refused(tmp_path):
    ganctl.train(small(steps=2), tmp_path / "u")
    r = runner.invoke(app, ["sample", str(tmp_path / "u"), "--out", str(tmp_path / "x.npy"), "--class", "0"])
    assert r.exit_code == 2 and "trained without --conditional" in r.stderr


def test_gradnorm_reports_every_class_and_all(shapes_run):
    r = runner.invoke(app, ["gradnorm", str(next((shapes_run / "checkpoints").iterdir())), "--n", "200", "--json"])
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert len(report["classes"]) == 20 and report["sets"]["interp"]["count"] == 200
    assert sum(c["interp"]["count"] for c in report["classes"].values()) == 200
    assert report["upper_bound"]["value"] >= report["lower_bound"]["value"]


def test_eval_adds_intra_class_fid_and_class_consistency(shapes_run):
    r = runner.invoke(app, ["eval", str(shapes_run), "--n", "200", "--metrics", "fid", "--json"])
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    m = report["metrics"]
    per_class = report["intra_fid_per_class"]
    assert len(per_class) == 20 and m["intra_fid[random-conv]"] == pytest.approx(np.mean(list(per_class.values())))
    assert 0.0 <= m["class_consistency"] <= 1.0 and "fid[random-conv]" in m and "valid_share" in m


def test_compare_accepts_conditional(tmp_path):
    args = ["compare", "--data", "8gaussians", "--methods", "gp,sn", "--steps", "4", "--conditional", "--width", "8"]
    r = runner.invoke(app, [*args, "--eval-samples", "64", "--out", str(tmp_path / "cmp"), "--json"])
    assert r.exit_code == 0, r.output
    result = json.loads(r.stdout)
    assert {row["method"] for row in result["runs"]} == {"gp", "sn"}
    assert all("class_consistency" in row for row in result["runs"])


def test_the_projection_bound_holds_at_every_label():
    from ganctl.lipschitz.bounds import upper_bound
    from ganctl.lipschitz.norms import gradient_norms

    cfg = resolve(
        TrainConfig(data="shapes", image_size=16, arch="dcgan", width=4, z_dim=8, conditional=True, num_classes=5)
    )
    trainer = Trainer(cfg.replace(lipschitz="sn", cond="projection"))  # the embedding is spectrally normalised too
    for _ in range(3):
        trainer.train_step()
    bound, table = upper_bound(trainer.critic, (3, 16, 16), "cpu", conditional=True)
    x = torch.randn(64, 3, 16, 16)
    for k in range(5):
        _, norms = gradient_norms(trainer.critic, x, y=torch.full((64,), k))
        assert float(norms.max()) <= bound * (1 + 1e-6), k
