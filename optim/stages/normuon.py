"""Neuron-wise normalization of the orthogonalized update (switch `optim.normuon`), after NorMuon:
Li, Liu, Liang, Chen & Zhao, "NorMuon: Making Muon more efficient and scalable", arXiv 2510.05491.

Muon's orthogonalized update O has balanced singular values but unbalanced rows: some output
neurons get much larger updates than others. NorMuon keeps an Adam-style second moment per row
(neuron) of O and divides each row by its root, then rescales the whole update back to Muon's size:

    v_t   = b v_{t-1} + (1 - b) mean_cols(O_t * O_t)          v: one value per row (output neuron)
    N_t   = O_t / (sqrt(v_t) + eps)                            (v broadcast along each row)
    out   = N_t * target / ||N_t||_F

O here is the linear map's output, scale(d_out, d_in) * U V^T (optim/maps/linear.py), for each block of
a fused weight separately; rows are d_out (PyTorch's [d_out, d_in] layout). The paper's rescale is
eta_hat = 0.2 eta sqrt(m n) / ||N||_F, the Frobenius norm of Moonshot's 0.2 sqrt(max(m, n)) U V^T;
ours is the same rule for whatever `optim.scale` is: target = scale(d_out, d_in) * sqrt(min(d_out,
d_in)), the Frobenius norm of an exact scale * U V^T (equal to the paper's with scale=rms_match).
So the layer's step keeps its size and lr keeps its meaning; only its split across neurons changes.
No bias correction is needed: it would multiply every row by the same factor, which the rescale
removes. State: "normuon_v", fp32, one value per row ([d_out] or [blocks, d_out / blocks]), created at
the weight's first step (or at the first step after resuming from a checkpoint saved without the switch).

The stage acts at the linear map's `after_ns` hook (optim/stages/base.py): every rank applies it after
the all_gather of the orthogonalized updates (O(params) elementwise work, like momentum), so every rank
keeps the complete, identical state. Cost: a few elementwise passes.
"""
from __future__ import annotations

import math
from functools import partial

import torch

from optim.stages.base import Key, MatrixContext, Stage


def normuon_(d: torch.Tensor, v: torch.Tensor, beta: float, eps: float, target: float) -> torch.Tensor:
    """Neuron-normalized copy of the linear-map update d [..., rows, cols] (leading dims: blocks), rescaled
    to Frobenius norm `target` per matrix; updates v ([..., rows], fp32) in place. Returns fp32, d's shape."""
    d = d.float()
    v.lerp_(d.square().mean(dim=-1), 1 - beta)
    n = d / (v.sqrt().unsqueeze(-1) + eps)
    fro = torch.linalg.vector_norm(n, dim=(-2, -1), keepdim=True)
    # A zero update (e.g. the first step of a layer behind a zero-initialized projection) stays zero:
    # target / 0 would make it 0 * inf = NaN.
    return n * torch.where(fro > 0, target / fro.clamp_min(torch.finfo(torch.float32).tiny), 0.0)


def _after_ns(d: torch.Tensor, ctx: MatrixContext, beta: float, eps: float) -> torch.Tensor:
    """The stage at the after_ns hook: d [..., rows, cols] = scale * U V^T -> its neuron-normalized copy."""
    if "normuon_v" not in ctx.state:  # one second moment per row of each block
        ctx.state["normuon_v"] = torch.zeros(d.shape[:-1], dtype=torch.float32, device=d.device)
    rows, cols = d.shape[-2], d.shape[-1]
    target = ctx.scale * math.sqrt(min(rows, cols))  # ||scale * U V^T||_F
    return normuon_(d, ctx.state["normuon_v"], beta, eps, target)


STAGE = Stage(
    name="normuon", hook="after_ns",
    doc="per-row second-moment normalization of linear-map updates (optim/stages/normuon.py)",
    keys=(Key("normuon_beta", float, 0.95, "EMA of each row's mean square", range="in [0, 1)"),
          Key("normuon_eps", float, 1e-8, "added to each row's root mean square", range="> 0")),
    build=lambda cfg: partial(_after_ns, beta=cfg.normuon_beta, eps=cfg.normuon_eps))
