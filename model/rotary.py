"""Rotary position embeddings (RoPE) on the query and key heads.

Each head vector x [D] is split into halves (x1, x2) = (x[:D/2], x[D/2:]) and pair i
(x1_i, x2_i) is rotated by the angle t * f_i at position t:

    y1 = x1 cos(t f) + x2 sin(t f),    y2 = -x1 sin(t f) + x2 cos(t f)

so <rot(q, t), rot(k, s)> depends on t - s only (attention sees relative positions).

Frequencies:
- standard:       f_i = base^(-2i/D),                    i = 0 .. D/2 - 1   (records 2-12, base 1e4)
- half-truncated: f_i = (1/base)^(i/(D/4 - 1)),          i = 0 .. D/4 - 1, then D/4 zeros
                  (record 20, base 1024): half of each head is position-free.
Angles are computed in fp32 on the fly (no buffers: cheap, and safe under meta-device init).
"""
from __future__ import annotations

import torch


def rotary_frequencies(head_dim: int, base: float, half_truncated: bool, device=None) -> torch.Tensor:
    """[head_dim / 2] angular frequencies (radians per position), fp32."""
    if half_truncated:
        quarter = head_dim // 4
        f = (1.0 / base) ** torch.linspace(0, 1, steps=quarter, dtype=torch.float32, device=device)
        return torch.cat([f, f.new_zeros(quarter)])
    return base ** (-torch.arange(0, head_dim, 2, dtype=torch.float32, device=device) / head_dim)


def apply_rotary(x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """x: [B, T, H, D] (positions 0..T-1 along dim 1); freqs: [D/2]. Returns x rotated, x's dtype."""
    T = x.size(1)
    angles = torch.outer(torch.arange(T, dtype=torch.float32, device=x.device), freqs)  # [T, D/2]
    cos, sin = angles.cos()[None, :, None, :], angles.sin()[None, :, None, :]
    x1, x2 = x.float().chunk(2, dim=-1)
    return torch.cat((x1 * cos + x2 * sin, x2 * cos - x1 * sin), dim=-1).type_as(x)
