import json
import os

import pytest
import torch
from conftest import small
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import ganctl
from ganctl.errors import CheckpointError, ConfigError
from ganctl.methods.registry import available_methods
from ganctl.methods.resolve import resolve
from ganctl.nets import checkpoint
from ganctl.runfolder import RunFolder
from ganctl.training.engine import Trainer
from ganctl.training.state import capture, restore

METHODS = available_methods()


def state(trainer: Trainer) -> dict[str, torch.Tensor]:
    tensors = {f"g.{k}": v for k, v in trainer.generator.state_dict().items()}
    tensors.update({f"d.{k}": v for k, v in trainer.critic.state_dict().items()})
    tensors.update({f"e.{k}": v for k, v in trainer.ema.state_dict().items()})
    return tensors


@pytest.mark.parametrize("method", METHODS)
def test_resume_is_bitwise_identical_to_an_uninterrupted_run(method, tmp_path):
    cfg = small(lipschitz=method, steps=6)
    straight = Trainer(resolve(cfg))
    for _ in range(6):
        straight.train_step()

    first = Trainer(resolve(cfg))
    for _ in range(3):
        first.train_step()
    path = checkpoint.save(capture(first), tmp_path / "ckpt.safetensors")
    del first
    resumed = ganctl.resume(path)
    assert (resumed.step, resumed.exact_resume) == (3, True)
    for _ in range(3):
        resumed.train_step()

    a, b = state(straight), state(resumed)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    for opt in ("opt_d", "opt_g"):
        sa, sb = getattr(straight, opt).state_dict()["state"], getattr(resumed, opt).state_dict()["state"]
        for index in sa:
            for k in sa[index]:
                assert torch.equal(torch.as_tensor(sa[index][k]), torch.as_tensor(sb[index][k]))


def test_checkpoint_opens_with_plain_safetensors_and_json(tmp_path):
    trainer = Trainer(resolve(small(lipschitz="sn")))
    trainer.train_step()
    path = checkpoint.save(capture(trainer), tmp_path / "c.safetensors")
    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata()
        keys = set(fh.keys())
    config = json.loads(meta["config"])
    assert config["lipschitz"] == "sn" and config["loss"] == "hinge"
    assert meta["format"] == "ganctl.checkpoint" and meta["format_version"] == "1"
    assert meta["ganctl_version"] == ganctl.__version__
    assert {"state.step", "state.critic_steps", "rng.train"} <= keys
    assert any(k.startswith("critic.") and k.endswith("parametrizations.weight.original") for k in keys)
    assert any(k.startswith("optim_d.") for k in keys) and any(k.startswith("ema.") for k in keys)
    assert int(load_file(str(path))["state.step"]) == 1


def test_load_rebuilds_modules_strictly(tmp_path):
    trainer = Trainer(resolve(small(lipschitz="sn")))
    for _ in range(2):
        trainer.train_step()
    checkpoint.save(capture(trainer), RunFolder(tmp_path).checkpoint_path(2))
    ck = ganctl.load(tmp_path)  # a run folder: its latest checkpoint
    assert ck.step == 2 and ck.config == trainer.cfg and ck.sampler is ck.ema
    x = torch.randn(5, 2)
    trainer.critic.eval()
    with torch.no_grad():
        assert torch.equal(ck.critic(x), trainer.critic(x))
    z = torch.randn(5, trainer.cfg.z_dim)
    with torch.no_grad():
        assert torch.equal(ck.ema(z), trainer.ema(z))


def test_a_failed_write_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    trainer = Trainer(resolve(small()))
    path = checkpoint.save(capture(trainer), tmp_path / "c.safetensors")
    before = path.read_bytes()
    trainer.train_step()

    def broken(tensors, filename, metadata=None):
        with open(filename, "wb") as fh:
            fh.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr("ganctl.nets.checkpoint.save_file", broken)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save(capture(trainer), path)
    assert path.read_bytes() == before
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def _saved(tmp_path):
    trainer = Trainer(resolve(small()))
    return checkpoint.save(capture(trainer), tmp_path / "c.safetensors")


def _rewrite(path, change_meta=None, change_tensors=None):
    tensors = load_file(str(path))
    with safe_open(str(path), framework="pt") as fh:
        meta = dict(fh.metadata())
    if change_meta:
        change_meta(meta)
    if change_tensors:
        change_tensors(tensors)
    save_file(tensors, str(path), metadata=meta)


