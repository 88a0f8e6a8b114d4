"""Load track 3's reference scripts (../shared/reference/modded-nanogpt/, the file each track-3 experiment's
reference: block names) for comparison.

The scripts train at import (they start torch.distributed and read data/ at the top level), so
nothing is imported: the file is parsed with `ast`, and only its imports, module-level constants
(UPPER_CASE assignments: #46's defaults read them at def time, and its `SEED = args.seed` gets the
seed asked for), functions and classes are executed (`torch.compile` decorators dropped: eager on CPU). `setup(...)` then runs the
script's own hyperparameter section (from `train_steps = N` through `def set_hparams`: its init
loop, its optimizers, their groups and its schedule) against a model we hand it, with a
single-process stand-in for torch.distributed. Nothing here runs when ../shared is absent.
"""
from __future__ import annotations

import ast
from types import SimpleNamespace

import pytest
import torch

from analysis.records import experiments_with_reference, reference_of
from tests.conftest import SHARED

REF_DIR = SHARED / "reference" / "modded-nanogpt"
SCRIPTS = {e: reference_of(e).script for e in experiments_with_reference(track=3)}  # experiment -> file name
# Result #46's pieces are tested before its experiment file exists; that file's reference: block names the same script.
SCRIPTS.setdefault("track3_best46", "track3_best46_cwd_rowfloor_tailema.py")
needs_reference = pytest.mark.skipif(not all((REF_DIR / f).is_file() for f in SCRIPTS.values()),
                                     reason="../shared track-3 reference scripts not present")


class World1:
    """torch.distributed for one process: rank 0 of 1; collectives leave tensors as they are."""

    class ReduceOp:
        SUM = "sum"

    @staticmethod
    def get_world_size() -> int:
        return 1

    @staticmethod
    def get_rank() -> int:
        return 0

    @staticmethod
    def all_gather(outputs: list, tensor: torch.Tensor) -> None:
        outputs[0].copy_(tensor)

    @staticmethod
    def broadcast(tensor: torch.Tensor, src: int) -> None:
        pass

    @staticmethod
    def all_reduce(tensor: torch.Tensor, op=None) -> None:
        pass


def _is_compile(decorator: ast.expr) -> bool:
    return isinstance(decorator, ast.Attribute) and decorator.attr == "compile"


def _tree(experiment: str) -> ast.Module:
    path = REF_DIR / SCRIPTS[experiment]
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _is_constant(node: ast.stmt) -> bool:
    """`NAME = ...` with an UPPER_CASE name: the scripts' hyperparameter constants (only those above the first
    function or class count: the setup section's own, which read the model, run with setup())."""
    return isinstance(node, ast.Assign) and all(isinstance(t, ast.Name) and t.id.isupper() for t in node.targets)


def definitions(experiment: str, seed: int = 0) -> dict:
    """Namespace holding the script's imports, constants, functions and classes (GPT, Muon, ...).
    seed: the script's --seed (#46 reads it into SEED)."""
    tree = _tree(experiment)
    keep = []
    defs_seen = False
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)) or (_is_constant(node) and not defs_seen):
            keep.append(node)
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            defs_seen = True
            node.decorator_list = [d for d in node.decorator_list if not _is_compile(d)]
            keep.append(node)
    ns: dict = {"__name__": f"reference_{experiment}", "args": SimpleNamespace(seed=seed)}
    exec(compile(ast.Module(body=keep, type_ignores=[]), SCRIPTS[experiment], "exec"), ns)
    ns["dist"] = World1
    return ns


def _setup_statements(tree: ast.Module) -> list[ast.stmt]:
    """From `train_steps = N` through `def set_hparams`, in whichever body holds them (the muon
    script nests its hyperparameters in a `for _ in range(num_trials)` loop)."""
    bodies = [tree.body] + [n.body for n in ast.walk(tree) if isinstance(n, ast.For)]
    for body in bodies:
        start = next((i for i, s in enumerate(body) if isinstance(s, ast.Assign)
                      and any(getattr(t, "id", None) == "train_steps" for t in s.targets)), None)
        end = next((i for i, s in enumerate(body) if isinstance(s, ast.FunctionDef) and s.name == "set_hparams"), None)
        if start is not None and end is not None:
            return body[start:end + 1]
    raise AssertionError("the reference script's hyperparameter section (train_steps ... set_hparams) was not found")


def setup(experiment: str, ns: dict, model: torch.nn.Module, fused: bool = True) -> dict:
    """Run the script's init + optimizer + schedule section on `model` (the script's GPT class).

    Returns the namespace: train_steps, optimizers, set_hparams(step), and the initialized model.
    fused=False swaps the script's fused AdamW for the plain one (meta-device models)."""
    scope = dict(ns, model=model)
    if not fused:
        scope["AdamW"] = lambda params, **kw: torch.optim.AdamW(params, **{**kw, "fused": False})
    body = _setup_statements(_tree(experiment))
    exec(compile(ast.Module(body=body, type_ignores=[]), SCRIPTS[experiment], "exec"), scope)
    return scope


def our_name(ref_name: str) -> str:
    """The script's parameter name -> ours (model/gpt.py): the script calls its head `proj` and its
    norms' weights `gains`; its embedding norm is `norm1`, the final one `norm2`."""
    parts = ref_name.replace(".gains", ".weight").split(".")
    if parts[0] == "embed":
        return "wte." + parts[1]
    if parts[0] == "proj":
        return "lm_head." + parts[1]
    if parts[0] in ("norm1", "norm2"):
        return {"norm1": "ln_e", "norm2": "ln_f"}[parts[0]] + "." + parts[1]
    if parts[0] == "blocks" and parts[2] in ("norm1", "norm2"):
        parts[2] = {"norm1": "ln_1", "norm2": "ln_2"}[parts[2]]
    return ".".join(parts)


def load_reference_weights(ours: torch.nn.Module, ref: torch.nn.Module) -> None:
    """Copy every parameter of the script's model into ours (shapes must agree)."""
    mine = dict(ours.named_parameters())
    with torch.no_grad():
        for name, p in ref.named_parameters():
            target = mine[our_name(name)]
            assert target.shape == p.shape, (name, target.shape, p.shape)
            target.copy_(p.to(target.dtype))
