"""The layout's one rule: imports run downward (README.md, 'Layout'), and no module imports itself back.

Layers, top to bottom; a module may import its own package and any package below its layer, never one
above (a package of the same layer is a sibling: not imported either, so siblings stay independent):

    benchmarks   (they drive train.py's train() to time it)
    train.py  tools  evals
    inference
    harness      (inside: supervisor > checkpoint > telemetry > loop > process > config)
    analysis
    data  model  optim
    common

Every import counts, at module level or inside a function (a lazy import is still a dependency).
The check reads the source (ast), so it needs no import of torch or the packages themselves.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO

LAYERS = [["benchmarks"], ["train", "tools", "evals"], ["inference"], ["harness"], ["analysis"],
          ["data", "model", "optim"], ["common"]]
HARNESS = ["supervisor", "checkpoint", "telemetry", "loop", "process", "config"]  # harness's own order, top first
# scripts/: only the moved-command finder (scripts/__init__.py), which imports common
EXTRA = {"scripts": len(LAYERS) - 2}
LEVEL = {pkg: i for i, layer in enumerate(LAYERS) for pkg in layer} | EXTRA


def product_modules() -> dict[str, Path]:
    """Dotted module name -> file, for every product module (tests and outputs left out)."""
    out = {"train": REPO / "train.py"}
    for pkg in LEVEL:
        folder = REPO / pkg
        if not folder.is_dir():
            continue
        for path in folder.rglob("*.py"):
            parts = path.relative_to(REPO).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The product modules `name` imports (`from pkg import mod` resolved to pkg.mod when that is a module)."""
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # a name inside a module: the module
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def graph() -> dict[str, set[str]]:
    modules = product_modules()
    return {name: imports_of(name, path, set(modules)) for name, path in modules.items()}


def rank(module: str) -> tuple[int, int]:
    """(layer, position inside harness): smaller is higher up."""
    top = module.split(".")[0]
    inner = HARNESS.index(module.split(".")[1]) if top == "harness" and module.count(".") >= 1 else -1
    return LEVEL[top], inner


def upward(importer: str, imported: str) -> bool:
    a, b = importer.split(".")[0], imported.split(".")[0]
    if a == b:  # inside one package: only harness has an order of sub-packages
        if a != "harness" or importer.count(".") < 1 or imported.count(".") < 1:
            return False
        return rank(imported)[1] < rank(importer)[1]
    return LEVEL[b] <= LEVEL[a]  # the same layer (a sibling) or above


def test_every_package_is_in_the_layer_table():
    tops = {p.name for p in REPO.iterdir() if (p / "__init__.py").exists() and p.name != "tests"}
    assert tops <= set(LEVEL), f"packages missing from the layer table: {sorted(tops - set(LEVEL))}"
    harness_subs = {p.name for p in (REPO / "harness").iterdir() if (p / "__init__.py").exists() or p.suffix == ".py"}
    assert {s.removesuffix(".py") for s in harness_subs} - {"__init__"} <= set(HARNESS)


def test_imports_run_downward():
    bad = sorted(f"{a} imports {b}" for a, deps in graph().items() for b in deps if upward(a, b))
    assert not bad, "upward or sideways imports:\n" + "\n".join(bad)


def test_no_import_cycle():
    g = graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for dep in sorted(g[node]):
            if state.get(dep) == 1:
                return path[path.index(dep):] + [dep]
            if dep not in state and (cycle := visit(dep)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(g):
        if node not in state and (cycle := visit(node)):
            pytest.fail("import cycle: " + " -> ".join(cycle))


def test_the_check_sees_an_upward_import(tmp_path):
    """The checker itself: a data module importing harness, and a harness.config module importing
    harness.checkpoint, are both caught; a downward one is not."""
    assert upward("data.loader", "harness.process.distributed")
    assert upward("harness.config.schema", "harness.checkpoint.run_dir")
    assert upward("tools.describe", "evals.hellaswag")  # siblings stay independent
    assert upward("train", "benchmarks.overhead") and not upward("benchmarks.overhead", "train")
    assert not upward("harness.checkpoint.checkpointer", "harness.process.distributed")
    assert not upward("train", "harness.supervisor") and not upward("model.config", "common.tokens")
    mod = tmp_path / "m.py"
    mod.write_text("from harness.process import distributed as D\ndef f():\n    import analysis.curves\n")
    assert imports_of("data.m", mod, {"harness.process", "harness.process.distributed", "analysis.curves"}) == {
        "harness.process.distributed", "analysis.curves"}
