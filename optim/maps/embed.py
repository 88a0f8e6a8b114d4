"""The embed map: the update of an embedding table (roles embed, pos_embed, value_embed; a tied table
with optim.tied_map=embed). A table W [vocab, d] is read by one-hot inputs, so each token's row is
its own small layer. What it gets, in order:

    buf <- beta buf + (1 - beta) g,  u = (1 - beta) g + beta buf    momentum -> Nesterov (maps/momentum.py)
    d_j = u_j / max(rms(u_j), eps * max_k rms(u_k))                each token row j to unit RMS (zero rows stay 0)
    p <- p (1 - lr wd) - lr d          applied by HybridOptimizer, with the layer_rates and decay stages that are
                                       on (optim/stages/: optim.lanton's per-layer factor, optim.cautious_wd)

The norm and its dual, for W, G [vocab, d]:

    ||W||   = max_j rms(W_j)               (l1->RMS: the most any one-hot input can move the output)
    ||G||_* = sqrt(d) * sum_j ||g_j||_2    and <G, dualize(G)> = ||G||_* (with eps = 0).

eps (optim.embed_eps) is a relative floor: with momentum, a token seen once long ago keeps a tiny
nonzero row, which the plain map would blow up to a full unit-RMS step; below eps times the largest
row RMS a row is damped in proportion to its size instead. Relative, so the map stays invariant to
the gradient's scale. State: "momentum_buffer" (fp32), on every rank.
"""
from __future__ import annotations

import math
from typing import Any

import torch

from optim.maps.momentum import nesterov, update_momentum_


class EmbedMap:
    """The embedding tables' update rule; cfg: the optim config (optim/hybrid_config.py's fields)."""

    name = "embed"

    def __init__(self, cfg: Any):
        self.eps, self.momentum_form, self.nesterov = cfg.embed_eps, cfg.momentum_form, cfg.nesterov

    # ---- the norm -----------------------------------------------------------------------------

    @staticmethod
    def norm(W: torch.Tensor, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """l1->RMS operator norm of a table W [vocab, d], computed in `dtype`: the largest row RMS."""
        return (torch.linalg.vector_norm(W.to(dtype), dim=1) / math.sqrt(W.size(1))).max()

    @staticmethod
    def dual_norm(G: torch.Tensor, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """Its dual, sqrt(d) * sum over rows of ||g_j||_2, for G [vocab, d], computed in `dtype`."""
        return math.sqrt(G.size(1)) * torch.linalg.vector_norm(G.to(dtype), dim=1).sum()

    # ---- the duality map ----------------------------------------------------------------------

    def dualize(self, G: torch.Tensor) -> torch.Tensor:
        """Every token row of G [vocab, d] to unit RMS, below the relative floor eps damped instead
        (see the module docstring). Zero rows stay zero; G's dtype, computed in at least fp32."""
        if G.ndim != 2:
            raise ValueError(f"the embed map expects a [vocab, d] table, got shape {tuple(G.shape)}")
        work = G if G.dtype == torch.float64 else G.float()  # at least fp32 (bf16 momentum would lose digits)
        rms = torch.linalg.vector_norm(work, dim=1, keepdim=True) / math.sqrt(G.size(1))
        denom = torch.maximum(rms, self.eps * rms.max())
        # Rows with denom 0 are exactly zero rows: divide by 1 so they stay 0 instead of NaN.
        denom = torch.where(denom > 0, denom, torch.ones_like(denom))
        return (work / denom).to(G.dtype)

    # ---- state and the update -----------------------------------------------------------------

    @staticmethod
    def check_shape(name: str, role: str, p: torch.Tensor) -> None:
        if p.ndim != 2:
            raise ValueError(f"parameter {name!r} (role {role!r}) is routed to the embed map but has shape "
                             f"{tuple(p.shape)}; the embed map needs a [vocab, d] table")

    @staticmethod
    def init_state(state: dict, p: torch.Tensor) -> None:
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = torch.zeros_like(p, dtype=torch.float32)

    def direction(self, p: torch.Tensor, state: dict, beta: float) -> torch.Tensor:
        """The direction d (fp32, p's shape) that p steps along, p <- p - lr d."""
        self.init_state(state, p)
        buf = state["momentum_buffer"]
        update_momentum_(buf, p.grad, beta, self.momentum_form)
        return self.dualize(nesterov(buf, p.grad, beta, self.momentum_form, self.nesterov))

    @classmethod
    def noise_sample(cls, p: torch.Tensor, state: dict) -> torch.Tensor:
        """LANTON's noise sample of this table: the dual norm of G - B (B: the updated momentum buffer),
        exact and elementwise (optim/stages/lanton.py). 0-dim fp32."""
        return cls.dual_norm(p.grad.float() - state["momentum_buffer"], torch.float32)
