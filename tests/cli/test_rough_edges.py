"""The rough edges a newcomer and a hostile user hit (issue 38), each run as a user runs it: the
exit code, the one line naming what to change, and nothing written or lost."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import cli_args, invoke, parse_json
from PIL import Image
from torch import nn

from ganctl.config import TrainConfig
from ganctl.methods.resolve import resolve


def refused(result, *words: str, code: int = 2) -> str:
    """The one error line of a refused command, which must name every one of `words`."""
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert all(w in lines[0] for w in words), lines[0]
    return lines[0]


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GANCTL_CACHE", str(tmp_path / "cache"))


def grey_digits(path: Path, n: int = 60, classes: int = 3, side: int = 16) -> Path:
    """An .npz of n grey images and their labels: class k is a bright band at rows k * side / classes."""
    g = np.random.default_rng(0)
    x = (g.random((n, 1, side, side)) * 40).astype(np.uint8)
    y = np.arange(n) % classes
    for i, k in enumerate(y):
        x[i, 0, k * side // classes : (k + 1) * side // classes] += 200
    np.savez(path, x=x, y=y)
    return path


# --- user classifiers and weights (items 1 to 4) ---------------------------------------------
class NaNClassifier(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full((x.shape[0], 3), float("nan")) + x.flatten(1)[:, :1]


class WideClassifier(nn.Module):  # made for 16 x 16 x 3 inputs, given 16 x 16 grey ones
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(768, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1))


class NoFeatures(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(256, 3)

    @torch.jit.export
    def features(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)[:, :0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1))


@pytest.mark.parametrize(
    "module, words",
    [
        (NaNClassifier, ["NaN or infinite logits"]),
        (WideClassifier, ["fails on the data's samples", "(6, 1, 16, 16)", "mat1 and mat2 shapes"]),
        (NoFeatures, ["features() gives shape (6, 0)", "at least one feature"]),
    ],
)
def test_a_user_classifier_that_cannot_judge_the_data_is_one_line(tmp_path, module, words, recwarn):
    data = grey_digits(tmp_path / "digits.npz")
    path = tmp_path / "judge.pt"
    torch.jit.script(module()).save(str(path))
    recwarn.clear()
    r = invoke("eval", "--fake", data, "--data", data, "--classifier", path)
    refused(r, f"--classifier {path}", *words)
    assert not [w for w in recwarn if "torch.jit.load" in str(w.message)]  # torch's notice is not the user's


def test_weights_holding_a_nan_are_refused_when_read_from_the_flag_or_the_environment(tmp_path, monkeypatch):
    pytest.importorskip("timm")
    path = tmp_path / "dinov2.pth"
    torch.save({"cls_token": torch.zeros(1, 1, 8), "blocks.0.attn.qkv.weight": torch.full((24, 8), float("nan"))}, path)
    data = grey_digits(tmp_path / "digits.npz")
    refused(
        invoke("eval", "--fake", data, "--data", data, "--features", "dinov2", "--dinov2", path), f"--dinov2 {path}"
    )
    monkeypatch.setenv("GANCTL_DINOV2", str(path))
    line = refused(invoke("eval", "--fake", data, "--data", data, "--features", "dinov2"), "blocks.0.attn.qkv.weight")
    assert line.startswith(f"error: $GANCTL_DINOV2={path}: ") and "NaN" in line


def test_features_that_are_nan_or_empty_are_refused_before_any_score():
    from ganctl.errors import DataError
    from ganctl.quality import fidelity

    good = torch.randn(20, 4)
    for bad in (torch.full((20, 4), float("nan")), torch.zeros(20, 0)):
        with pytest.raises(DataError, match="generated samples' features"):
            fidelity.compute(good, bad, ("fid", "pr"))


def test_a_pickled_model_is_refused_without_torch_s_advice(tmp_path):
    path = tmp_path / "model.pth"
    torch.save(nn.Linear(2, 2), path)  # a whole pickled module, not a state dict
    line = refused(invoke("eval", "--fake", path, "--data", path, "--inception", path), f"--inception {path}")
    assert "weights_only" not in line and "state_dict()" in line


def _poisoned(path: Path) -> None:
    """A cache file ganctl wrote, whole and readable, with a NaN in its first tensor."""
    from safetensors.torch import load_file, safe_open, save_file

    with safe_open(str(path), "pt") as fh:
        meta = fh.metadata()
    state = load_file(str(path))
    poisoned = next(iter(state.values())).float().clone()
    poisoned.view(-1)[0] = float("nan")
    state[next(iter(state))] = poisoned
    save_file(state, str(path), metadata=meta)


@pytest.mark.parametrize("damage", ["truncated", "nan"])
def test_a_damaged_classifier_cache_is_trained_again(tmp_path, damage):
    points = tmp_path / "points.npy"  # the cache is the same for every data; 2-D trains it in 2 s
    np.save(points, np.random.default_rng(0).normal(size=(500, 2)).astype(np.float32))
    args = ["eval", "--fake", points, "--data", "8gaussians", "--classifier", "auto", "--n", 500, "--json"]
    first = invoke(*args)
    assert first.exit_code == 0, first.output
    (cached,) = (tmp_path / "cache").glob("classifier-*.safetensors")
    if damage == "truncated":
        cached.write_bytes(cached.read_bytes()[:300])
    else:
        _poisoned(cached)
    again = invoke(*args)
    assert again.exit_code == 0, again.output
    assert parse_json(again.stdout)["metrics"] == parse_json(first.stdout)["metrics"]  # the same judge, retrained
    assert cached.stat().st_size > 300  # and cached whole again


def test_real_features_cached_with_a_nan_are_computed_again(tmp_path):
    data = grey_digits(tmp_path / "digits.npz")
    args = ["eval", "--fake", data, "--data", data, "--metrics", "fid", "--json"]
    first = invoke(*args)
    assert first.exit_code == 0, first.output
    (cached,) = (tmp_path / "cache").glob("features-*.safetensors")
    _poisoned(cached)
    again = invoke(*args)
    assert again.exit_code == 0, again.output
    assert parse_json(again.stdout)["metrics"] == parse_json(first.stdout)["metrics"]


def test_a_one_class_folder_trains_no_judge(tmp_path):
    for i in range(6):
        (tmp_path / "only" / "a").mkdir(parents=True, exist_ok=True)
        Image.new("L", (16, 16), i * 40).save(tmp_path / "only" / "a" / f"{i}.png")
    folder = tmp_path / "only"
    refused(invoke("eval", "--fake", folder, "--data", folder, "--classifier", "auto"), "one class (a)", "at least two")
    assert not list((tmp_path / "cache").glob("classifier-*"))


# --- data and settings (items 5 to 7) --------------------------------------------------------
def test_stacked_with_nothing_after_the_colon_names_no_folder(tmp_path, monkeypatch):
    Image.new("L", (16, 16)).save(tmp_path / "stray.png")  # what the folder it starts in holds
    monkeypatch.chdir(tmp_path)
    refused(invoke("train", *cli_args(data="stacked:", steps=1), "--out", tmp_path / "run"), "stacked:FOLDER")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("policy", ["", "color,,", " , "])
def test_an_empty_augmentation_policy_is_refused(tmp_path, policy):
    data = grey_digits(tmp_path / "digits.npz")
    r = invoke("train", *cli_args(data=str(data), steps=1), "--augment", policy, "--out", tmp_path / "run")
    refused(r, "--augment", "empty")
    assert not (tmp_path / "run").exists()


def test_colour_samples_against_grey_data_are_refused_and_grey_ones_against_colour_noted(tmp_path):
    grey = grey_digits(tmp_path / "grey.npz")
    x = np.load(grey)["x"]
    np.save(tmp_path / "colour.npy", np.random.default_rng(1).integers(0, 255, (60, 3, 16, 16), dtype=np.uint8))
    refused(invoke("eval", "--fake", tmp_path / "colour.npy", "--data", grey), "in colour (RGB)", "are grey")
    np.save(tmp_path / "grey_as_rgb.npy", np.repeat(x, 3, axis=1))  # grey images saved as RGB lose nothing
    r = invoke("eval", "--fake", tmp_path / "grey_as_rgb.npy", "--data", grey, "--metrics", "fid", "--json")
    same = invoke("eval", "--fake", grey, "--data", grey, "--metrics", "fid", "--json")
    assert r.exit_code == 0 and "three channels are equal" in parse_json(r.stdout)["notes"][0]
    assert parse_json(r.stdout)["metrics"] == parse_json(same.stdout)["metrics"]
    r = invoke("eval", "--fake", grey, "--data", tmp_path / "colour.npy", "--metrics", "fid", "--json")
    assert r.exit_code == 0 and "grey images" in parse_json(r.stdout)["notes"][0] and "note: " in r.stderr


@pytest.mark.parametrize("layout", ["npy", "npz", "folder"])
def test_r3gan_takes_its_64_px_preset_from_64_px_data_given_no_image_size(tmp_path, layout):
    images = np.random.default_rng(0).integers(0, 255, (4, 64, 64, 3), dtype=np.uint8)
    if layout == "npy":
        data = tmp_path / "faces.npy"
        np.save(data, images)
    elif layout == "npz":
        data = tmp_path / "faces.npz"
        np.savez(data, images=images.transpose(0, 3, 1, 2), y=np.arange(4) % 2)
    else:
        data = tmp_path / "faces"
        data.mkdir()
        for i, image in enumerate(images):
            Image.fromarray(image).save(data / f"{i}.png")
    cfg = resolve(TrainConfig(data=str(data), lipschitz="r3gan"))
    ffhq64 = resolve(TrainConfig(data="shapes", image_size=64, lipschitz="r3gan"))
    assert (cfg.penalty_weight, cfg.batch_size, cfg.ema_kimg) == (2.0, 256, 500.0)
    assert {k: v for k, v in cfg.to_dict().items() if k not in ("data", "image_size")} == {
        k: v for k, v in ffhq64.to_dict().items() if k not in ("data", "image_size")
    }
    cifar = resolve(TrainConfig(data="shapes", lipschitz="r3gan"))  # 32 px: the CIFAR-10 preset
    assert (cifar.penalty_weight, cifar.batch_size, cifar.ema_kimg) == (0.05, 512, 5000.0)


# --- writing (item 8) and reading (item 9) ---------------------------------------------------
@pytest.fixture(scope="module")
def read_only(tmp_path_factory):
    """A read-only filesystem (a tmpfs mounted ro): refused to root as well."""
    mount = tmp_path_factory.mktemp("ro")
    if subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(mount)], capture_output=True
    ).returncode:
        pytest.skip("this machine cannot mount a read-only tmpfs")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny") / "run"
    assert invoke("train", *cli_args(steps=2, width=8, depth=1), "--out", out).exit_code == 0
    return out


@pytest.mark.parametrize(
    "args, flag, target",
    [
        (["train", *cli_args(steps=2), "--out", "{ro}/run"], "--out", "run"),
        (["sample", "{run}", "--out", "{ro}/x.png"], "--out", "x.png"),
        (["sample", "{run}", "--out", "{ro}/x.npy", "--n", "5000"], "--out", "x.npy"),
        (["compare", "--data", "8gaussians", "--methods", "gp", "--steps", "2", "--out", "{ro}/cmp"], "--out", "cmp"),
        (["gradnorm", "{run}/checkpoints/step-0000002.safetensors", "--png", "{ro}/h.png"], "--png", "h.png"),
        (["eval", "--data", "{data}", "--save-stats", "{ro}/s.npz"], "--save-stats", "s.npz"),
    ],
)
def test_an_unwritable_output_exits_74_naming_the_path_typed_before_any_work(
    read_only, tiny_run, tmp_path, args, flag, target, monkeypatch
):
    data = grey_digits(tmp_path / "digits.npz")
    words = [str(a).format(ro=read_only, run=tiny_run, data=data) for a in args]
    import ganctl.fleet.report as report_lib  # imported before the patch: its `analyse` must not keep it
    import ganctl.lipschitz.analysis as gradnorm_lib
    import ganctl.quality.scores as scores_lib

    def no_work(*a, **k):
        raise AssertionError("measured before the output was checked")

    monkeypatch.setattr(gradnorm_lib, "analyse", no_work)
    monkeypatch.setattr(report_lib, "analyse", no_work)
    monkeypatch.setattr(scores_lib, "real_features", no_work)
    line = refused(invoke(*words), f"{flag} {read_only / target}", "Read-only file system", code=74)
    assert ".tmp" not in line
    assert not list(read_only.iterdir())


def test_eval_names_the_unreadable_images_it_skipped(tmp_path):
    folder = tmp_path / "real"
    folder.mkdir()
    for i in range(8):
        Image.new("RGB", (16, 16), (i * 30, 0, 0)).save(folder / f"{i}.png")
    (folder / "broken.png").write_bytes(b"not a png")
    r = invoke("eval", "--fake", folder, "--data", folder, "--metrics", "fid", "--json")
    assert r.exit_code == 0, r.output
    assert any("broken.png" in w and w.startswith("--data") for w in parse_json(r.stdout)["warnings"])
    assert "warning: --data: skipped an unreadable image" in r.stderr


# --- messages, exit codes and what is shown (items 10, 12, 13, 15) ---------------------------
def on_a_terminal(*args: str, env: dict | None = None, cwd: Path | None = None) -> tuple[int, bytes]:
    """`ganctl ARGS` with stdout and stderr on a pseudo-terminal, as a user at a prompt sees it."""
    import os
    import pty
    import sys

    pid, fd = pty.fork()
    if pid == 0:  # the child: the terminal is its stdin, stdout and stderr; it never returns to pytest
        try:
            if cwd is not None:
                os.chdir(cwd)
            os.execve(sys.executable, [sys.executable, "-m", "ganctl", *args], {**os.environ, **(env or {})})
        finally:
            os._exit(127)
    shown = b""
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        shown += chunk
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), shown


def test_a_bad_setting_on_a_terminal_is_one_line_without_a_bar_and_no_color_means_no_style(tmp_path):
    args = ["train", "--data", "8gaussians", "--augment", "colr", "--steps", "1", "--out", str(tmp_path / "run")]
    code, shown = on_a_terminal(*args)
    assert code == 2 and b"\x1b[" in shown  # a terminal gets its colour
    text = shown.decode()
    assert "train" not in text.split("error:")[0] and "0/?" not in text and text.count("\n") == 1
    code, shown = on_a_terminal(*args, env={"NO_COLOR": "1"})
    assert code == 2 and b"\x1b[" not in shown and shown.decode().startswith("error: --augment 'colr'")
    assert not (tmp_path / "run").exists()


def test_json_says_why_training_stopped_on_a_nan(tmp_path, monkeypatch):
    from ganctl.errors import NonFinite
    from ganctl.training.engine import Trainer

    step = Trainer.train_step

    def nan_at_3(self):
        if self.step == 2:
            raise NonFinite(3, "critic loss")
        step(self)

    monkeypatch.setattr(Trainer, "train_step", nan_at_3)
    r = invoke("train", *cli_args(steps=10, ckpt_every=1), "--on-nonfinite", "stop", "--out", tmp_path / "r", "--json")
    assert r.exit_code == 1
    report = parse_json(r.stdout)
    assert report["completed"] is False and report["stopped"] == "nonfinite" and report["exit_code"] == 1
    assert (report["step"], report["quantity"], report["on_nonfinite"]) == (3, "critic loss", "stop")
    assert report["last_good"] == str(tmp_path / "r" / "checkpoints" / "step-0000002.safetensors")
    assert report["error"] in r.stderr  # the same line a person reads


def test_eval_gradnorm_and_sample_take_threads_and_give_them_back(tiny_run, tmp_path, monkeypatch):
    import ganctl.quality.evaluate as evaluation

    seen, real_evaluate = [], evaluation.evaluate_checkpoint

    def counting(*a, **k):
        seen.append(torch.get_num_threads())
        return real_evaluate(*a, **k)

    monkeypatch.setattr(evaluation, "evaluate_checkpoint", counting)
    before = torch.get_num_threads()
    assert invoke("eval", tiny_run, "--n", 200, "--threads", 1).exit_code == 0
    assert seen == [1] and torch.get_num_threads() == before
    assert invoke("gradnorm", tiny_run, "--n", 64, "--threads", 1).exit_code == 0
    assert invoke("sample", tiny_run, "--out", tmp_path / "x.npy", "--threads", 1).exit_code == 0
    refused(invoke("eval", tiny_run, "--threads", -1), "--threads -1")


def test_an_image_run_s_last_line_gives_its_image_metrics_and_ada_s_p(tmp_path):
    args = cli_args(data="shapes", image_size=16, width=4, z_dim=8, batch_size=8, steps=4, n_critic=1, log_every=1)
    r = invoke(
        "train",
        *args,
        "--eval-samples",
        32,
        "--eval-metrics",
        "fid,pr",
        "--augment",
        "color",
        "--ada-target",
        "0.6",
        "--out",
        tmp_path / "run",
    )
    assert r.exit_code == 0, r.output
    done = next(line for line in r.stderr.splitlines() if line.startswith("done:"))
    assert "fid[random-conv]" in done and "precision[random-conv]" in done and "augmentation p" in done
    assert any(line.startswith("step 4/4") and " p=" in line for line in r.stderr.splitlines())


def _steep(checkpoint: Path, out: Path, scale: float, **config) -> Path:
    """A copy of a 2-D checkpoint with its critic's last layer `scale` times steeper."""
    import json

    from safetensors.torch import load_file, safe_open, save_file

    with safe_open(str(checkpoint), "pt") as fh:
        meta = dict(fh.metadata())
    state = load_file(str(checkpoint))
    last = max(
        (k for k in state if k.startswith("critic.") and k.endswith(".weight")), key=lambda k: int(k.split(".")[1])
    )
    state[last] = state[last] * scale
    meta["config"] = json.dumps({**json.loads(meta["config"]), **config})
    save_file(state, str(out), metadata=meta)
    return out


