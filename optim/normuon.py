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
removes. State: "normuon_v", fp32, one value per row ([d_out] or [blocks, d_out / blocks]), created by
the linear map (LinearMap.init_state), which also computes the target.

Every rank applies it after the all_gather of the orthogonalized updates (O(params) elementwise work,
like momentum), so every rank keeps the complete, identical state. Cost: a few elementwise passes.
"""
from __future__ import annotations

import torch


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
