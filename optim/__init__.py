"""Optimizers: duality maps per parameter role, the hybrid optimizer, Muon and AdamW baselines."""
from optim.duality import adam_direction, dualize_embed, dualize_linear, exact_polar, linear_scale
from optim.hybrid import HybridOptimizer, build_hybrid
from optim.newton_schulz import orthogonalize

__all__ = ["orthogonalize", "dualize_linear", "dualize_embed", "adam_direction", "exact_polar", "linear_scale",
           "HybridOptimizer", "build_hybrid"]