def test_a_weak_penalty_s_verdict_says_what_its_lambda_buys(tiny_run, tmp_path):
    newest = sorted((tiny_run / "checkpoints").iterdir())[-1]
    weak = _steep(newest, tmp_path / "weak.safetensors", 100.0)  # the 2-D default: lambda 0.1
    strong = _steep(newest, tmp_path / "strong.safetensors", 100.0, penalty_weight=10.0)
    verdicts = {}
    for path in (weak, strong):
        r = invoke("gradnorm", path, "--n", 256, "--json")
        assert r.exit_code == 0, r.output
        verdicts[path.stem] = parse_json(r.stdout)["verdict"]
    assert verdicts["weak"]["status"] in ("violating", "exploding") and "--lambda 10" in verdicts["weak"]["note"]
    assert verdicts["strong"]["status"] == verdicts["weak"]["status"] and verdicts["strong"]["note"] is None
    shown = invoke("gradnorm", weak, "--n", 256)
    assert "note: this critic was trained with lambda 0.1" in shown.stderr


# --- silent waits and memory (items 11 and 17) -----------------------------------------------
def test_every_phase_of_eval_and_gradnorm_is_reported_from_start_to_end(tmp_path, tiny_run, monkeypatch):
    from ganctl import progress
    from ganctl.quality import classifier, scores
    from ganctl.quality import evaluate as evaluation

    data = grey_digits(tmp_path / "digits.npz", n=90)
    heard: dict[str, list[tuple[int, int]]] = {}
    chunks: list[int] = []
    real_add = classifier.Verdicts.add

    def add(self, x):
        chunks.append(len(x))
        real_add(self, x)

    monkeypatch.setattr(classifier.Verdicts, "add", add)
    # The phases are what is checked, not the classifier's accuracy: a short training reports them all.
    monkeypatch.setattr(classifier, "MIN_STEPS", 20)
    monkeypatch.setattr(classifier, "DETECTOR_STEPS", 20)
    spaces = scores.choose_spaces("auto", None, None, "cpu")
    request = evaluation.Request(("fid", "kid", "pr", "dc"), spaces, 1200, classifier="auto")
    with progress.listening(lambda what, done, total: heard.setdefault(what, []).append((done, total))):
        evaluation.evaluate_files(data, str(data), request)
        r = invoke("gradnorm", tiny_run, "--n", 64)  # the command listens itself: nothing reaches this listener
    assert r.exit_code == 0
    for phase in (
        "generated samples",
        "real images through random-conv",
        "training the classifier",
        "FID",
        "KID's subsets",
        "real samples' nearest neighbours",
        "generated samples' nearest neighbours",
        "distances between real and generated samples",
    ):
        assert phase in heard, sorted(heard)
    for what, reports in heard.items():  # each run of a phase (FID runs once a feature space) starts and ends
        assert reports[0][0] == 0 and reports[-1][0] == reports[-1][1], what
        steps = zip(reports, reports[1:])
        assert all(b[0] >= a[0] or (b[0] == 0 and a[0] == a[1]) for a, b in steps), what
    assert chunks and max(chunks) <= scores.CHUNK  # the classifier reads the samples a chunk at a time


