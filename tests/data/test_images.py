"""Image data sources: the shapes set and its judge, folders of image files, arrays."""

import numpy as np
import pytest
import torch
from PIL import Image

from ganctl.config import TrainConfig
from ganctl.data import folders, load_dataset
from ganctl.data.shapes import KINDS, PALETTE, ShapesSet
from ganctl.errors import DataError


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GANCTL_CACHE", str(tmp_path / "cache"))


@pytest.mark.parametrize("size", [16, 32, 64])
def test_judge_recognises_every_mode_of_its_own_images(size):
    shapes = ShapesSet(size)
    n = 40  # per mode, at random positions and sizes
    kinds = torch.arange(len(KINDS)).repeat_interleave(len(PALETTE) * n)
    colours = torch.arange(len(PALETTE)).repeat_interleave(n).repeat(len(KINDS))
    g = torch.Generator().manual_seed(1)
    lo, hi = 0.4, 0.7
    u = torch.rand(len(kinds), 3, generator=g)
    side = (lo + (hi - lo) * u[:, 0]) * size
    left, top = 1 + u[:, 1] * (size - 2 - side), 1 + u[:, 2] * (size - 2 - side)
    images = shapes.render(kinds, colours, left, top, side)
    assert images.shape == (len(kinds), 3, size, size) and images.min() == -1 and images.max() <= 1
    assert torch.equal(shapes.judge(images), kinds * len(PALETTE) + colours)


def test_judge_calls_noise_blank_and_two_shapes_invalid():
    shapes = ShapesSet(32)
    g = torch.Generator().manual_seed(0)
    noise = torch.rand(200, 3, 32, 32, generator=g) * 2 - 1
    blank = -torch.ones(5, 3, 32, 32)
    grey = torch.zeros(5, 3, 32, 32)  # mid grey everywhere
    two = torch.maximum(
        shapes.render(
            torch.tensor([0]), torch.tensor([0]), torch.tensor([1.0]), torch.tensor([1.0]), torch.tensor([12.0])
        ),
        shapes.render(
            torch.tensor([1]), torch.tensor([0]), torch.tensor([18.0]), torch.tensor([18.0]), torch.tensor([12.0])
        ),
    )
    for images in (noise, blank, grey, two):
        assert (shapes.judge(images) == -1).all()


def test_judge_rejects_an_off_palette_colour():
    shapes = ShapesSet(32)
    image = shapes.render(
        torch.tensor([1]), torch.tensor([0]), torch.tensor([8.0]), torch.tensor([8.0]), torch.tensor([16.0])
    )
    assert shapes.judge(image).item() == len(PALETTE)  # red square
    purple = torch.where(image > -1, torch.tensor([0.2, -1.0, 0.9]).view(1, 3, 1, 1), image)
    assert shapes.judge(purple).item() == -1


def test_shapes_quality_on_real_data_is_perfect():
    shapes = ShapesSet(32)
    q = shapes.judge.quality(shapes.sample(2000, torch.Generator().manual_seed(0), "cpu"))
    assert q == {"valid_share": 1.0, "modes": 20, "modes_hit": 20, "modes_total": 20}


def test_shapes_refuses_small_or_grayscale():
    with pytest.raises(DataError, match="at least 16"):
        load_dataset(TrainConfig(data="shapes", image_size=8))
    with pytest.raises(DataError, match="--channels 3"):
        load_dataset(TrainConfig(data="shapes", channels=1))


def _write_folder(root):
    root.mkdir()
    (root / "sub").mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)).save(root / "a.png")
    Image.fromarray(rng.integers(0, 255, (90, 50), dtype=np.uint8)).save(root / "sub" / "b.jpg")  # grayscale
    Image.fromarray(rng.integers(0, 255, (33, 33, 4), dtype=np.uint8)).save(root / "sub" / "c.webp")  # RGBA
    Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(root / "d.bmp")
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (root / "empty.jpg").write_bytes(b"")
    (root / "notes.txt").write_text("not an image")


