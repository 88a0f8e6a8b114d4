"""Optimizers, routed by parameter role (see roles.py); this package never imports the model.

To know what update a parameter gets: its role's row in the routing table (optim/roles.py), then that
map's module (optim/maps/linear.py, embed.py, adam.py), whose `direction` is the whole rule, and the
stages that are on (optim/stages/). Public pieces: `orthogonalize` (Newton-Schulz), the maps
`LinearMap`, `EmbedMap`, `AdamMap`, the role-routed `HybridOptimizer` (optim/hybrid.py), the optimizer
registry `OPTIMIZERS` (optim/registry.py: name -> schema + builder) and `build_optimizer`, which the
trainer calls with `cfg.optim`.
"""
from __future__ import annotations

from optim.hybrid import HybridOptimizer, build_hybrid
from optim.maps import AdamMap, EmbedMap, LinearMap
from optim.newton_schulz import orthogonalize
from optim.registry import OPTIMIZERS, build_optimizer

__all__ = ["orthogonalize", "LinearMap", "EmbedMap", "AdamMap", "HybridOptimizer", "build_hybrid", "build_optimizer",
           "OPTIMIZERS"]
