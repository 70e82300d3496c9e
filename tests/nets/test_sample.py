"""`ganctl sample` through CliRunner: every output format, interpolation, 2-D checkpoints."""

import json

import numpy as np
import pytest
import torch
from conftest import small
from PIL import Image
from safetensors import safe_open
from typer.testing import CliRunner

import ganctl
from ganctl.cli import app
from ganctl.nets.sampling import slerp

runner = CliRunner()


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("img") / "run"
    ganctl.train(small(data="shapes", width=4, z_dim=8, batch_size=8, steps=2, n_critic=1, eval_samples=16), out)
    return out


@pytest.fixture(scope="module")
def point_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("pts") / "run"
    ganctl.train(small(steps=2), out)
    return out


def sample(*args):
    return runner.invoke(app, ["sample", *map(str, args)])


def test_png_grid_npy_and_safetensors_agree(image_run, tmp_path):
    r = sample(image_run, "--out", tmp_path / "g.png", "--n", "6", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["shape"] == [6, 3, 32, 32]
    assert Image.open(tmp_path / "g.png").size == (3 * 34 + 2, 2 * 34 + 2)
    assert sample(image_run, "--out", tmp_path / "x.npy", "--n", "6").exit_code == 0
    assert sample(image_run, "--out", tmp_path / "x.safetensors", "--n", "6").exit_code == 0
    arr = np.load(tmp_path / "x.npy")
    with safe_open(str(tmp_path / "x.safetensors"), "pt") as f:
        tensor, meta = f.get_tensor("samples"), f.metadata()
    assert arr.shape == (6, 3, 32, 32) and arr.dtype == np.float32 and np.abs(arr).max() <= 1
    assert np.array_equal(arr, tensor.numpy()) and json.loads(meta["step"]) == 2
    # The same seed and generator give the same samples as the library.
    ck = ganctl.load(image_run)
    rng = torch.Generator().manual_seed(0)
    assert np.allclose(arr, ck.sample(6, rng).numpy(), atol=1e-6)


def test_raw_differs_from_ema_and_seed_changes_samples(image_run, tmp_path):
    for name, extra in (("ema", []), ("raw", ["--raw"]), ("seed", ["--seed", "5"])):
        assert sample(image_run, "--out", tmp_path / f"{name}.npy", "--n", "4", *extra).exit_code == 0
    ema, raw, seed = (np.load(tmp_path / f"{n}.npy") for n in ("ema", "raw", "seed"))
    assert not np.allclose(ema, raw) and not np.allclose(ema, seed)


def test_folder_of_pngs(image_run, tmp_path):
    r = sample(image_run, "--out", tmp_path / "imgs", "--n", "3")
    assert r.exit_code == 0, r.output
    files = sorted(p.name for p in (tmp_path / "imgs").iterdir())
    assert files == ["sample-00000.png", "sample-00001.png", "sample-00002.png"]
    assert Image.open(tmp_path / "imgs" / files[0]).size == (32, 32)


def test_interpolation_strips_start_and_end_at_their_latents(image_run, tmp_path):
    r = sample(image_run, "--out", tmp_path / "s.npy", "--n", "2", "--interpolate", "5")
    assert r.exit_code == 0, r.output
    strips = np.load(tmp_path / "s.npy")
    assert strips.shape == (2, 5, 3, 32, 32)
    assert sample(image_run, "--out", tmp_path / "s.png", "--n", "2", "--interpolate", "5").exit_code == 0
    assert Image.open(tmp_path / "s.png").size == (5 * 34 + 2, 2 * 34 + 2)


def test_slerp_keeps_endpoints_and_norm_between_equal_norm_latents():
    a, b = torch.tensor([[3.0, 0.0]]), torch.tensor([[0.0, 3.0]])
    path = slerp(a, b, torch.linspace(0, 1, 5))
    assert torch.allclose(path[0, 0], a[0]) and torch.allclose(path[0, -1], b[0], atol=1e-6)
    assert torch.allclose(path.norm(dim=-1), torch.full((1, 5), 3.0))
    same = slerp(a, a, torch.linspace(0, 1, 3))  # parallel latents: no division by zero
    assert torch.allclose(same, a.expand(1, 3, 2))


def test_two_d_checkpoints_give_a_scatter_or_points(point_run, tmp_path):
    assert sample(point_run, "--out", tmp_path / "p.png", "--n", "300").exit_code == 0
    assert Image.open(tmp_path / "p.png").mode == "RGB"
    assert sample(point_run, "--out", tmp_path / "p.npy", "--n", "300").exit_code == 0
    assert np.load(tmp_path / "p.npy").shape == (300, 2)
    r = sample(point_run, "--out", tmp_path / "dir", "--n", "3")
    assert r.exit_code == 2 and "2-D points go to a .png scatter or a .npy" in r.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--out", "x.gif"], "cannot tell the format from '.gif'"),
        (["--out", "x.png", "--format", "jpeg"], "--format 'jpeg' is not one of"),
        (["--out", "x.png", "--n", "0"], "--n must be > 0"),
        (["--out", "x.png", "--interpolate", "1"], "--interpolate must be 0"),
    ],
)
def test_bad_options_exit_2(image_run, tmp_path, args, message):
    args = [str(tmp_path / a) if a.startswith("x.") else a for a in args]
    r = sample(image_run, *args)
    assert r.exit_code == 2 and message in r.stderr and "Traceback" not in r.output


def test_existing_output_is_kept_unless_overwrite(image_run, tmp_path):
    target = tmp_path / "keep.npy"
    target.write_bytes(b"precious")
    r = sample(image_run, "--out", target, "--n", "2")
    assert r.exit_code == 2 and "already exists" in r.stderr and target.read_bytes() == b"precious"
    assert sample(image_run, "--out", target, "--n", "2", "--overwrite").exit_code == 0
    assert np.load(target).shape == (2, 3, 32, 32)


def test_missing_checkpoint_exits_2(tmp_path):
    r = sample(tmp_path / "nothing", "--out", tmp_path / "a.png")
    assert r.exit_code == 2 and "nothing" in r.stderr


def test_ganctl_sample_is_the_command_as_one_library_call(tmp_path):
    """`ganctl.sample` draws what `ganctl sample` writes: in memory without `out`, and the same
    numbers written to a file with it."""
    import numpy as np
    from conftest import invoke

    import ganctl

    ganctl.train(small(steps=2), tmp_path / "run")
    drawn = ganctl.sample(tmp_path / "run", n=300, seed=5)
    assert drawn.samples.shape == drawn.shape == (300, 2) and drawn.files == []
    written = ganctl.sample(tmp_path / "run", n=300, seed=5, out=tmp_path / "x.npy")
    assert written.samples is None and written.files == [tmp_path / "x.npy"]  # streamed, never held
    assert np.array_equal(np.load(tmp_path / "x.npy"), drawn.samples.numpy())
    r = invoke("sample", tmp_path / "run", "--n", 300, "--seed", 5, "--out", tmp_path / "y.npy")
    assert r.exit_code == 0 and np.array_equal(np.load(tmp_path / "y.npy"), drawn.samples.numpy())
