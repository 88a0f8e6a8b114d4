"""The optimizer registry: `optim.name` -> its config schema and its builder, listed once here.

Hydra stores each schema as `optim_<name>_schema` (harness/config/schema.py's register_configs), which
configs/optim/<preset>.yaml extends (`- /optim_<name>_schema@_here_`); the trainer's `build_optimizer`
calls the builder. Every schema has `name` (this registry's key) and `lr` (the base learning rate, scaled
each step by the trainer's schedule) and a `check()`; each optimizer's own keys are in its schema, so a
key that belongs to another optimizer is rejected at start. optim=muon and optim=dual are two
configurations of the same role-routed optimizer (optim/hybrid.py).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from optim.adamw import AdamWConfig, build_adamw
from optim.hybrid import build_hybrid
from optim.hybrid_config import DualConfig, MuonConfig
from optim.lookahead import wrap_lookahead
from optim.roles import check_roles

Builder = Callable[[Any, list, dict], torch.optim.Optimizer]  # (cfg, named_params, roles) -> optimizer


@dataclass(frozen=True)
class OptimizerEntry:
    schema: type      # the config dataclass (its defaults are the optimizer's)
    build: Builder


OPTIMIZERS: dict[str, OptimizerEntry] = {
    "adamw": OptimizerEntry(AdamWConfig, build_adamw),
    "muon": OptimizerEntry(MuonConfig, build_hybrid),
    "dual": OptimizerEntry(DualConfig, build_hybrid),
}


def schema_store_name(name: str) -> str:
    """The ConfigStore name of optimizer `name`'s schema, as configs/optim/*.yaml extend it."""
    return f"optim_{name}_schema"


def build_optimizer(cfg: Any, named_params: list[tuple[str, torch.nn.Parameter]],
                    roles: dict[str, str]) -> torch.optim.Optimizer:
    """Build the optimizer named by `cfg.name` over `named_params`, using each parameter's role.

    Every param group carries `initial_lr`; the trainer sets each group's lr from it (harness/loop/schedule.py).
    With optim.lookahead > 0 the optimizer comes wrapped in EMA-Nesterov (optim/lookahead.py), whose
    `pre_forward()` the trainer calls before each step's forward pass.
    """
    check_roles(roles)
    missing = [n for n, _ in named_params if n not in roles]
    if missing:
        raise ValueError(f"parameters without a role: {missing[:5]}")
    if cfg.name not in OPTIMIZERS:
        raise ValueError(f"optim.name={cfg.name!r} is not a known optimizer; choose one of {sorted(OPTIMIZERS)}")
    return wrap_lookahead(cfg, OPTIMIZERS[cfg.name].build(cfg, named_params, roles))