def test_folder_decodes_mixed_sizes_and_modes_and_names_bad_files(tmp_path):
    root = tmp_path / "imgs"
    _write_folder(root)
    data = load_dataset(TrainConfig(data=str(root), image_size=16))
    assert data.images.shape == (4, 3, 16, 16) and data.images.dtype == torch.uint8
    assert sorted(s.split(" (")[0].rsplit("/", 1)[-1] for s in data.skipped) == ["broken.png", "empty.jpg"]
    gray = load_dataset(TrainConfig(data=str(root), image_size=8, channels=1))
    assert gray.images.shape == (4, 1, 8, 8)
    batch = data.sample(10, torch.Generator().manual_seed(0), "cpu")
    assert batch.shape == (10, 3, 16, 16) and batch.min() >= -1 and batch.max() <= 1


def test_a_folder_keeps_the_size_its_images_share(tmp_path):
    root = tmp_path / "same"
    root.mkdir()
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 255, (3, 24, 24, 3), dtype=np.uint8)
    for i, p in enumerate(pixels):
        Image.fromarray(p).save(root / f"{i}.png")
    data = load_dataset(TrainConfig(data=str(root)))
    assert data.shape == (3, 24, 24) and data.native_size == (24, 24) and not data.resampled
    assert torch.equal(data.images, torch.from_numpy(pixels).permute(0, 3, 1, 2))  # not a pixel changed
    resized = load_dataset(TrainConfig(data=str(root), image_size=16))
    assert resized.shape == (3, 16, 16) and resized.resampled and resized.native_size == (24, 24)
    mixed = tmp_path / "imgs"
    _write_folder(mixed)
    with pytest.raises(
        DataError, match=r"the images differ in size \(.* is .* x .*, .* is .* x .*\); give --image-size"
    ):
        load_dataset(TrainConfig(data=str(mixed)))
    wide = tmp_path / "wide"
    wide.mkdir()
    Image.fromarray(np.zeros((10, 30, 3), dtype=np.uint8)).save(wide / "strip.png")
    with pytest.raises(DataError, match="are 30 x 10, not square; give --image-size"):
        load_dataset(TrainConfig(data=str(wide)))


def test_folder_resize_and_centre_crop_match_pillow(tmp_path):
    root = tmp_path / "one"
    root.mkdir()
    # Left third red, middle green, right third blue: a centre crop of a 3:1 image keeps green.
    strip = np.zeros((10, 30, 3), dtype=np.uint8)
    strip[:, :10, 0] = strip[:, 10:20, 1] = strip[:, 20:, 2] = 255
    Image.fromarray(strip).save(root / "strip.png")
    data = load_dataset(TrainConfig(data=str(root), image_size=10))
    img = data.images[0].float()
    assert img[1].mean() > 250 and img[0].mean() < 5 and img[2].mean() < 5


def test_second_load_reads_the_cache_and_a_changed_file_invalidates_it(tmp_path, monkeypatch):
    root = tmp_path / "imgs"
    _write_folder(root)
    first = load_dataset(TrainConfig(data=str(root), image_size=16))
    assert first.cache and (tmp_path / "cache").exists()

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again")

    monkeypatch.setattr(folders, "_decode", no_decoding)
    second = load_dataset(TrainConfig(data=str(root), image_size=16))
    assert torch.equal(first.images, second.images) and second.skipped == first.skipped
    Image.fromarray(np.zeros((16, 16, 3), dtype=np.uint8)).save(root / "new.png")
    with pytest.raises(AssertionError, match="decoded again"):
        load_dataset(TrainConfig(data=str(root), image_size=16))


def test_empty_or_missing_folder_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images found"):
        load_dataset(TrainConfig(data=str(tmp_path / "empty")))
    with pytest.raises(DataError, match="no such folder or file"):
        load_dataset(TrainConfig(data=str(tmp_path / "missing")))
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.png").write_bytes(b"junk")
    with pytest.raises(DataError, match="none of its 1 image files could be read.*x.png"):
        load_dataset(TrainConfig(data=str(bad)))