@pytest.mark.parametrize(
    "mutate,message",
    [
        (lambda p: p.write_bytes(p.read_bytes()[:100]), "not a readable safetensors file"),
        (lambda p: p.write_bytes(b"\x00" * 64), "not a readable safetensors file"),
        (lambda p: _rewrite(p, lambda m: m.update(format_version="99")), "format version '99'"),
        (lambda p: _rewrite(p, lambda m: m.update(config="{not json")), "not a JSON object"),
        (lambda p: _rewrite(p, lambda m: m.update(config='{"widht": 3}')), "unknown setting"),
        (lambda p: _rewrite(p, lambda m: m.update(config='{"width": "wide"}')), "'width' must be int"),
        (lambda p: _rewrite(p, lambda m: m.pop("format")), "not a ganctl checkpoint"),
        (lambda p: _rewrite(p, change_tensors=lambda t: t.pop("critic.0.weight")), "missing: 0.weight"),
        (
            lambda p: _rewrite(p, change_tensors=lambda t: t.update({"critic.9.weight": torch.zeros(1)})),
            "unexpected: 9.weight",
        ),
        (
            lambda p: _rewrite(p, change_tensors=lambda t: t.update({"critic.0.weight": torch.zeros(3, 3)})),
            r"shape \(3, 3\)",
        ),
        (
            lambda p: _rewrite(p, change_tensors=lambda t: t.update({"extra": torch.zeros(1)})),
            "unexpected tensors extra",
        ),
    ],
)
def test_broken_checkpoints_give_one_clear_error(tmp_path, mutate, message):
    path = _saved(tmp_path)
    mutate(path)
    with pytest.raises(CheckpointError, match=message) as info:
        ganctl.load(path)
    assert str(path) in str(info.value)


def test_resume_refuses_to_change_what_the_run_computes(tmp_path):
    path = _saved(tmp_path)
    with pytest.raises(ConfigError, match=r"cannot change --lr-d \(checkpoint has 0.001\)"):
        ganctl.resume(path, overrides={"lr_d": 1e-4})
    trainer = ganctl.resume(path, overrides={"steps": 50, "log_every": 7})
    assert (trainer.cfg.steps, trainer.cfg.log_every) == (50, 7)


def test_atomic_writes_get_ordinary_permissions(tmp_path):
    # mkstemp makes 0o600 temporaries; what lands at the user's path must not stay that way.
    from ganctl.fileio import write_text_atomic

    old = os.umask(0o022)
    try:
        write_text_atomic(tmp_path / "new.txt", "x")
        existing = tmp_path / "shared.txt"
        existing.write_text("old")
        existing.chmod(0o664)
        write_text_atomic(existing, "new")
    finally:
        os.umask(old)
    assert (tmp_path / "new.txt").stat().st_mode & 0o777 == 0o644
    assert existing.stat().st_mode & 0o777 == 0o664
    assert existing.read_text() == "new"


def test_load_builds_no_optimizer_and_no_scaler(tmp_path, monkeypatch):
    trainer = Trainer(resolve(small(lipschitz="gp", amp="fp16")))
    trainer.train_step()
    path = checkpoint.save(capture(trainer), tmp_path / "c.safetensors")

    def refused(*args, **kwargs):
        raise AssertionError("ganctl.load built an optimizer or a gradient scaler")

    for name in ("Adam", "RMSprop"):
        monkeypatch.setattr(torch.optim, name, refused)
    monkeypatch.setattr(torch.amp, "GradScaler", refused)
    ck = ganctl.load(path)
    assert ck.step == 1 and not hasattr(ck, "opt_d") and not ck.data_loaded
    x = torch.randn(4, 2)
    trainer.critic.eval()
    with torch.no_grad():
        assert torch.equal(ck.critic(x), trainer.critic(x))


def test_trainer_state_round_trips_in_memory():
    # restore(capture(...)) is how resume works; in memory it must be exact too.
    a, b = Trainer(resolve(small(lipschitz="gp", seed=1))), Trainer(resolve(small(lipschitz="gp", seed=2)))
    for _ in range(2):
        a.train_step()
    restore(b, capture(a))
    assert (b.step, b.critic_steps, b.exact_resume) == (a.step, a.critic_steps, True)
    a.train_step()
    b.train_step()
    for pa, pb in zip(a.critic.parameters(), b.critic.parameters()):
        assert torch.equal(pa, pb)
