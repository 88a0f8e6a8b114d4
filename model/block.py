"""One transformer block: pre-norm attention and MLP on the residual stream.

    x <- a x + b x0                     model.x0_mix ((a, b) = model.x0_mix_init at init; x0 = the embedding)
    x <- x + s * attn(norm(x))          s = 1/sqrt(2L) with model.scale_attn_residual, else 1;
                                        no attention at all in model.no_attn_layers
    x <- x + mlp(norm(x))               no MLP in model.no_mlp_layers (records 43, 46: block 0)

A block with neither attention nor MLP is skipped whole (`is_identity`; records 43, 46 start their
layer loop at block 1): it has no x0 mix either.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn as nn

from model.attention import CausalSelfAttention
from model.config import ModelConfig
from model.layers import MLP, make_norm, tag_param
from model.masks import AttentionMasks


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int):
        super().__init__()
        self.layer = layer
        self.has_attn = layer not in cfg.no_attn_layers
        self.has_mlp = layer not in cfg.no_mlp_layers
        self.is_identity = not (self.has_attn or self.has_mlp)
        if self.has_attn:
            self.ln_1, self.attn = make_norm(cfg), CausalSelfAttention(cfg, layer)
        if self.has_mlp:
            self.ln_2, self.mlp = make_norm(cfg), MLP(cfg)
        self.attn_scale = 1 / math.sqrt(2 * cfg.n_layer) if cfg.scale_attn_residual else 1.0
        self.x0_init = [float(v) for v in cfg.x0_mix_init]
        if cfg.x0_mix and not self.is_identity:
            tag_param(self, "x0_lambdas", torch.tensor(self.x0_init), "scalar")

    def reset_scalars(self) -> None:
        if hasattr(self, "x0_lambdas"):
            with torch.no_grad():
                self.x0_lambdas.copy_(torch.tensor(self.x0_init))
        if self.has_attn:
            self.attn.reset_scalars()

    def forward(self, x: torch.Tensor, masks: AttentionMasks, x0: Optional[torch.Tensor] = None,
                v1: Optional[torch.Tensor] = None, ve: Optional[torch.Tensor] = None,
                rope: Optional[tuple[torch.Tensor, torch.Tensor]] = None, scale: Optional[float] = None
                ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """x, x0: [B, T, C]; v1, ve, rope, scale: see CausalSelfAttention. Returns (x, v1)."""
        if self.is_identity:
            return x, v1
        if hasattr(self, "x0_lambdas"):
            x = self.x0_lambdas[0] * x + self.x0_lambdas[1] * x0
        if self.has_attn:
            y, v1 = self.attn(self.ln_1(x), masks, v1, ve, rope, scale)
            x = x + self.attn_scale * y if self.attn_scale != 1.0 else x + y
        if self.has_mlp:
            x = x + self.mlp(self.ln_2(x))
        return x, v1
