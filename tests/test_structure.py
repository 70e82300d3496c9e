"""The shape of the house (docs/design.md): every import inside ganctl, deferred ones included,
points to the same floor or below, the graph has no circle, and nothing outside the engine
touches a Trainer's private attributes."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import ganctl
from ganctl.config import TrainConfig

SRC = Path(ganctl.__file__).parent

# The wings of docs/design.md, from the ground up. A module may import its own wing or below.
FLOORS = [
    {"errors", "streams", "config", "devices", "fileio", "runfolder", "interrupts", "memory", "progress", "cache"},
    {"pictures"},
    {"data", "models"},
    {"methods"},
    {"nets"},
    {"lipschitz"},
    {"quality"},
    {"training"},
    {"fleet"},
    {"cli", "__main__"},
]


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(p for p in parts if p != "__init__")


def floor_of(module: str) -> int:
    """The floor of a module: its own entry, else its package's."""
    for name in (module, module.split(".")[0]):
        for i, floor in enumerate(FLOORS):
            if name in floor:
                return i
    raise AssertionError(f"ganctl.{module} has no floor in FLOORS (add it, and to docs/design.md)")


def imports_of(path: Path) -> set[str]:
    """Every ganctl module this file imports, at the top or inside a function, under
    TYPE_CHECKING or not."""
    found = set()
    package = module_name(path).split(".") if path.name == "__init__.py" else module_name(path).split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("ganctl."))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(["ganctl", *package[: len(package) - node.level + 1], *([base] if base else [])])
            if not base.startswith("ganctl"):
                continue
            for alias in node.names:  # `from ganctl import checkpoint` imports a module
                candidate = f"{base}.{alias.name}"
                found.add(candidate if _exists(candidate) else base)
    return {f[len("ganctl.") :] for f in found if f != "ganctl"}


def _exists(dotted: str) -> bool:
    rel = Path(*dotted.split(".")[1:])
    return (SRC / rel).with_suffix(".py").exists() or (SRC / rel / "__init__.py").exists()


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in SRC.rglob("*.py") if module_name(p)}  # the root facade is exempt
    return {name: {i for i in imports_of(path) if i != name} for name, path in modules.items()}


def test_every_import_points_down_or_sideways():
    upward = [
        f"ganctl.{a} (floor {floor_of(a)}) imports ganctl.{b} (floor {floor_of(b)})"
        for a, targets in graph().items()
        for b in targets
        if floor_of(b) > floor_of(a)
    ]
    assert not upward, "\n".join(upward)


def test_the_import_graph_has_no_circle():
    edges = graph()
    state: dict[str, int] = {}  # 1 on the path, 2 done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                raise AssertionError("import circle: " + " -> ".join([*path[path.index(nxt) :], nxt]))
            if nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])


def test_nothing_imports_the_cli():
    offenders = [
        a
        for a, targets in graph().items()
        if a not in FLOORS[-1] and not a.startswith("cli.") and any(t.startswith("cli") for t in targets)
    ]
    assert not offenders


def test_no_private_trainer_attribute_is_used_outside_the_engine():
    # Private names of the Trainer, read off its class, must not appear as attributes elsewhere.
    engine = (SRC / "training" / "engine.py").read_text(encoding="utf-8")
    private = set(re.findall(r"self\.(_[a-z][a-z0-9_]*)", engine))
    assert {"_fused_layers", "_critic_params"} <= private  # the scan sees what it must
    roots = [
        SRC,
        SRC.parent.parent / "benchmarks",
        SRC.parent.parent / "examples",
        Path(__file__).parent,
    ]  # every test folder, recursively
    offenders = []
    for root in roots:
        for path in root.rglob("*.py"):
            if (
                path.name in ("engine.py", "test_engine.py", "test_structure.py")
                or path.parent.name == "tests"
                and path.name == "test_engine.py"
            ):
                continue
            text = path.read_text(encoding="utf-8")
            offenders += [
                f"{path.name}: .{name}"
                for name in private
                if re.search(rf"\.{name}\b", text)
                and not (path.parent == SRC and name in _OWN_PRIVATE.get(path.name, ()))
            ]
    assert not offenders, offenders


# Private names that other modules define for themselves (the same spelling, not the Trainer's).
_OWN_PRIVATE = {"networks.py": ("_dataset", "_data_placed")}


