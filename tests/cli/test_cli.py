import json
import subprocess
import sys

import pytest
from conftest import cli_args, parse_json
from typer.testing import CliRunner

from ganctl.cli import app
from ganctl.methods.registry import METHODS

runner = CliRunner()
FAST = cli_args(depth=1, log_every=2, eval_every=None, sample_every=None)


def train(tmp_path, *args, out="run"):
    return runner.invoke(app, ["train", *FAST, "--out", str(tmp_path / out), *args])


def test_train_json_files_and_exit_code(tmp_path):
    result = train(tmp_path, "--steps", "4", "--sample-every", "2", "--eval-every", "4", "--ckpt-every", "2", "--json")
    assert result.exit_code == 0, result.output
    summary = parse_json(result.stdout)
    assert summary["step"] == 4 and summary["config"]["lipschitz"] == "gp"
    assert {"modes", "modes_total", "hq_share", "w1", "w1_floor", "loss_d", "wasserstein"} <= summary["final"].keys()
    run = tmp_path / "run"
    gp = METHODS["gp"]  # the 2-D recipe, not the image one
    assert json.loads((run / "config.json").read_text())["penalty_weight"] == gp.points.penalty_weight
    assert gp.points.penalty_weight != gp.recipe.penalty_weight
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4]
    assert "eval/modes" in records[-1] and "grad_norm" in records[0]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "step-0000002.safetensors",
        "step-0000004.safetensors",
    ]
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["final.png", "step-0000002.png", "step-0000004.png"]


def test_piped_output_is_plain(tmp_path):
    result = train(tmp_path, "--steps", "2")
    assert result.exit_code == 0
    assert "\x1b[" not in result.output  # no colour codes or bars when not on a terminal
    assert "step 2/2" in result.stderr


