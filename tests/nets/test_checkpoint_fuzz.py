"""Property-based fuzzing of the checkpoint reader: whatever the bytes, opening a checkpoint
either works or raises one `GanctlError` (a clear message, exit 2 in the CLI), never another
exception, and never allocates what a header merely claims."""

import contextlib
import json
import struct

import pytest
from conftest import small
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ganctl
from ganctl.errors import GanctlError
from ganctl.runfolder import list_checkpoints


@pytest.fixture(scope="module")
def valid(tmp_path_factory):
    out = tmp_path_factory.mktemp("fz") / "run"
    ganctl.train(small(lipschitz="sn", steps=2, width=8, depth=1), out)
    return list_checkpoints(out)[-1].read_bytes()


def opens_cleanly(data: bytes, tmp_path) -> None:
    path = tmp_path / "fuzz.safetensors"
    path.write_bytes(data)
    with contextlib.suppress(GanctlError):  # the one acceptable failure
        ganctl.resume(path, device="cpu")


FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(cut=st.floats(0.0, 1.0))
def test_truncated_files(valid, tmp_path, cut):
    opens_cleanly(valid[: int(len(valid) * cut)], tmp_path)


@FUZZ
@given(flips=st.lists(st.tuples(st.floats(0.0, 1.0), st.integers(0, 255)), min_size=1, max_size=8))
def test_corrupted_bytes(valid, tmp_path, flips):
    data = bytearray(valid)
    header_end = 8 + struct.unpack("<Q", valid[:8])[0]
    for where, value in flips:  # mostly in the JSON header, where the parser is exercised
        data[int(where * (header_end - 1))] = value
    opens_cleanly(bytes(data), tmp_path)


@FUZZ
@given(size=st.integers(0, 2**64 - 1))
def test_declared_header_sizes(valid, tmp_path, size):
    opens_cleanly(struct.pack("<Q", size) + valid[8:], tmp_path)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@FUZZ
@given(
    config=st.dictionaries(
        st.sampled_from(["width", "depth", "data", "lipschitz", "steps", "z_dim", "seed", "bogus"]),
        json_values,
        max_size=5,
    ),
    declared=st.integers(0, 2**62),
)
def test_hostile_headers(valid, tmp_path, config, declared):
    # A well-formed safetensors header whose config is anything, and one tensor whose offsets
    # claim `declared` bytes that the file does not have.
    header_len = struct.unpack("<Q", valid[:8])[0]
    header = json.loads(valid[8 : 8 + header_len])
    meta = dict(header["__metadata__"])
    base = json.loads(meta["config"])
    meta["config"] = json.dumps({**base, **config})
    header["__metadata__"] = meta
    name = next(k for k in header if k != "__metadata__")
    header[name] = {**header[name], "data_offsets": [0, declared]}
    raw = json.dumps(header).encode()
    opens_cleanly(struct.pack("<Q", len(raw)) + raw + valid[8 + header_len :], tmp_path)


@pytest.mark.parametrize("change", [{"width": 10**6}, {"width": 10**5, "depth": 10**3}, {"z_dim": 10**9}])
def test_a_config_claiming_huge_networks_is_refused_before_allocation(valid, tmp_path, change):
    header_len = struct.unpack("<Q", valid[:8])[0]
    header = json.loads(valid[8 : 8 + header_len])
    header["__metadata__"]["config"] = json.dumps({**json.loads(header["__metadata__"]["config"]), **change})
    raw = json.dumps(header).encode()
    path = tmp_path / "huge.safetensors"
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + valid[8 + header_len :])
    with pytest.raises(GanctlError, match="but the file holds"):  # its parameters, or (an MLP) its layers
        ganctl.resume(path, device="cpu")


def test_nothing_is_ever_unpickled():
    # The one torch.load (feature networks' weights, ganctl.quality.features) must use PyTorch's
    # restricted loader, weights_only=True: tensors and plain containers, no code. The one
    # pickle reader (CIFAR-10's python batches, ganctl.data.cifar) is an Unpickler whose
    # find_class allows only what those files hold (tests/test_cifar.py feeds it a hostile one).
    import ast
    from pathlib import Path

    import ganctl as package

    loads = []
    for path in Path(package.__file__).parent.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        if path.name == "cifar.py":
            tree = ast.parse(text)
            unpicklers = [n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and "Unpickler" in ast.unparse(n)]
            assert [c.name for c in unpicklers] == ["_BatchUnpickler"]
            assert any(isinstance(f, ast.FunctionDef) and f.name == "find_class" for f in unpicklers[0].body)
            text = text.replace("import pickle", "")
        for banned in ("import pickle", "allow_pickle=True", "pickle.load", "weights_only=False"):
            assert banned not in text, f"{path}: {banned}"
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Call) and ast.unparse(node.func) in ("torch.load", "torch.serialization.load"):
                restricted = any(k.arg == "weights_only" and ast.unparse(k.value) == "True" for k in node.keywords)
                assert restricted, f"{path}:{node.lineno}: torch.load without weights_only=True"
                loads.append(path.name)
    assert loads == ["features.py"]
