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

YaRN (records 43, 46; `Yarn` below) rescales the half-truncated frequencies and the attention scale each
time the sliding window grows; its tables are built once per forward and rotate with
`rotate_with_tables`.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn


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


def rotate_with_tables(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: [B, T, H, D]; cos, sin: [>= T, D/2] tables. The rotation above with precomputed tables, in the
    promoted dtype of x and the tables and without an fp32 round trip (records 43, 46: bf16 q, k and bf16
    tables rotate in bf16; fp32 q with bf16 tables rotates in fp32)."""
    T = x.size(-3)
    cos, sin = cos[None, :T, None, :], sin[None, :T, None, :]
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x1 * cos + x2 * sin, x1 * (-sin) + x2 * cos), dim=3)


class Yarn(nn.Module):
    """YaRN for the sliding-window records (records 43 and 46, after @classiclarryd's Yarn): the rotary
    frequencies f [D/2] (fp32) and the softmax scale s (a Python float, fp64) change whenever the long
    attention window grows from w_old to w_new tokens:

        r_i = w_old f_i / (2 pi)                          rotations of pair i within the old window
        g_i = clamp((r_i - alpha) / (beta - alpha), 0, 1)
        f_i <- f_i (w_old / w_new + g_i (1 - w_old / w_new))   slow pairs interpolated, fast ones kept
        s   <- s (0.2 ln(w_new / w_old) + 1)

    in the script's operation order, so the fp32 frequencies are bitwise its own. The state (f, s and the
    window it was last applied at) lives in persistent buffers: a checkpoint carries it, and loading a
    state dict (the trainer's undo of its compile warm-up, a resume) restores it exactly. It is also
    re-derivable: `reset()` then `update(w)` for every window the schedule passed through, in order.
    The first `update` after `reset` only records the window (the script's starting window)."""

    def __init__(self, head_dim: int, base: float, half_truncated: bool, attn_scale: float,
                 alpha: float, beta: float):
        super().__init__()
        self.head_dim, self.base, self.half_truncated = head_dim, base, half_truncated
        self.start_scale, self.alpha, self.beta = attn_scale, alpha, beta
        self.register_buffer("freqs", torch.zeros(head_dim // 2, dtype=torch.float32))
        self.register_buffer("scale", torch.zeros((), dtype=torch.float64))
        self.register_buffer("window", torch.zeros((), dtype=torch.int64))
        self.reset()

    @torch.no_grad()
    def reset(self) -> None:
        """Back to the unscaled frequencies and the starting scale, no window recorded yet."""
        self.freqs.copy_(rotary_frequencies(self.head_dim, self.base, self.half_truncated, device=self.freqs.device))
        self.attn_scale, self.current_window = float(self.start_scale), -1
        self.scale.fill_(self.attn_scale)
        self.window.fill_(-1)

    @torch.no_grad()
    def update(self, new_window: int) -> None:
        """The long window is now `new_window` tokens: rescale if it changed since the last update."""
        if self.current_window < 0:
            self.current_window = int(new_window)
        elif new_window != self.current_window:
            self._rescale(self.current_window, int(new_window))
            self.current_window = int(new_window)
        self.window.fill_(self.current_window)

    def _rescale(self, old_window: int, new_window: int) -> None:
        rotations = old_window * self.freqs / (2 * torch.pi)
        scaling_factor = old_window / new_window
        interpolation_weight = torch.clamp((rotations - self.alpha) / (self.beta - self.alpha), 0, 1)
        self.freqs *= scaling_factor + interpolation_weight * (1 - scaling_factor)
        self.attn_scale *= 0.2 * math.log(new_window / old_window) + 1
        self.scale.fill_(self.attn_scale)

    def tables(self, T: int, bf16: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """(cos, sin) [T, D/2] at positions 0 .. T-1 of the current frequencies; bf16-rounded if asked."""
        theta = torch.outer(torch.arange(T, dtype=torch.float32, device=self.freqs.device), self.freqs)
        cos, sin = theta.cos(), theta.sin()
        return (cos.to(torch.bfloat16), sin.to(torch.bfloat16)) if bf16 else (cos, sin)

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        if self.scale.device.type != "meta":  # the Python mirrors follow the loaded buffers
            self.attn_scale, self.current_window = float(self.scale), int(self.window)
