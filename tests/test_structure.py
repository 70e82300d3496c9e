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

# The floors of docs/design.md, from the ground up. A module may import its own floor or below.
FLOORS = [
    {"errors", "streams", "config", "recipes", "metrics", "analysis.defaults"},
    {"fileio", "interrupts", "devices", "render", "penalties", "losses", "runfolder", "tensorboard"},
    {"data", "models", "lipschitz", "distributed", "fused_mlp"},
    {"networks", "checkpoint"},
    {"engine", "analysis", "evaluation", "sampling", "report"},
    {"training", "jobs", "compare", "tuning"},
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
    engine = (SRC / "engine.py").read_text(encoding="utf-8")
    private = set(re.findall(r"self\.(_[a-z][a-z0-9_]*)", engine))
    assert {"_fused_layers", "_critic_params"} <= private  # the scan sees what it must
    roots = [SRC, SRC.parent.parent / "benchmarks", SRC.parent.parent / "examples", Path(__file__).parent]
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


def test_every_method_is_one_registry_entry_with_its_strategy():
    import inspect

    from ganctl import lipschitz, recipes

    named = {name: lipschitz.strategy_class(name) for name in recipes.available_methods()}
    classes = {c for _, c in inspect.getmembers(lipschitz, inspect.isclass) if issubclass(c, lipschitz.Lipschitz)}
    concrete = {c for c in classes if not c.__name__.startswith("_")}
    assert set(named.values()) == concrete  # every strategy class serves a method, and every method has one
    for name, cls in named.items():
        assert cls(recipes.resolve(TrainConfig(lipschitz=name))).name == name
        assert recipes.search_space(name), f"{name} has no search space"


def test_loss_arch_and_data_names_are_one_list_each():
    from ganctl import config, losses, models
    from ganctl.data import toy

    assert tuple(losses.available_losses()) == config.LOSSES
    assert tuple(models.available_archs()) == config.ARCHS
    assert tuple(toy.available_datasets()) == config.POINT_DATA
