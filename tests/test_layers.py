"""The package's imports run downward only, never in a circle, and never into another package's private modules.

Every import in zrcore counts, those inside functions included (they run, only later). The layers, lowest first; a
module may import its own layer and the layers below it:

    0  zrcore._C (compiled), _checks, _log, _renamed, bins, seeding, sharding    shared policies and helpers
    1  zrcore.ops, zrcore.metrics, zrcore.bootstrap                      kernels, metrics and their intervals
    2  zrcore.losses                                                     the method's losses
    3  zrcore.data                                                       records, synthetic and real data
    4  zrcore.models                                                     reward models, rollouts
    5  zrcore.diffusion                                                  generators, samplers
    6  zrcore.integrations                                               HF Trainer, TRL, diffusion loops
    7  zrcore.training                                                   the shared loop and its recipes' trainers
    8  zrcore.cli, zrcore (the package's own __init__)                   entry points
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import zrcore

ROOT = Path(zrcore.__file__).parent
COMPILED = ("zrcore._C",)  # built from csrc/: imports nothing of the package
LAYERS = (
    ("zrcore._C", "zrcore._checks", "zrcore._log", "zrcore._renamed", "zrcore.bins", "zrcore.seeding", "zrcore.sharding"),
    ("zrcore.ops", "zrcore.metrics", "zrcore.bootstrap"),
    ("zrcore.losses",),
    ("zrcore.data",),
    ("zrcore.models",),
    ("zrcore.diffusion",),
    ("zrcore.integrations",),
    ("zrcore.training",),
    ("zrcore.cli", "zrcore"),
)


def module_files() -> dict[str, Path]:
    """module name -> file, for every .py file of the package."""
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out | {name: None for name in COMPILED}


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The zrcore modules ``name`` imports anywhere in its file (``from pkg import sub`` counts as pkg.sub when sub
    is a module)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:  # "zrcore.ops.x.y" -> the module that holds it
                target = target.rpartition(".")[0]
            if target.startswith("zrcore") and target != name:
                found.add(target)
    return found


def layer_of(name: str) -> int:
    best, rank = "", None
    for i, names in enumerate(LAYERS):
        for prefix in names:
            if (name == prefix or name.startswith(prefix + ".")) and len(prefix) > len(best):
                best, rank = prefix, i
    if rank is None:
        raise AssertionError(f"{name} is in no layer: add it to LAYERS in {__file__}")
    return rank


def import_graph() -> dict[str, set[str]]:
    modules = module_files()
    return {name: imports_of(name, path, modules) if path else set() for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def upward(graph: dict[str, set[str]]) -> list[str]:
    return [f"{a} (layer {layer_of(a)}) imports {b} (layer {layer_of(b)})"
            for a, targets in sorted(graph.items()) for b in sorted(targets) if layer_of(b) > layer_of(a)]


def test_every_module_has_a_layer():
    for name in module_files():
        layer_of(name)


def test_no_import_circle():
    assert cycles(import_graph()) == []


def test_imports_run_downward_only():
    assert upward(import_graph()) == []


def private_reaches(graph: dict[str, set[str]]) -> list[str]:
    """Imports of a private module (``pkg._x``) from outside its package ``pkg``."""
    out = []
    for a, targets in sorted(graph.items()):
        for b in sorted(targets):
            package, _, last = b.rpartition(".")
            if last.startswith("_") and not last.startswith("__") and not (a == package or a.startswith(package + ".")):
                out.append(f"{a} imports {b}, private to {package}")
    return out


def test_private_modules_stay_in_their_package():
    assert private_reaches(import_graph()) == []


def test_the_checks_catch_a_circle_and_an_upward_import(tmp_path):
    """The two checks on a made-up graph: they are not vacuous."""
    graph = {"zrcore.training.a": {"zrcore.training.b"}, "zrcore.training.b": {"zrcore.training.a"},
             "zrcore.models.m": {"zrcore.training.a"}, "zrcore.bins": set()}
    assert cycles(graph) == [["zrcore.training.a", "zrcore.training.b"]]
    assert upward(graph) == ["zrcore.models.m (layer 4) imports zrcore.training.a (layer 7)"]
    assert private_reaches({"zrcore.models.m": {"zrcore.ops._dispatch", "zrcore._checks"}}) == [
        "zrcore.models.m imports zrcore.ops._dispatch, private to zrcore.ops"]


def test_function_level_and_relative_imports_count(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("def f():\n    from zrcore.training import loop\n    from . import x\n    import zrcore.ops.pairwise_gap\n")
    modules = {"zrcore.training.loop": None, "zrcore.models.x": None, "zrcore.ops.pairwise_gap": None,
               "zrcore.ops": None, "zrcore.models.m": src}
    assert imports_of("zrcore.models.m", src, modules) == {"zrcore.training.loop", "zrcore.models.x",
                                                          "zrcore.ops.pairwise_gap"}


@pytest.mark.parametrize("name", ["zrcore.models.reward_model", "zrcore.data.synthetic", "zrcore.training.pretrain",
                                  "zrcore.diffusion.fused"])
def test_the_known_offenders_are_clean(name):
    """The modules that once imported upward or in a circle."""
    graph = import_graph()
    assert all(layer_of(t) <= layer_of(name) for t in graph[name])


def test_no_two_public_classes_share_a_name():
    import importlib
    import inspect

    seen: dict[str, str] = {}
    clashes = []
    for name in module_files():
        if name in COMPILED:
            continue
        module = importlib.import_module(name)
        for attr, obj in vars(module).items():
            if inspect.isclass(obj) and obj.__module__ == name and not attr.startswith("_"):
                if attr in seen and seen[attr] != name:
                    clashes.append(f"{attr}: {seen[attr]} and {name}")
                seen.setdefault(attr, name)
    assert clashes == []


def test_no_module_is_named_like_a_standard_or_sibling_package():
    import sys

    siblings = {name.split(".")[1] for name in module_files() if name.count(".") == 1}
    fixed = {"zrcore.integrations.diffusion"}  # the diffusion-loop entry point, named so by the design contract
    clashes = [name for name in module_files() if name.count(".") >= 2 and name not in fixed
               and (name.rpartition(".")[2] in sys.stdlib_module_names or name.rpartition(".")[2] in siblings)]
    assert clashes == []


def test_old_class_names_still_work_with_a_warning():
    from zrcore.training import config, gdso

    with pytest.warns(FutureWarning, match="renamed GDSOTeacherConfig"):
        assert config.GDSOConfig is config.GDSOTeacherConfig
    with pytest.warns(FutureWarning, match="renamed GDSOTeacherTrainer"):
        assert gdso.GDSOTrainer is gdso.GDSOTeacherTrainer