def test_gradnorm_reports_its_sets_and_a_trajectory_its_checkpoints(tiny_run):
    from ganctl import progress
    from ganctl.lipschitz.analysis import Measure, trajectory

    heard = []
    with progress.listening(lambda what, done, total: heard.append((what, done, total))):
        trajectory(tiny_run, Measure(n=64))
    phases = {what for what, _, _ in heard}
    assert any(p.startswith("gradient norms at 64 points") for p in phases)
    assert any(p.startswith("checkpoints of") for p in phases)
    assert any(p.startswith("an exact optimal pairing") for p in phases)


def test_json_says_a_run_stopped_on_a_failed_write(tmp_path, monkeypatch):
    import errno
    import os

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("ganctl.nets.checkpoint.save_file", full)
    r = invoke("train", *cli_args(steps=4, ckpt_every=2), "--out", tmp_path / "r", "--json")
    assert r.exit_code == 74
    report = parse_json(r.stdout)
    assert (report["completed"], report["stopped"], report["exit_code"]) == (False, "write_failed", 74)
    assert report["last_good"] is None and report["error"] in r.stderr


def test_compare_says_what_a_weak_penalty_s_verdict_means_per_method(tmp_path):
    from ganctl.fleet.compare import side_by_side
    from ganctl.fleet.report import Evaluated

    def row(method, seed, note=None):
        found = {"method": method, "seed": seed, "data": "8gaussians", "run": f"{method}{seed}", "w1": 0.1 * seed}
        return Evaluated({**found, **({"verdict_note": note} if note else {})})

    result = side_by_side([row("gp", 0, "lambda 0.1"), row("gp", 1, "lambda 0.1"), row("sn", 0)], None, None, 0.0)
    assert result["verdict_notes"] == {"gp": "lambda 0.1"}
    assert all("verdict_note" not in r for r in result["runs"])  # a sentence is no column of the table