def test_every_method_is_one_registry_entry_with_its_registered_strategy():
    import inspect

    import pytest

    from ganctl.errors import ConfigError
    from ganctl.methods import registry, strategies
    from ganctl.methods.resolve import resolve

    assert set(strategies.STRATEGIES) == set(registry.available_methods())
    classes = {c for _, c in inspect.getmembers(strategies, inspect.isclass) if issubclass(c, strategies.Lipschitz)}
    concrete = {c for c in classes if not c.__name__.startswith("_")}
    assert set(strategies.STRATEGIES.values()) == concrete  # every class serves a method, and every method has one
    for name, cls in strategies.STRATEGIES.items():
        assert cls(resolve(TrainConfig(lipschitz=name))).name == name
        assert registry.search_space(name), f"{name} has no search space"
    with pytest.raises(ConfigError, match="is not one of"):
        strategies.register("nope")
    with pytest.raises(ValueError, match="already registered"):
        strategies.register("gp")(strategies.GradientPenalty)


def test_no_method_name_is_branched_on_outside_the_registry():
    """A method's own behaviour is registry data or its strategy, never `cfg.lipschitz == "sn"`."""
    offenders = [
        f"{module_name(path)}:{node.lineno}"
        for path in SRC.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Compare)
        and (getattr(node.left, "attr", None) == "lipschitz" or getattr(node.left, "id", None) == "lipschitz")
        and any(isinstance(c, ast.Constant) and isinstance(c.value, str) for c in node.comparators)
    ]
    assert not offenders, offenders


def test_loss_arch_and_data_names_are_one_list_each():
    from ganctl import config, models
    from ganctl.data import toy
    from ganctl.methods import losses

    assert tuple(losses.available_losses()) == config.LOSSES
    assert tuple(models.available_archs()) == config.ARCHS
    assert tuple(toy.available_datasets()) == config.POINT_DATA


def _calls(path: Path) -> list[tuple[str, ast.Call]]:
    """(enclosing function's qualified name, call) for every call in a file."""
    found: list[tuple[str, ast.Call]] = []

    def visit(node: ast.AST, scope: list[str]) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                visit(child, [*scope, child.name])
            else:
                if isinstance(child, ast.Call):
                    found.append((".".join(scope), child))
                visit(child, scope)

    visit(ast.parse(path.read_text(encoding="utf-8")), [])
    return found


# Where a config enters ganctl and is resolved, once (docs/design.md, "Settings").
RESOLVE_ENTRIES = {"training.loop._train", "training.state.resume", "fleet.jobs.job_config", "nets.checkpoint.load"}


def test_the_config_is_resolved_only_where_a_run_enters():
    sites = {
        f"{module_name(path)}.{scope}"
        for path in SRC.rglob("*.py")
        for scope, call in _calls(path)
        if (isinstance(call.func, ast.Name) and call.func.id == "resolve")
        or (isinstance(call.func, ast.Attribute) and call.func.attr == "resolve" and "recipes" in ast.unparse(call))
    }
    assert sites == RESOLVE_ENTRIES


def test_trainers_jobs_and_checkpoints_carry_the_resolved_config(tmp_path):
    import pytest

    from ganctl.config import ResolvedConfig
    from ganctl.errors import ConfigError
    from ganctl.fleet import jobs
    from ganctl.training.engine import Trainer

    with pytest.raises(ConfigError, match="resolved config"):
        Trainer(TrainConfig(steps=1))
    (job,) = jobs.plan({"steps": 1}, ["sn"], [0], tmp_path)
    assert isinstance(job.config, ResolvedConfig) and job.config.loss == "hinge"
    ganctl.train(TrainConfig(steps=1, width=8, depth=1, eval_samples=100, device="cpu"), tmp_path / "run")
    assert isinstance(ganctl.load(tmp_path / "run").cfg, ResolvedConfig)


def _sources(tmp_path: Path) -> list:
    import numpy as np
    from PIL import Image

    from ganctl.data import builtin_names, load_dataset

    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(3):
        Image.new("RGB", (16, 16), (40 * i, 0, 0)).save(folder / f"{i}.png")
    np.save(tmp_path / "a.npy", np.zeros((4, 16, 16, 3), dtype=np.uint8))
    names = [*builtin_names(), str(folder), str(tmp_path / "a.npy")]
    return [load_dataset(TrainConfig(data=name)) for name in names]