def test_arrays_npz_npy_uint8_and_float(tmp_path):
    rng = np.random.default_rng(0)
    u8 = rng.integers(0, 256, (7, 12, 12, 3), dtype=np.uint8)
    np.savez(tmp_path / "a.npz", images=u8, labels=np.arange(7))
    data = load_dataset(TrainConfig(data=str(tmp_path / "a.npz")))
    assert torch.equal(data.images, torch.from_numpy(u8).permute(0, 3, 1, 2))
    np.save(tmp_path / "f.npy", u8[..., 0].astype(np.float32) / 255.0)  # (N, H, W) in [0, 1]
    gray = load_dataset(TrainConfig(data=str(tmp_path / "f.npy")))
    assert gray.images.shape == (7, 1, 12, 12)
    assert torch.equal(gray.images[:, 0], torch.from_numpy(u8[..., 0]))
    np.save(tmp_path / "s.npy", u8.astype(np.float32) / 127.5 - 1.0)  # [-1, 1]
    resized = load_dataset(TrainConfig(data=str(tmp_path / "s.npy"), image_size=6))
    assert resized.images.shape == (7, 3, 6, 6)


@pytest.mark.parametrize(
    "array, message",
    [
        (np.zeros((4, 8), dtype=np.uint8), "expected images of shape"),
        (np.zeros((4, 8, 8, 2), dtype=np.uint8), "expected images of shape"),
        (np.full((2, 8, 8), 3.0, dtype=np.float32), r"must lie in \[0, 1\] or \[-1, 1\]"),
        (np.zeros((2, 8, 8), dtype=np.int32), "uint8 or float"),
        (np.zeros((2, 8, 6), dtype=np.uint8), "give --image-size"),
    ],
)
def test_bad_arrays_are_named(tmp_path, array, message):
    path = tmp_path / "bad.npy"
    np.save(path, array)
    with pytest.raises(DataError, match=message) as info:
        load_dataset(TrainConfig(data=str(path)))
    assert "bad.npy" in str(info.value)


def test_object_arrays_are_never_unpickled(tmp_path):
    path = tmp_path / "obj.npy"
    np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="obj.npy"):
        load_dataset(TrainConfig(data=str(path)))


def test_flips_are_seeded_and_mirror_images(tmp_path):
    arr = np.zeros((1, 4, 4), dtype=np.uint8)
    arr[0, :, 0] = 255  # a bright left column
    np.save(tmp_path / "a.npy", arr)
    data = load_dataset(TrainConfig(data=str(tmp_path / "a.npy"), hflip=True))
    batch = data.sample(64, torch.Generator().manual_seed(0), "cpu")
    left, right = batch[:, 0, :, 0].mean(1), batch[:, 0, :, -1].mean(1)
    assert ((left == 1) ^ (right == 1)).all() and 10 < (right == 1).sum() < 54
    again = data.sample(64, torch.Generator().manual_seed(0), "cpu")
    assert torch.equal(batch, again)


def test_decoding_a_folder_reports_each_file_and_the_cache_does_not(tmp_path, monkeypatch):
    from ganctl import progress
    from ganctl.data.folders import load_folder

    monkeypatch.setenv("GANCTL_CACHE", str(tmp_path / "cache"))
    for i in range(5):
        Image.new("L", (8, 8), i * 40).save(tmp_path / f"{i}.png")
    heard = []
    with progress.listening(lambda what, done, total: heard.append((what, done, total))):
        load_folder(tmp_path, None, None)
        decoded = list(heard)
        load_folder(tmp_path, None, None)  # from the cache: nothing to decode
    assert [d for _, d, _ in decoded] == [0, 1, 2, 3, 4, 5] and decoded[0][0].startswith("decoding the images of")
    assert heard == decoded
