"""Optimizers, routed by parameter role (see roles.py); this package never imports the model.

To know what update a parameter gets: its role's row in the routing table (optim/roles.py), then that
map's module (optim/maps/linear.py, embed.py, adam.py), whose `direction` is the whole rule. Public
pieces: `orthogonalize` (Newton-Schulz), the maps `LinearMap`, `EmbedMap`, `AdamMap`, the role-routed
`HybridOptimizer` (optim/hybrid.py) and `build_optimizer`, which the trainer calls with `cfg.optim`.
"""
from __future__ import annotations

from typing import Any, Callable

import torch

from optim.adamw import build_adamw
from optim.hybrid import HybridOptimizer, build_hybrid
from optim.maps import AdamMap, EmbedMap, LinearMap
from optim.newton_schulz import orthogonalize
from optim.roles import check_roles

# optim=muon and optim=dual are two configurations of the same role-routed optimizer.
OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "adamw": build_adamw, "muon": build_hybrid, "dual": build_hybrid}

__all__ = ["orthogonalize", "LinearMap", "EmbedMap", "AdamMap", "HybridOptimizer", "build_hybrid", "build_optimizer",
           "OPTIMIZERS"]


def build_optimizer(cfg: Any, named_params: list[tuple[str, torch.nn.Parameter]],
                    roles: dict[str, str]) -> torch.optim.Optimizer:
    """Build the optimizer named by `cfg.name` over `named_params`, using each parameter's role.

    Every param group carries `initial_lr`; the trainer sets `lr = initial_lr * schedule(step)`.
    """
    check_roles(roles)
    missing = [n for n, _ in named_params if n not in roles]
    if missing:
        raise ValueError(f"parameters without a role: {missing[:5]}")
    if cfg.name not in OPTIMIZERS:
        raise ValueError(f"optim.name={cfg.name!r} is not a known optimizer; choose one of {sorted(OPTIMIZERS)}")
    return OPTIMIZERS[cfg.name](cfg, named_params, roles)
