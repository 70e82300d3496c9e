"""Bad input as a hostile user types it: every case one line on stderr naming the flag, file or
value, exit 2 (1 for a broken threshold), no traceback, and nothing written or lost."""

from __future__ import annotations

import io
import json
import resource

import numpy as np
import pytest
import torch
from conftest import cli_args, invoke, parse_json
from PIL import Image
from safetensors.torch import load_file, safe_open, save_file

ONE_LINE = 1  # lines a refusal prints on stderr


def refused(result, *words: str, code: int = 2) -> str:
    """The one error line of a refused command, which must name every one of `words`."""
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output and result.stderr.count("\n") == ONE_LINE, result.stderr
    line = result.stderr.strip()
    assert line.startswith("error:") and all(w in line for w in words), line
    return line


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A tiny 2-D run and a tiny image run (shapes at 16 px)."""
    root = tmp_path_factory.mktemp("runs")
    assert invoke("train", *cli_args(steps=2, width=8, depth=1), "--out", root / "points").exit_code == 0
    image = cli_args(data="shapes", image_size=16, width=4, z_dim=8, batch_size=8, steps=1, n_critic=1)
    r = invoke("train", *image, "--eval-samples", 16, "--eval-metrics", "none", "--out", root / "images")
    assert r.exit_code == 0, r.output
    return root


def _edited(src, dst, config=None, tensors=None):
    """A copy of checkpoint `src` with its config or tensors changed, as a hostile user would."""
    with safe_open(str(src), "pt") as fh:
        meta = dict(fh.metadata())
    state = load_file(str(src))
    if config:
        meta["config"] = json.dumps({**json.loads(meta["config"]), **config})
    state.update(tensors or {})
    save_file(state, str(dst), metadata=meta)
    return dst


def _ckpt(run):
    return sorted((run / "checkpoints").iterdir())[-1]


# --- memory: refused from the shapes, before anything is allocated ----------------------------
@pytest.mark.parametrize(
    "flag, value",
    [("--batch-size", 100_000_000), ("--width", 1_000_000), ("--eval-samples", 1_000_000_000)],
)
def test_a_run_that_cannot_fit_is_refused_naming_its_flag_and_writes_nothing(tmp_path, flag, value):
    r = invoke("train", *cli_args(steps=1), flag, value, "--out", tmp_path / "run")
    refused(r, f"{flag} {value}", "of memory", "free")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "command, run, out, words",
    [
        ("sample", "points", "x.npy", ["of disk"]),  # written chunk by chunk: the disk is what must hold it
        ("sample", "images", "xdir", ["of disk"]),
        ("sample", "points", "x.safetensors", ["of memory"]),  # one tensor, held whole
        ("gradnorm", "points", None, ["of memory"]),
        ("eval", "points", None, ["of memory"]),
    ],
)
def test_a_count_that_cannot_fit_is_refused(runs, tmp_path, command, run, out, words):
    extra = ["--out", tmp_path / out] if out else []
    refused(invoke(command, runs / run, "--n", 10**12, *extra), "--n 1000000000000", *words)
    assert not list(tmp_path.iterdir())  # not even an empty folder


def test_samples_written_as_they_are_drawn_are_the_samples_held_whole(runs, tmp_path):
    n = 2500  # three chunks
    for name in ("x.npy", "x.safetensors"):
        assert invoke("sample", runs / "points", "--out", tmp_path / name, "--n", n, "--seed", 4).exit_code == 0
    streamed = np.load(tmp_path / "x.npy")
    assert streamed.shape == (n, 2) and np.array_equal(
        streamed, load_file(tmp_path / "x.safetensors")["samples"].numpy()
    )


def test_an_image_size_that_cannot_fit_is_refused_before_decoding(tmp_path):
    folder = tmp_path / "real"
    folder.mkdir()
    for i in range(3):
        Image.new("RGB", (8, 8), (i, 0, 0)).save(folder / f"{i}.png")
    r = invoke("eval", "--fake", folder, "--data", folder, "--image-size", 100_000)
    refused(r, "100000 x 100000", "of memory")


def test_a_checkpoint_whose_config_claims_a_huge_mlp_is_refused_from_its_tensors(runs, tmp_path):
    bad = _edited(_ckpt(runs / "points"), tmp_path / "deep.safetensors", config={"depth": 100_000})
    refused(invoke("sample", bad, "--out", tmp_path / "x.npy"), "depth 100000", "generator tensors")


# --- rich markup in error lines ---------------------------------------------------------------
@pytest.mark.parametrize("data", ["my[/]data", "faces[red]v2"])
def test_brackets_in_a_value_survive_on_a_terminal(monkeypatch, tmp_path, data):
    from rich.console import Console

    from ganctl.cli import output

    screen = io.StringIO()
    monkeypatch.setattr(output, "stderr", Console(file=screen, force_terminal=True, width=200, color_system=None))
    r = invoke("train", "--data", data, "--out", tmp_path / "run")
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert f"--data '{data}'" in screen.getvalue()


def test_a_metric_name_keeps_its_feature_space_on_a_terminal(monkeypatch, runs, tmp_path):
    from rich.console import Console

    from ganctl.cli import output

    screen = io.StringIO()
    monkeypatch.setattr(output, "stderr", Console(file=screen, force_terminal=True, width=300, color_system=None))
    fake = tmp_path / "fake.npy"
    assert invoke("sample", runs / "images", "--out", fake, "--n", 8).exit_code == 0
    r = invoke("eval", "--fake", fake, "--data", "shapes", "--image-size", 16, "--n", 8, "--metrics", "fid")
    assert r.exit_code == 0 and "fid[random-conv]" in screen.getvalue()  # the table keeps the brackets
    r = invoke("eval", "--fake", fake, "--data", "shapes", "--image-size", 16, "--metrics", "fid", "--min-recall", 0.5)
    assert r.exit_code == 2 and "fid[random-conv]" in screen.getvalue().splitlines()[-1]


# --- checkpoint contents ----------------------------------------------------------------------
@pytest.mark.parametrize("command", ["sample", "gradnorm", "eval", "compare", "resume"])
def test_an_edited_or_poisoned_checkpoint_is_one_line_in_every_command(runs, tmp_path, command):
    ckpt = _ckpt(runs / "points")
    images_of_nothing = _edited(ckpt, tmp_path / "a.safetensors", config={"data": "/etc/passwd", "image_size": None})
    weights = load_file(str(ckpt))
    name = next(k for k in weights if k.startswith("generator.") and k.endswith("weight"))
    poisoned = _edited(ckpt, tmp_path / "b.safetensors", tensors={name: torch.full_like(weights[name], float("nan"))})
    for bad, words in ((images_of_nothing, ["records no image size"]), (poisoned, [name, "NaN"])):
        if command == "resume":
            r = invoke("train", "--resume", bad, "--out", tmp_path / "resumed")
        elif command == "sample":
            r = invoke("sample", bad, "--out", tmp_path / "x.npy")
        else:
            r = invoke(command, bad)
        refused(r, str(bad), *words)
    assert not (tmp_path / "x.npy").exists()


def test_points_with_a_nan_are_refused_by_eval(tmp_path):
    points = np.random.default_rng(0).normal(size=(64, 2)).astype(np.float32)
    points[5, 1] = np.nan
    np.save(tmp_path / "p.npy", points)
    refused(invoke("eval", "--fake", tmp_path / "p.npy", "--data", "8gaussians"), "--fake", "1 of its 64 points")


@pytest.mark.parametrize("size", [0, -5])
def test_a_non_positive_image_size_is_one_line(tmp_path, size):
    refused(invoke("eval", "--fake", tmp_path, "--data", "shapes", "--image-size", size), "--image-size", str(size))


# --- round trips: whatever sample writes, eval --fake and train --data read -------------------
@pytest.mark.parametrize("name", ["x.npy", "x.safetensors", "xdir"])
def test_every_file_sample_writes_is_read_by_eval_and_train(runs, tmp_path, name):
    out = tmp_path / name
    assert invoke("sample", runs / "images", "--out", out, "--n", 12).exit_code == 0
    r = invoke("eval", "--fake", out, "--data", "shapes", "--image-size", 16, "--n", 12, "--metrics", "fid", "--json")
    assert r.exit_code == 0, r.output
    assert parse_json(r.stdout)["n_fake"] == 12
    image = cli_args(data=out, width=4, z_dim=8, batch_size=4, steps=1, n_critic=1, eval_samples=8)
    r = invoke("train", *image, "--eval-metrics", "none", "--out", tmp_path / "run")
    assert r.exit_code == 0, r.output


def test_points_sample_writes_are_read_by_eval(runs, tmp_path):
    assert invoke("sample", runs / "points", "--out", tmp_path / "p.npy", "--n", 50).exit_code == 0
    assert invoke("eval", "--fake", tmp_path / "p.npy", "--data", "8gaussians", "--n", 50).exit_code == 0


def test_a_png_grid_is_not_taken_for_samples_and_the_error_names_fake(runs, tmp_path):
    assert invoke("sample", runs / "images", "--out", tmp_path / "grid.png", "--n", 4).exit_code == 0
    refused(invoke("eval", "--fake", tmp_path / "grid.png", "--data", "shapes"), "--fake", "a picture")


# --- empty and foreign arrays -----------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".npy", ".npz"])
@pytest.mark.parametrize("flag", ["--data", "--fake"])
def test_an_empty_array_file_is_one_line(tmp_path, suffix, flag):
    empty = tmp_path / f"empty{suffix}"
    empty.write_bytes(b"")
    args = ["train", "--data", empty, "--out", tmp_path / "run"] if flag == "--data" else ["eval", "--fake", empty]
    line = refused(invoke(*args, *(["--data", "shapes"] if flag == "--fake" else [])), flag, "empty file")
    assert "Aborted" not in line and not (tmp_path / "run").exists()


def test_random_bytes_are_not_told_to_allow_pickle(tmp_path):
    bad = tmp_path / "x.npy"
    bad.write_bytes(np.random.default_rng(0).bytes(300))
    line = refused(invoke("train", "--data", bad, "--out", tmp_path / "run"), "not a .npy or .npz file")
    assert "pickle" not in line


def test_labels_that_leave_classes_empty_are_refused(tmp_path):
    images = np.zeros((8, 16, 16, 3), dtype=np.uint8)
    labels = np.array([0, 1, 0, 1, 0, 1, 0, 99])
    np.savez(tmp_path / "d.npz", images=images, y=labels)
    r = invoke("train", "--data", tmp_path / "d.npz", "--conditional", "--out", tmp_path / "run")
    refused(r, "100 classes", "97 of them have no image")  # 0, 1 and 99 have images


# --- sets too small for the evaluation asked --------------------------------------------------
@pytest.mark.parametrize("count, metrics, words", [(1, "fid,pr", ["fid", "at least 2"]), (3, "pr", ["at least 4"])])
def test_data_too_small_for_its_metrics_is_refused_before_training(tmp_path, count, metrics, words):
    folder = tmp_path / "few"
    folder.mkdir()
    for i in range(count):
        Image.new("RGB", (16, 16), (60 * i, 0, 0)).save(folder / f"{i}.png")
    args = cli_args(data=folder, width=4, z_dim=8, batch_size=4, steps=1000)
    r = invoke("train", *args, "--eval-metrics", metrics, "--out", tmp_path / "run")
    refused(r, "--eval-metrics", *words)
    assert not (tmp_path / "run").exists()  # refused before training, nothing written


# --- a run folder works from any folder -------------------------------------------------------
def test_a_run_on_a_relative_folder_works_from_another_folder(tmp_path, monkeypatch):
    (tmp_path / "a" / "imgs").mkdir(parents=True)
    for i in range(6):
        Image.new("RGB", (16, 16), (40 * i, 0, 0)).save(tmp_path / "a" / "imgs" / f"{i}.png")
    monkeypatch.chdir(tmp_path / "a")
    args = cli_args(data="imgs", width=4, z_dim=8, batch_size=4, steps=2, eval_samples=8)
    assert invoke("train", *args, "--eval-metrics", "none", "--ckpt-every", 1, "--out", tmp_path / "run").exit_code == 0
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "b")
    assert invoke("gradnorm", tmp_path / "run", "--n", 8).exit_code == 0
    assert invoke("eval", tmp_path / "run", "--n", 8, "--metrics", "fid").exit_code == 0
    copy = tmp_path / "b" / "copy"  # the same images by another path: accepted, the fingerprint says so
    copy.mkdir()
    for f in (tmp_path / "a" / "imgs").iterdir():
        copy.joinpath(f.name).write_bytes(f.read_bytes())
    r = invoke("train", "--resume", tmp_path / "run", "--data", copy, "--steps", 3)
    assert r.exit_code == 0, r.output
    other = tmp_path / "b" / "other"
    other.mkdir()
    Image.new("RGB", (16, 16)).save(other / "0.png")
    refused(invoke("train", "--resume", tmp_path / "run", "--data", other, "--steps", 4), "cannot change --data")


# --- writes and exit codes --------------------------------------------------------------------
def test_a_refused_run_leaves_no_folder(tmp_path):
    refused(invoke("train", "--lipschitz", "bogus", "--out", tmp_path / "a" / "run"), "--lipschitz")
    assert not (tmp_path / "a").exists()


def test_gradnorm_png_on_a_folder_names_png(runs, tmp_path):
    refused(invoke("gradnorm", _ckpt(runs / "points"), "--png", tmp_path), "--png", "is a folder")


# --- strict JSON ------------------------------------------------------------------------------
def test_every_command_prints_strict_json_with_a_reason_for_undefined_numbers(runs, tmp_path):
    one = invoke("gradnorm", _ckpt(runs / "points"), "--n", 1, "--json")  # one point: no spread, no quantile gap
    assert one.exit_code == 0, one.output
    report = parse_json(one.stdout)  # strict: NaN or Infinity would raise here
    assert all(report["undefined"][path] in ("NaN", "Infinity", "-Infinity") for path in report.get("undefined", {}))
    outputs = [
        invoke("train", *cli_args(steps=1, width=8, depth=1), "--out", tmp_path / "t", "--json"),
        invoke("sample", runs / "points", "--out", tmp_path / "s.npy", "--n", 4, "--json"),
        invoke("eval", runs / "points", "--n", 64, "--json"),
        invoke("compare", runs / "points", "--json"),
    ]
    for r in outputs:
        assert r.exit_code == 0, r.output
        parse_json(r.stdout)


def test_json_of_a_nan_is_null_with_its_path():
    from ganctl.fileio import dumps

    text = dumps({"metrics": {"kid_std": float("nan"), "fid": 1.5}, "xs": [float("inf")]})
    assert json.loads(text) == {
        "metrics": {"kid_std": None, "fid": 1.5},
        "xs": [None],
        "undefined": {"metrics.kid_std": "NaN", "xs[0]": "Infinity"},
    }


# --- the smaller ones -------------------------------------------------------------------------
def test_compare_marks_no_best_across_different_data(runs, tmp_path):
    assert (
        invoke("train", *cli_args(data="25gaussians", steps=2, width=8, depth=1), "--out", tmp_path / "o").exit_code
        == 0
    )
    r = invoke("compare", runs / "points", tmp_path / "o", "--json")
    assert r.exit_code == 0, r.output
    result = parse_json(r.stdout)
    assert result["best"] == {} and "different data" in result["note"]


def test_an_unknown_method_is_blamed_on_methods(tmp_path):
    refused(invoke("compare", "--methods", "gp,foo", "--out", tmp_path / "c"), "--methods gp,foo", "'foo'")


# --- property: no numeric value of any flag gives a traceback or runs away with memory --------
def _numeric_flags(command: str) -> list[str]:
    """The int and float options of a command, read from its signature (what Typer reads)."""
    import inspect
    import typing

    from ganctl import cli

    function = {"eval": cli.eval_command, "train": cli.train, "sample": cli.sample, "gradnorm": cli.gradnorm}[command]
    flags = []
    for param in inspect.signature(function, eval_str=True).parameters.values():
        base, *meta = typing.get_args(param.annotation) or (param.annotation,)
        kinds = set(typing.get_args(base)) or {base}
        option = next((m for m in meta if hasattr(m, "param_decls")), None)
        if option is not None and kinds & {int, float} and not kinds & {bool}:
            flags.append(next(d for d in (option.default, *option.param_decls) if isinstance(d, str) and d[:2] == "--"))
    # Flags that scale a run's length, not its size, are left out: a huge value is a long run, not bad input.
    return [f for f in flags if f not in ("--steps", "--n-critic", "--decay-steps", "--max-restarts", "--nproc")]


EDGES = [-(2**63), -1, 0, 1, 3, 10**12, 2**63, float("nan"), float("inf"), -1e308, 1e-300]


@pytest.mark.parametrize("command", ["train", "sample", "gradnorm", "eval"])
def test_no_numeric_flag_value_gives_a_traceback_or_unbounded_memory(runs, tmp_path_factory, command):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    flags = _numeric_flags(command)
    assert flags  # the command has numeric flags to try

    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(flag=st.sampled_from(flags), value=st.sampled_from(EDGES))
    def run(flag, value):
        tmp = tmp_path_factory.mktemp("fuzz")
        base = {
            "train": ["train", *cli_args(steps=1, width=8, depth=1, eval_samples=64), "--out", tmp / "run"],
            "sample": ["sample", runs / "points", "--out", tmp / "x.npy", "--n", 8],
            "gradnorm": ["gradnorm", _ckpt(runs / "points"), "--n", 16],
            "eval": ["eval", runs / "points", "--n", 16],
        }[command]
        r = invoke(*base, flag, value)
        assert r.exit_code in (0, 1, 2), (flag, value, r.output[-2000:])
        assert "Traceback" not in r.output, (flag, value, r.output[-2000:])
        peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KB on Linux
        assert peak_gb < 8, (flag, value, peak_gb)

    run()