def test_config_file_and_flag_precedence(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text('lipschitz = "zgp"\npenalty-at = "real"\nsteps = 2\nn_critic = 2\n')
    result = train(tmp_path, "--config", str(toml), "--n-critic", "3", "--json")
    assert result.exit_code == 0, result.output
    cfg = parse_json(result.stdout)["config"]
    assert (cfg["lipschitz"], cfg["penalty_at"], cfg["steps"], cfg["n_critic"]) == ("zgp", "real", 2, 3)


def test_resume_continues_and_matches_an_uninterrupted_run(tmp_path):
    # No decay: a linear one's horizon is each run's own --steps, kept on resume (docs/results.md).
    assert train(tmp_path, "--steps", "4", "--lipschitz", "sn", "--lr-decay", "none", out="full").exit_code == 0
    assert train(tmp_path, "--steps", "2", "--lipschitz", "sn", "--lr-decay", "none", out="part").exit_code == 0
    result = runner.invoke(app, ["train", "--resume", str(tmp_path / "part"), "--steps", "4", "--json"])
    assert result.exit_code == 0, result.output
    summary = parse_json(result.stdout)
    assert (summary["step"], summary["steps_trained"]) == (4, 2)
    from safetensors.torch import load_file

    a = load_file(str(tmp_path / "full/checkpoints/step-0000004.safetensors"))
    b = load_file(str(tmp_path / "part/checkpoints/step-0000004.safetensors"))
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)
    # The log reads as the uninterrupted run's: the first invocation's final evaluation (at step 2)
    # is dropped on resume, and the resumed run's final evaluation closes it.
    logs = {
        name: [json.loads(x) for x in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        for name in ("full", "part")
    }
    shape = [[(r["step"], bool(r.get("final"))) for r in log] for log in logs.values()]
    assert shape[0] == shape[1] == [(2, False), (4, False), (4, True)]
    assert logs["part"][-1]["eval/w1"] == logs["full"][-1]["eval/w1"]


@pytest.mark.parametrize(
    "args,message",
    [
        (["--lipschitz", "wgan"], "--lipschitz 'wgan' is not one of"),
        (["--data", "mnist"], "--data 'mnist': no such folder or file, and not a built-in set"),
        (["--critic-norm", "batch"], "batch normalisation"),
        (["--reg-every", "0"], "--reg-every must be > 0"),
        (["--lambda", "-1"], "--lambda/--gamma must be >= 0"),
        (["--lipschitz", "clip", "--lambda", "1"], "does not apply to --lipschitz clip"),
        (["--device", "cuda:7"], "--device cuda:7"),
        (["--device", "tpu"], "--device 'tpu' is not one of"),
        (["--config", "missing.toml"], "--config missing.toml: no such file"),
        (["--resume", "nowhere"], "nowhere: no such checkpoint file or run directory"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_no_traceback(tmp_path, args, message):
    result = train(tmp_path, "--steps", "1", *args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert "Traceback" not in result.output
    assert not (tmp_path / "run" / "checkpoints").exists()  # refused before any work


def test_tf32_is_recorded_and_may_change_on_resume(tmp_path):
    # --tf32 only acts on CUDA; it is a how-to-compute setting, so a resume may flip it.
    assert train(tmp_path, "--steps", "2", "--no-tf32").exit_code == 0
    assert json.loads((tmp_path / "run" / "config.json").read_text())["tf32"] is False
    result = runner.invoke(app, ["train", "--resume", str(tmp_path / "run"), "--steps", "3", "--tf32", "--json"])
    assert result.exit_code == 0, result.output
    assert parse_json(result.stdout)["config"]["tf32"] is True


def test_bad_toml_and_unknown_keys(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("steps = [")
    result = train(tmp_path, "--config", str(bad))
    assert result.exit_code == 2 and "not valid TOML" in result.stderr and "Traceback" not in result.output
    bad.write_text("stepz = 3")
    result = train(tmp_path, "--config", str(bad))
    assert result.exit_code == 2 and "unknown setting 'stepz'" in result.stderr and "eval-every" in result.stderr


def test_existing_run_is_not_overwritten_by_accident(tmp_path):
    assert train(tmp_path, "--steps", "2").exit_code == 0
    result = train(tmp_path, "--steps", "2")
    assert result.exit_code == 2 and "already holds a run" in result.stderr
    assert train(tmp_path, "--steps", "2", "--overwrite").exit_code == 0


def test_resume_cannot_change_the_method_nor_its_recipe(tmp_path):
    assert train(tmp_path, "--steps", "2").exit_code == 0
    before = sorted((tmp_path / "run" / "checkpoints").iterdir())
    for flag, value in (("--lipschitz", "sn"), ("--lr-d", "0.1")):
        result = runner.invoke(app, ["train", "--resume", str(tmp_path / "run"), flag, value])
        assert result.exit_code == 2 and f"cannot change {flag}" in result.stderr, result.output
    assert sorted((tmp_path / "run" / "checkpoints").iterdir()) == before  # nothing trained or written


def _imports(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "; import sys; print(' '.join(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return set(out.split())


def test_import_ganctl_is_light():
    assert not {"torch", "typer", "rich"} & _imports("import ganctl")


def test_cli_help_does_not_import_torch():
    loaded = _imports(
        "from ganctl.cli import app; from typer.testing import CliRunner; CliRunner().invoke(app, ['train', '--help'])"
    )
    assert "torch" not in loaded


def test_python_dash_m_and_version():
    out = subprocess.run([sys.executable, "-m", "ganctl", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("ganctl ")


def _help_text(command: str) -> str:
    r = runner.invoke(app, [command, "--help"], env={"COLUMNS": "400"})
    assert r.exit_code == 0
    return " ".join(r.stdout.replace("│", " ").split())  # one line, whatever the wrapping


def _option_help(command: str) -> dict[str, str]:
    """Each option's own help, as the command declares it (read from the command, not from a
    rendering that wraps and joins lines), keyed by the option's parameter name."""
    import typer.main

    params = typer.main.get_command(app).commands[command].params
    return {p.name: p.help for p in params if getattr(p, "help", None)}


def test_every_train_option_shows_the_default_that_is_applied():
    from ganctl.config import TrainConfig, field_names, flags_of
    from ganctl.methods.help import describe_default
    from ganctl.methods.resolve import resolve

    helps = _option_help("train")
    for name in field_names():
        if not flags_of(name):  # num_classes: recorded from the data, not given
            assert name not in helps
            continue
        shown = helps[name].replace("\\[", "[")  # a bracket escaped for rich, which shows it as typed
        assert shown.endswith(f"[default: {describe_default(name)}]"), (name, helps[name])
    assert helps["steps"].endswith("[default: 3000]")
    assert helps["width"].endswith("[default: 128 for the 2-D MLP; on images dcgan 64, resnet 128, mlp 1024, r3gan 64]")
    # The default run (25gaussians, gp) is the 2-D case the --lambda help names.
    assert "gp 10 (2-D data: 0.1)" in helps["penalty_weight"] and resolve(TrainConfig()).penalty_weight == 0.1
    assert resolve(TrainConfig(data="shapes")).penalty_weight == 10.0
    assert "clip 5e-5 (2-D data: 2.8e-4)" in helps["lr_d"]
    assert resolve(TrainConfig(lipschitz="clip", data="shapes")).lr_d == 5e-5
    assert resolve(TrainConfig(lipschitz="clip")).lr_d == 2.8e-4


def test_train_and_compare_take_every_setting_with_the_same_help():
    """One declaration serves both commands (compare has --methods for --lipschitz, and a --seed
    of its own: the first seed of every method's runs)."""
    train, compare = _option_help("train"), _option_help("compare")
    shared = set(train) - {"out", "resume", "overwrite", "nproc", "max_restarts", "json_output", "config_file"}
    assert shared - set(compare) == {"lipschitz"}
    assert all(compare[name] == train[name] for name in shared - {"lipschitz", "seed"})


@pytest.mark.parametrize(
    "command, target",
    [
        (["sample", "CKPT", "--out", "OUT.png"], "ganctl.nets.sampling.generate"),
        (["gradnorm", "CKPT"], "ganctl.lipschitz.analysis.analyse"),
        (["compare", "CKPT"], "ganctl.fleet.report.measure_run"),
    ],
)
def test_ctrl_c_exits_130_for_every_command(command, target, tmp_path, monkeypatch):
    from conftest import small

    import ganctl

    ganctl.train(small(steps=2), tmp_path / "r")
    ckpt = str(next((tmp_path / "r" / "checkpoints").iterdir()))

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(target, interrupted)
    args = [ckpt if a == "CKPT" else str(tmp_path / a) if a == "OUT.png" else a for a in command]
    r = runner.invoke(app, args)
    assert r.exit_code == 130 and "interrupted" in r.stderr and "Traceback" not in r.output


def test_square_brackets_in_help_survive_rich_markup():
    # Rich markup eats an unescaped [word]: this one test reads the rendering, where that happens.
    assert "pip install 'ganctl[tensorboard]'" in _help_text("train")
    assert "fid[inception]" in _help_text("eval") and "fid[random-conv]" in _help_text("eval")


def test_the_progress_bar_keeps_the_step_count_and_eta_at_80_columns(monkeypatch):
    import io
    import time

    from rich.console import Console

    from ganctl.cli import output
    from ganctl.training.events import Logged, Started, Stepped

    screen = io.StringIO()
    monkeypatch.setattr(output, "stderr", Console(file=screen, width=80, force_terminal=True, color_system=None))
    with output.TrainProgress() as progress:
        progress(Started({"steps": 100}, "cpu", 0, "runs/x", True, 1))
        long = {"loss_d": -1.2345, "wasserstein": 0.1234, "penalty": 0.0123, "grad_norm": 0.98, "eval/w1": 0.0543}
        progress(Logged({"step": 50, "eval/modes": 8, "eval/hq_share": 0.91, **long}))
        progress(Stepped(59))
        time.sleep(0.2)
        progress.progress.refresh()
    line = [x for x in screen.getvalue().replace("\r", "\n").splitlines() if "train" in x][-1]
    assert "59/100" in line and "eta" in line and "loss_D=-1.234" in line  # the metrics get what is left
    assert len(line.replace("\x1b[2K", "")) <= 80


def test_help_says_defaults_one_way_and_wraps_each_paragraph_once():
    from ganctl.cli import app

    for command in ("train", "sample", "gradnorm", "eval", "compare"):
        assert not any("(default:" in h for h in _option_help(command).values()), command
    for info in app.registered_commands:  # a paragraph is one line: the terminal alone wraps it
        assert all("\n" not in part for part in info.help.split("\n\n")), info.name
    text = _help_text("eval")
    assert "hash 6726825d" in text  # --inception's help, whole at any width
    usages = [_help_text(c).split("Usage: ")[1].split(" ")[3] for c in ("sample", "gradnorm", "eval", "compare")]
    assert all("CKPT_OR_RUN" in u for u in usages), usages
    assert "gp 5 (--arch mlp on images: 2)" in _option_help("train")["n_critic"]


def test_a_config_file_s_out_key_is_where_the_run_goes(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text(f'out = "{tmp_path / "from-file"}"\nsteps = 2\nlambda = 0.5\n')
    result = runner.invoke(app, ["train", *FAST, "--config", str(toml), "--json"])
    assert result.exit_code == 0, result.output
    summary = parse_json(result.stdout)
    assert summary["run_dir"] == str(tmp_path / "from-file") and summary["config"]["penalty_weight"] == 0.5
    assert (tmp_path / "from-file" / "checkpoints").is_dir()


def test_a_phase_over_a_second_shows_a_bar_on_a_terminal_and_lines_when_piped(monkeypatch):
    import io

    from rich.console import Console

    from ganctl.cli import output

    now = [0.0]
    events = [(0.0, 0), (0.5, 100), (1.2, 200), (3.0, 300), (6.5, 400), (7.0, 500)]  # (seconds, done of 500)
    piped = io.StringIO()
    monkeypatch.setattr(output, "stderr", Console(file=piped, width=80, color_system=None))
    shown = output.Phases(clock=lambda: now[0], live=False)
    for t, done in events:
        now[0] = t
        shown("real images through random-conv", done, 500)
    for t, done in [(10.0, 0), (10.9, 5)]:  # over within a second: nothing shown
        now[0] = t
        shown("FID", done, 5)
    assert piped.getvalue().splitlines() == [
        "real images through random-conv: 200/500 (1 s)",
        "real images through random-conv: 400/500 (6 s)",
        "real images through random-conv: 500/500 (7 s)",
    ]
    screen = io.StringIO()
    monkeypatch.setattr(output, "stderr", Console(file=screen, width=100, force_terminal=True, color_system=None))
    with output.Phases(clock=lambda: now[0], live=True) as shown:
        for t, done in events[:4]:
            now[0] = t
            shown("training the classifier", done, 500)
        shown.progress.refresh()
        bar = [x for x in screen.getvalue().replace("\r", "\n").splitlines() if "training the classifier" in x][-1]
        assert "300/500" in bar and "eta" in bar
        now[0] = 7.0
        shown("training the classifier", 500, 500)
        assert not shown.tasks  # a finished phase leaves no bar behind
        now[0] = 10.0
        shown("FID", 0, 1)  # over within a second: never drawn
        now[0] = 10.5
        shown.progress.refresh()
        shown("FID", 1, 1)
        now[0] = 20.0
        shown("an exact optimal pairing", 0, 1)  # one step, no report until it ends: drawn after a second
        now[0] = 21.5
        shown.progress.refresh()
    drawn = screen.getvalue().replace("\r", "\n")
    assert "FID" not in drawn and "an exact optimal pairing" in drawn