def _protocol_members() -> list[str]:
    from ganctl.data import DataSource

    declared = [
        k for k, v in vars(DataSource).items() if not k.startswith("_") and (callable(v) or isinstance(v, property))
    ]
    return [*DataSource.__annotations__, *declared]


def test_every_data_source_implements_the_protocol(tmp_path):
    import torch

    from ganctl.data import Classes, DataSource, Judge, Mixture

    members = _protocol_members()
    for source in _sources(tmp_path):
        assert isinstance(source, DataSource), source.name
        assert all(hasattr(source, m) for m in members)
        assert source.kind in ("points", "images")
        assert source.length is None or source.length == len(source) > 0
        assert source.mixture is None or isinstance(source.mixture, Mixture)
        assert source.judge is None or isinstance(source.judge, Judge)
        assert source.classes is None or isinstance(source.classes, Classes)
        assert isinstance(source.skipped, tuple) and isinstance(source.fingerprint(), str)
        g = torch.Generator().manual_seed(0)
        batch = source.sample(3, g, "cpu")
        chunks = list(source.chunks(5, g, 2))
        assert tuple(batch.shape) == (3, *source.shape) and [len(c) for c in chunks][-1] in (1, 2)
        moved = source.to(torch.device("cpu"))
        assert isinstance(moved, DataSource) and moved.shape == source.shape
        a, b = (s.sample(4, torch.Generator().manual_seed(1), "cpu") for s in (source, moved))
        assert torch.equal(a, b)  # the same samples from the same stream


def test_no_data_capability_is_probed_outside_data():

    capabilities = set(_protocol_members()) | {"images", "centres", "std", "quality"}
    probes = [
        f"{module_name(path)}.{scope}: {ast.unparse(call)}"
        for path in SRC.rglob("*.py")
        if "data" not in path.relative_to(SRC).parts
        for scope, call in _calls(path)
        if isinstance(call.func, ast.Name)
        and call.func.id in ("getattr", "hasattr")
        and len(call.args) >= 2
        and isinstance(call.args[1], ast.Constant)
        and call.args[1].value in capabilities
    ]
    assert not probes, probes


def test_no_class_is_longer_than_250_lines():
    """A class that grows past a screenful of screens is doing several jobs (the Trainer once did six)."""
    offenders = [
        f"{module_name(path)}.{node.name}: {node.end_lineno - node.lineno + 1} lines"
        for path in SRC.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 > 250
    ]
    assert not offenders, offenders


def test_no_library_function_is_long_or_takes_many_parameters():
    """Bodies of at most 60 lines and at most 8 parameters (docs/design.md); a command's own
    function declares its options and is exempt from the count of parameters, and so is the
    public call it makes (`ganctl.__all__`), whose options are its command's, keyword-only."""
    public = set(ganctl.__all__)
    offenders = []
    for path in SRC.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        commands = {  # functions made commands by handle_errors(...) or with_settings(...)
            arg.id
            for call in ast.walk(tree)
            if isinstance(call, ast.Call) and getattr(call.func, "id", None) in ("handle_errors", "with_settings")
            for arg in call.args
            if isinstance(arg, ast.Name)
        }
        for node in ast.walk(tree):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            body = node.body[1:] if ast.get_docstring(node) is not None else node.body
            lines = body[-1].end_lineno - body[0].lineno + 1 if body else 0
            a = node.args
            params = [p.arg for p in a.posonlyargs + a.args + a.kwonlyargs if p.arg not in ("self", "cls")]
            command = path.parent.name == "cli" and (
                node.name in commands
                or any(isinstance(d, ast.Name) and d.id == "handle_errors" for d in node.decorator_list)
            )
            positional = [p.arg for p in a.posonlyargs + a.args if p.arg not in ("self", "cls")]
            call = node.name in public and len(positional) <= 2  # its options keyword-only
            if lines > 60 or (len(params) > 8 and not command and not call):
                offenders.append(f"{module_name(path)}.{node.name}: {lines} lines, {len(params)} parameters")
    assert not offenders, offenders
