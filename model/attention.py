"""Multi-head self-attention with the speedrun's switches.

Shapes: B batch, T tokens, C = n_embd, H heads, D = C / H.

    q, k, v = W_qkv x                        (fused [3C, C] weight, or three [C, C])
    v <- (1 - l) v + l v1                    value_residual: v1 = first attention layer's v
    v <- a v + b ve                          value embeddings (a, b init 0.5; ve absent -> a v)
    q, k <- rms_norm / rotary, in the order model.qk_norm says
    y = softmax(scale q k^T + mask) v        causal, or document-causal with a sliding window, through
                                             model.attn_impl's backend (sdpa | flex | fa3; model/masks.py)
    y_h <- y_h sigmoid(W_g[h] . x[:k])       sparse attention gate, model.attn_gate_dim = k (records 29-46,
                                             @classiclarryd): a head can output ~0 for a token; W_g zero at init
    out = W_proj y                           zero at init with model.zero_init_proj

Records 43 and 46 rotate with YaRN's tables and scale by YaRN's current scale (model/rotary.py): GPT builds
them once per forward and passes `rope` and `scale` in. The attention kernel itself is model/masks.py's
`attend` (the seam where the FlashAttention-3 varlen backend plugs in).

A merged [3, C, C] weight (record 20) equals the fused [3C, C] one row-block by row-block, and
the optimizer orthogonalizes role attn_qkv per block either way; we keep the [3C, C] Linear.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from model.config import ModelConfig, PosEmb, QKNorm
from model.layers import tag_param, tagged
from model.masks import AttentionMasks, attend
from model.rotary import apply_rotary, rotary_frequencies, rotate_with_tables


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int):
        super().__init__()
        C = cfg.n_embd
        self.cfg, self.layer = cfg, layer
        self.n_head, self.head_dim = cfg.n_head, cfg.head_dim
        if cfg.fused_qkv:
            self.qkv = tagged(nn.Linear(C, 3 * C, bias=cfg.bias), "attn_qkv")
        else:
            self.q = tagged(nn.Linear(C, C, bias=cfg.bias), "attn_q")
            self.k = tagged(nn.Linear(C, C, bias=cfg.bias), "attn_k")
            self.v = tagged(nn.Linear(C, C, bias=cfg.bias), "attn_v")
        self.proj = tagged(nn.Linear(C, C, bias=cfg.bias), "attn_out", bias_role="attn_out_bias")
        self.proj.residual_out = True
        if cfg.value_residual:
            tag_param(self, "lamb", torch.tensor(0.5), "scalar")
        if cfg.value_embed_tables:
            tag_param(self, "v_lambdas", torch.tensor([0.5, 0.5]), "scalar")
        self.short_window = layer in cfg.short_window_layers
        if cfg.attn_gate_dim:
            tag_param(self, "gate_weight", torch.zeros(cfg.n_head, cfg.attn_gate_dim), "attn_gate")

    def reset_scalars(self) -> None:
        with torch.no_grad():
            if hasattr(self, "lamb"):
                self.lamb.fill_(0.5)
            if hasattr(self, "v_lambdas"):
                self.v_lambdas.fill_(0.5)
            if hasattr(self, "gate_weight"):
                self.gate_weight.zero_()

    def forward(self, x: torch.Tensor, masks: AttentionMasks, v1: Optional[torch.Tensor] = None,
                ve: Optional[torch.Tensor] = None, rope: Optional[tuple[torch.Tensor, torch.Tensor]] = None,
                scale: Optional[float] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """x: [B, T, C]; v1: the first attention layer's values [B, T, H, D] (value residual; None in
        that layer); ve: value embedding [B, T, C] or None; rope: (cos, sin) [>= T, D/2] tables (YaRN) or
        None (frequencies from the config); scale: the softmax scale (YaRN's) or None (model.attn_scale).
        Returns (out [B, T, C], v1)."""
        cfg = self.cfg
        B, T, C = x.shape
        H, D = self.n_head, self.head_dim
        if hasattr(self, "qkv"):
            q, k, v = self.qkv(x).split(C, dim=2)
        else:
            q, k, v = self.q(x), self.k(x), self.v(x)
        q, k, v = q.view(B, T, H, D), k.view(B, T, H, D), v.view(B, T, H, D)
        if v1 is None:
            v1 = v
        if cfg.value_residual:
            v = (1 - self.lamb) * v + self.lamb * v1
        if cfg.value_embed_tables:
            v = self.v_lambdas[0] * v + (self.v_lambdas[1] * ve.view_as(v) if ve is not None else 0)
        if cfg.qk_norm is QKNorm.before_rope:
            q, k = F.rms_norm(q, (D,), eps=cfg.norm_eps), F.rms_norm(k, (D,), eps=cfg.norm_eps)
        if rope is not None:
            q, k = rotate_with_tables(q, *rope), rotate_with_tables(k, *rope)
        elif cfg.pos_emb is PosEmb.rotary:
            freqs = rotary_frequencies(D, cfg.rope_base, cfg.rope_half_truncated, device=x.device)
            q, k = apply_rotary(q, freqs), apply_rotary(k, freqs)
        if cfg.qk_norm is QKNorm.after_rope:
            q, k = F.rms_norm(q, (D,), eps=cfg.norm_eps), F.rms_norm(k, (D,), eps=cfg.norm_eps)
        # FlexAttention and FA3 need one dtype; under autocast the norms may have returned fp32.
        q, k, v = (t.to(v.dtype) for t in (q, k, v))  # [B, T, H, D]
        y = attend(q, k, v, masks.for_layer(self.short_window),  # model/masks.py: every backend
                   cfg.attn_scale if scale is None else scale)
        if hasattr(self, "gate_weight"):
            gate = torch.sigmoid(F.linear(x[..., :self.gate_weight.size(-1)], self.gate_weight.type_as(x)))
            y = y * gate.view(B, T, H, 1)
        return self.proj(y.reshape(B, T, C)), v1
