"""CIFAR-10 as distributed: the python (pickled) and binary versions, as folders and as
archives, both splits, labels and class names kept, and a hostile pickle refused without
running anything. The archives are small ones written here in the real layouts."""

from __future__ import annotations

import os
import pickle
import tarfile

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import ganctl
from ganctl.cli import app
from ganctl.config import TrainConfig
from ganctl.data import load_dataset
from ganctl.errors import DataError

NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
PER_BATCH, TEST = 4, 3


def _batches(seed: int = 0) -> dict[str, tuple[np.ndarray, list[int]]]:
    rng = np.random.default_rng(seed)
    out = {}
    for name, n in [*((f"data_batch_{i}", PER_BATCH) for i in range(1, 6)), ("test_batch", TEST)]:
        out[name] = (rng.integers(0, 256, (n, 3072), dtype=np.uint8), [int(v) for v in rng.integers(0, 10, n)])
    return out


def write_python(root, protocol: int = 2):
    """The layout of cifar-10-python.tar.gz: dicts with bytes keys, as Python 2's cPickle wrote them."""
    root.mkdir(parents=True)
    batches = _batches()
    meta = {b"num_cases_per_batch": PER_BATCH, b"label_names": [n.encode() for n in NAMES], b"num_vis": 3072}
    (root / "batches.meta").write_bytes(pickle.dumps(meta, protocol=protocol))
    for name, (data, labels) in batches.items():
        batch = {b"batch_label": name.encode(), b"labels": labels, b"data": data, b"filenames": [b"x.png"] * len(data)}
        (root / name).write_bytes(pickle.dumps(batch, protocol=protocol))
    return batches


def write_binary(root):
    """The layout of cifar-10-binary.tar.gz: one label byte and 3,072 pixel bytes per image."""
    root.mkdir(parents=True)
    batches = _batches()
    (root / "batches.meta.txt").write_text("\n".join(NAMES) + "\n\n")
    for name, (data, labels) in batches.items():
        records = np.concatenate([np.array(labels, dtype=np.uint8)[:, None], data], axis=1)
        (root / f"{name}.bin").write_bytes(records.tobytes())
    return batches


def archive(folder, path):
    with tarfile.open(path, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    return path


def expected(batches, split):
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    pixels = np.concatenate([batches[n][0] for n in names]).reshape(-1, 3, 32, 32)
    return torch.from_numpy(pixels), torch.tensor([v for n in names for v in batches[n][1]])


@pytest.mark.parametrize("layout", ["py", "bin"])
@pytest.mark.parametrize("packed", [False, True])
def test_both_layouts_read_in_place_with_labels(tmp_path, layout, packed):
    folder = tmp_path / f"cifar-10-batches-{layout}"
    batches = write_python(folder) if layout == "py" else write_binary(folder)
    where = archive(folder, tmp_path / f"cifar-10-{layout}.tar.gz") if packed else folder
    for split in ("train", "test"):
        data = load_dataset(TrainConfig(data=str(where), split=split))
        pixels, labels = expected(batches, split)
        assert torch.equal(data.images, pixels) and torch.equal(data.targets, labels)
        assert data.classes.names == tuple(NAMES) and data.classes.count == 10
        assert data.native_size == (32, 32) and not data.resampled and data.shape == (3, 32, 32)
    assert len(load_dataset(TrainConfig(data=str(where)))) == 5 * PER_BATCH  # train by default


def test_the_red_plane_comes_first_as_the_format_says(tmp_path):
    batches = write_python(tmp_path / "cifar-10-batches-py")
    data = load_dataset(TrainConfig(data=str(tmp_path / "cifar-10-batches-py")))
    first = batches["data_batch_1"][0][0]
    assert torch.equal(data.images[0, 0], torch.from_numpy(first[:1024].reshape(32, 32)))
    assert torch.equal(data.images[0, 2], torch.from_numpy(first[2048:].reshape(32, 32)))


def test_torchvision_s_root_and_newer_pickles_read_too(tmp_path):
    batches = write_python(tmp_path / "root" / "cifar-10-batches-py", protocol=4)
    data = load_dataset(TrainConfig(data=str(tmp_path / "root"), split="test"))
    assert torch.equal(data.images, expected(batches, "test")[0])


def test_resizing_is_recorded(tmp_path):
    write_binary(tmp_path / "cifar-10-batches-bin")
    data = load_dataset(TrainConfig(data=str(tmp_path / "cifar-10-batches-bin"), image_size=16, channels=1))
    assert data.shape == (1, 16, 16) and data.resampled and data.native_size == (32, 32)


class Hostile:
    """A pickle that would run a shell command when loaded."""

    def __init__(self, mark):
        self.mark = mark

    def __reduce__(self):
        return (os.system, (f"touch {self.mark}",))


def test_a_hostile_pickle_is_refused_and_nothing_runs(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    write_python(folder)
    mark = tmp_path / "ran"
    (folder / "data_batch_3").write_bytes(pickle.dumps({b"data": Hostile(mark)}, protocol=2))
    with pytest.raises(DataError, match="data_batch_3: not a CIFAR-10 batch .*asks for (posix|os).system"):
        load_dataset(TrainConfig(data=str(folder)))
    r = CliRunner().invoke(app, ["train", "--data", str(folder), "--steps", "1", "--out", str(tmp_path / "run")])
    assert r.exit_code == 2 and "data_batch_3" in r.stderr and r.stderr.count("\n") == 1
    assert "Traceback" not in r.output and not mark.exists() and not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize(
    "batch, message",
    [
        ({b"data": np.zeros((4, 3072), dtype=np.float32), b"labels": [0] * 4}, "dtype 'f4'|dtype '<f4'|float32"),
        ({b"data": np.zeros((4, 100), dtype=np.uint8), b"labels": [0] * 4}, "3072 values per image"),
        ({b"data": np.zeros((4, 3072), dtype=np.uint8), b"labels": [0, 1]}, "one label per image"),
        ({b"data": np.zeros((4, 3072), dtype=np.uint8), b"labels": [0, 1, 2, 12]}, "label 12 is outside"),
    ],
)
def test_a_malformed_batch_is_one_clear_error(tmp_path, batch, message):
    folder = tmp_path / "cifar-10-batches-py"
    write_python(folder)
    (folder / "data_batch_2").write_bytes(pickle.dumps(batch, protocol=2))
    with pytest.raises(DataError, match=message):
        load_dataset(TrainConfig(data=str(folder)))


def test_a_run_trains_at_cifar_s_own_32_px(tmp_path):
    write_binary(tmp_path / "cifar-10-batches-bin")
    cfg = TrainConfig(data=str(tmp_path / "cifar-10-batches-bin"), width=4, z_dim=8, steps=1, eval_every=0)
    summary = ganctl.train(cfg.replace(sample_every=0, device="cpu", batch_size=4, n_critic=1), tmp_path / "run")
    assert summary.config["image_size"] == 32 and summary.config["split"] == "train"
    r = CliRunner().invoke(app, ["train", "--data", "shapes", "--split", "test", "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "--split test: --data shapes has no splits" in r.stderr
