"""Duality maps, one per kind of module (Bernstein & Newhouse, "Modular Duality in Deep Learning",
arXiv 2410.21265; docs/optimizer.md). Each map owns its norm, its dual norm, its state and the full
update rule of a parameter (`direction`), readable top to bottom in its module:

| map    | module (roles, optim/roles.py)               | norm on W                        | dualize(G)               |
|--------|----------------------------------------------|----------------------------------|--------------------------|
| linear | hidden matrices [d_out, d_in] (linear.py)     | RMS->RMS: sqrt(d_in/d_out) spec. | sqrt(d_out/d_in) U V^T   |
| embed  | embedding tables [vocab, d] (embed.py)        | l1->RMS: max_j rms(W_j)          | each row g_j / rms(g_j)  |
| adam   | gains, biases, scalars, the head (adam.py)    | (none: elementwise)              | Adam's m_hat/(sqrt(v_hat)+eps) |

A gradient is a linear functional on weight space; dualize(G) = argmax_{||T|| = 1} <G, T> is the
unit-norm direction it most increases, so <G, dualize(G)> = ||G||_dual. Which map a role gets is the
routing table in optim/roles.py; HybridOptimizer (optim/hybrid.py) applies p <- p (1 - lr wd) - lr d.
"""
from optim.maps.adam import AdamMap, adam_direction
from optim.maps.embed import EmbedMap
from optim.maps.linear import SCALES, LinearMap, exact_polar, linear_scale

MAPS = {"linear": LinearMap, "embed": EmbedMap, "adam": AdamMap}

__all__ = ["MAPS", "LinearMap", "EmbedMap", "AdamMap", "SCALES", "adam_direction", "exact_polar", "linear_scale"]
