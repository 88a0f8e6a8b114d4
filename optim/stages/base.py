"""What a stage is: an optional step of the hybrid optimizer's update, switched on by one config key.

A stage declares itself once, in its own module, as a `Stage`: its name (which is also its switch,
`optim.<name>=true`), the hook point it acts at, its further config keys with their defaults, its
checks and a `build(cfg)` that returns the function run at the hook (with the stage's settings read
from the config once, not every step). The registry (optim/stages/__init__.py) lists the stages; the
schema (optim/hybrid_config.py) gets their keys from it, and the optimizer (optim/hybrid.py,
optim/maps/linear.py) runs the active ones at their hook points, in registry order.

Hook points, in the order one step meets them, with the signature of the function `build` returns:

    before_ns    fn(u, ctx: MatrixContext) -> u'    per linear-map weight: the Newton-Schulz input
                                                    [..., rows, cols] (leading dim: a fused weight's
                                                    blocks), fp32. Runs on EVERY rank for every weight
                                                    when a before_ns stage is on (each rank then keeps
                                                    only its share's inputs), so a stage's state is
                                                    complete everywhere, as the maps' is. u may be the
                                                    momentum buffer itself (optim.nesterov=false):
                                                    return a new tensor.
    after_ns     fn(d, ctx: MatrixContext) -> d'    per linear-map weight, every rank: d = scale * U V^T
                                                    [..., rows, cols], fp32 (the duality map's output),
                                                    or bf16 with optim.update_bf16: a stage returns d's
                                                    dtype to keep that rounding (#46's bf16 update).
    layer_rates  fn(ctx: StepContext) -> {param: m} every rank, once per step, after every direction is
                                                    known: a 0-dim factor m per layer (linear and embed
                                                    maps) multiplying its rate and decay; the factors of
                                                    several stages multiply.
    around_step  fn(p, d, lr) -> after()            per linear-map weight, every rank, at the step: called
                                                    before p <- p (1 - lr wd) - lr d (p: the pre-step
                                                    weight, d: the final direction, p's shape; lr: the
                                                    layer's rate), it returns a function run after that
                                                    step, in place on p. The befores run in registry
                                                    order, then the step, then the afters in registry
                                                    order (e.g. the radius pin, then #46's cautious decay).
    decay        fn(p, d, decay, lr) -> None        replaces the decoupled decay p <- p (1 - decay) (decay =
                                                    lr wd, a float or a 0-dim tensor; d: the direction,
                                                    p's shape; lr: the layer's rate, of the step p <- p -
                                                    lr d that follows) for every decayed parameter; in
                                                    place. At most one decay stage can be on.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional

import torch

HOOKS = ("before_ns", "after_ns", "layer_rates", "around_step", "decay")


@dataclass(frozen=True)
class Key:
    """A config key of a stage besides its switch: optim.<name>, its type and default (stated here only),
    and the range its value must lie in (one of RANGES, checked by optim/stages/__init__.py's check_stages
    whether or not the stage is on)."""
    name: str
    type: type
    default: Any
    doc: str
    range: Optional[str] = None


# Key.range -> its test; a value outside fails as `optim.<key>=<value> must be <range>`.
RANGES: dict[str, Callable[[Any], bool]] = {
    "in [0, 1)": lambda v: 0.0 <= v < 1.0,
    "> 0": lambda v: v > 0,
    ">= 0": lambda v: v >= 0,
}


@dataclass(frozen=True)
class Stage:
    """One stage (see the module docstring). `check(cfg)` raises ValueError naming the key; it runs whether
    or not the stage is on (its keys' ranges), so cross-field rules test `getattr(cfg, name)` themselves."""
    name: str
    hook: str
    doc: str
    build: Callable[[Any], Callable]
    keys: tuple[Key, ...] = ()
    check: Callable[[Any], None] | None = None

    def __post_init__(self):
        if self.hook not in HOOKS:
            raise ValueError(f"stage {self.name!r}: hook {self.hook!r} is not one of {HOOKS}")


@dataclass
class MatrixContext:
    """What a per-matrix stage (before_ns, after_ns) sees of its weight besides the tensor it transforms.

    state: the weight's optimizer state (a stage adds its own entries, e.g. "normuon_v"; they travel in
    state_dict()); role: the weight's role (optim/roles.py); scale: the linear map's factor for these
    matrices, so an exact scale * U V^T has Frobenius norm scale * sqrt(min(rows, cols)) per matrix;
    param: the weight W before this step ([d_out, d_in], not to be modified); grad: its raw gradient g
    (p.grad, p's shape); step: the 0-based optimizer step (steps taken before this one)."""
    state: dict
    role: str
    scale: float
    param: torch.Tensor | None = None
    grad: torch.Tensor | None = None
    step: int = 0


@dataclass
class StepContext:
    """What a layer_rates stage sees of one optimizer step, on every rank.

    states: the optimizer's state (param -> dict); linear: [(param, group)] of the linear-map weights and
    embed: [(param, group, direction)] of the embed-map tables, in the same order on every rank; mine:
    the indices into `linear` that this rank orthogonalizes (its Newton-Schulz share); world: the number
    of ranks; linear_map, embed_map: the map objects (their norms and noise samples); diag: a dict to add
    diagnostics to (name -> float or 0-dim tensor, read off the training clock), or None on other steps."""
    states: dict
    linear: list
    embed: list
    mine: list
    world: int
    linear_map: Any
    embed_map: Any
    diag: dict | None


def plain_decay_(p: torch.Tensor, d: torch.Tensor, decay: float | torch.Tensor, lr: float = 0.0) -> None:
    """The decoupled decay every decayed parameter gets when no decay stage is on: p <- p (1 - decay)."""
    p.mul_(1 - decay)
