"""Load track 3's reference scripts (../shared/reference/modded-nanogpt/, the file each track-3 experiment's
reference: block names) for comparison.

The scripts train at import (they start torch.distributed and read data/ at the top level), so
nothing is imported: the file is parsed with `ast`, and only its imports, functions and classes
are executed (`torch.compile` decorators dropped: eager on CPU), after the script's own constants: the
top-level UPPER_CASE assignments before its setup section (which starts at `train_steps = N`), and past it
those of a plain number or string (#46's defaults read them at def time, e.g. `beta2=SOAP_BETA2`, and its
momentum schedule's _MU_* sit in its setup section); `args.seed` stands for `--seed`. `setup(...)` then runs the
script's own hyperparameter section (from `train_steps = N` through `def set_hparams`: its init
loop, its optimizers, their groups and its schedule) against a model we hand it, with a
single-process stand-in for torch.distributed. Nothing here runs when ../shared is absent.

`script_definitions(file, seed)` / `script_setup(file, ...)` do the same for a script named by file;
`script_loop(file, scope, steps, at_step)` runs its training loop over chosen steps.
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
BEST46 = "track3_best46_cwd_rowfloor_tailema.py"  # track-3 result #46 (2690 steps)
needs_best46 = pytest.mark.skipif(not (REF_DIR / BEST46).is_file(), reason=f"../shared {BEST46} not present")
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

    @staticmethod
    def barrier() -> None:
        pass


def _is_compile(decorator: ast.expr) -> bool:
    return isinstance(decorator, ast.Attribute) and decorator.attr == "compile"


def _tree(experiment: str) -> ast.Module:
    return _file_tree(SCRIPTS[experiment])


def _file_tree(file: str) -> ast.Module:
    path = REF_DIR / file
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _is_constant(node: ast.stmt, literal: bool = False) -> bool:
    """A top-level `NAME = ...` with every target an UPPER_CASE name (the script's settings); with
    `literal`, of a plain number or string."""
    return (isinstance(node, ast.Assign) and all(isinstance(t, ast.Name) and t.id.isupper() for t in node.targets)
            and (not literal or isinstance(node.value, ast.Constant)))


def _definitions(tree: ast.Module, file: str, constants: bool, ns: dict) -> dict:
    keep, setup_started = [], False
    for node in tree.body:
        # The setup section (from `train_steps = N`) has its own UPPER_CASE names, run by `setup`.
        setup_started = setup_started or (isinstance(node, ast.Assign) and any(
            getattr(t, "id", None) == "train_steps" for t in node.targets))
        # Constants: every one before the setup section; past it only plain literals (helpers such as
        # #46's momentum-schedule constants sit between its defs and read them at call time).
        if isinstance(node, (ast.Import, ast.ImportFrom)) or (
                constants and _is_constant(node, literal=setup_started)):
            keep.append(node)
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            node.decorator_list = [d for d in node.decorator_list if not _is_compile(d)]
            keep.append(node)
    exec(compile(ast.Module(body=keep, type_ignores=[]), file, "exec"), ns)
    ns["dist"] = World1
    return ns


def definitions(experiment: str, seed: int = 0) -> dict:
    """Namespace holding the script's imports, constants, functions and classes (GPT, Muon, ...).
    seed: the script's --seed (#46 reads it into SEED)."""
    return _definitions(_tree(experiment), SCRIPTS[experiment], True,
                        {"__name__": f"reference_{experiment}", "args": SimpleNamespace(seed=seed)})


def script_definitions(file: str, seed: int = 0) -> dict:
    """`definitions` for a script named by file (e.g. BEST46), with its UPPER_CASE constants (SEED = seed)."""
    return _definitions(_file_tree(file), file, True, {"__name__": "reference_" + file.removesuffix(".py"),
                                                        "args": SimpleNamespace(seed=seed)})


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
    return _setup(_tree(experiment), SCRIPTS[experiment], ns, model, fused)


def script_setup(file: str, ns: dict, model: torch.nn.Module, fused: bool = False) -> dict:
    """`setup` for a script named by file (its namespace from script_definitions)."""
    return _setup(_file_tree(file), file, ns, model, fused)


def _setup(tree: ast.Module, file: str, ns: dict, model: torch.nn.Module, fused: bool) -> dict:
    scope = dict(ns, model=model)
    if not fused:
        scope["AdamW"] = lambda params, **kw: torch.optim.AdamW(params, **{**kw, "fused": False})
    body = _setup_statements(tree)
    exec(compile(ast.Module(body=body, type_ignores=[]), file, "exec"), scope)
    return scope


def script_loop(file: str, scope: dict, steps: list[int], at_step) -> None:
    """Run the script's own training loop (and the statements between its setup section and it) in `scope` (from
    script_setup, plus the loop's inputs: train_loader, val_inputs, val_targets, val_tokens, mbs, print0), over
    `steps` instead of range(train_steps + 1); `at_step(step)` is called first in every iteration (e.g. to set
    the optimizers' step counters to a pretend step)."""
    tree = _file_tree(file)
    end = next(i for i, s in enumerate(tree.body) if isinstance(s, ast.FunctionDef) and s.name == "set_hparams")
    loop_at = next(i for i, s in enumerate(tree.body)
                   if isinstance(s, ast.For) and getattr(s.target, "id", None) == "step")
    loop = tree.body[loop_at]
    loop.iter = ast.Name("_steps", ast.Load())
    loop.body.insert(0, ast.Expr(ast.Call(ast.Name("_at_step", ast.Load()), [ast.Name("step", ast.Load())], [])))
    body = ast.fix_missing_locations(ast.Module(body=tree.body[end + 1:loop_at + 1], type_ignores=[]))
    scope.update(_steps=list(steps), _at_step=at_step)
    exec(compile(body, file, "exec"), scope)


def script_val_steps(file: str, train_steps: int, stop_step: int) -> set[int]:
    """The steps the script validates at over a run of `train_steps` stopped after `stop_step`: its own
    `should_validate` expression and constants (extra_val_steps, val_regular_interval), for every step."""
    tree = _file_tree(file)
    names = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name) and \
                node.targets[0].id in ("extra_val_steps", "val_regular_interval"):
            names[node.targets[0].id] = ast.literal_eval(node.value)
    loop = next(n for n in tree.body if isinstance(n, ast.For) and getattr(n.target, "id", None) == "step")
    rule = next(s for s in loop.body if isinstance(s, ast.Assign) and s.targets[0].id == "should_validate")
    expr = compile(ast.Expression(rule.value), file, "eval")
    return {s for s in range(stop_step + 1)
            if eval(expr, {**names, "step": s, "train_steps": train_steps, "STOP_STEP": stop_step})}


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
