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

Records 43-46's form (`optim.normuon_form=records43`; record43_cautiouswd.py, record46_batchsizeschedule.py,
NorMuon.step). O is the Newton-Schulz output of each matrix (Q/K/V/O block), and the statistics run along the
matrix's longer side: one value per element of the longer side, the mean taken over the shorter one,

    v_t   = b v_{t-1} + (1 - b) mean_short(O_t * O_t)      v: [..., rows, 1] (rows > cols) or [..., 1, cols]
    N_t   = O_t * rsqrt(max(v_t, 1e-10))
    out   = N_t * ||O_t||_F / max(||N_t||_F, 1e-10)        (O's OWN norm: no sqrt(min(rows, cols)) target)

The scripts decide the side on the STORED parameter: attention's qkvo_w is stored [hdim, 4 dim] (wide), so each
of its square Q, K, V, O blocks gets one value per column (input feature); the MLP's c_fc is stored
[dim, 4 dim] and used transposed, c_proj stored [dim, 4 dim]: one value per hidden unit for both; the gates
[heads, 12] and [1, 12]: one per column. On our [d_out, d_in] layout that is: per row when rows > cols (mlp_in
[4d, d]), else per column (mlp_out [d, 4d], the square attention blocks, the gates). State
"normuon_v_long", fp32, keepdim shape as above. The 1e-10 floors are the scripts' constants.

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


_FLOOR = 1e-10  # records 43-46: the floor under each mean square and under the normalized update's norm


def normuon_records_(d: torch.Tensor, v: torch.Tensor, beta: float) -> torch.Tensor:
    """Records 43-46's NorMuon of d [..., rows, cols] (the module docstring): statistics along the longer side
    (columns on ties), rescaled to d's own Frobenius norm per matrix; updates v ([..., rows, 1] or [..., 1, cols],
    fp32) in place. Returns d's dtype and shape; a zero update stays zero. Each product and norm is rounded to d's
    dtype as the scripts' in-place ops round their bf16 NS output (optim.update_bf16); v and rsqrt(v) stay fp32."""
    norm = torch.linalg.vector_norm(d, dim=(-2, -1), keepdim=True)
    v.lerp_(d.square().mean(dim=short_axis(d.shape), keepdim=True).float(), 1 - beta)
    n = d * v.clamp_min(_FLOOR).rsqrt()  # d's dtype (an fp32 factor does not promote a bf16 tensor in place)
    n = n.to(d.dtype)
    return n * (norm / torch.linalg.vector_norm(n, dim=(-2, -1), keepdim=True).clamp_min(_FLOOR))


def short_axis(shape: torch.Size) -> int:
    """The axis records 43-46's NorMuon averages over on our [..., d_out, d_in] layout: -1 (one value per row)
    for a tall matrix, else -2 (one per column: wide and square matrices)."""
    return -1 if shape[-2] > shape[-1] else -2


def _after_ns_records(d: torch.Tensor, ctx: MatrixContext, beta: float) -> torch.Tensor:
    """The records' form at the after_ns hook."""
    if "normuon_v_long" not in ctx.state:
        shape = list(d.shape)
        shape[short_axis(d.shape)] = 1
        ctx.state["normuon_v_long"] = torch.zeros(shape, dtype=torch.float32, device=d.device)
    # in d's dtype: with optim.update_bf16 the update stays bf16, as the scripts' NorMuon runs on the bf16 NS output
    return normuon_records_(d, ctx.state["normuon_v_long"], beta)


FORMS = ("rows", "records43")


def _check(cfg) -> None:
    if cfg.normuon_form not in FORMS:
        raise ValueError(f"optim.normuon_form={cfg.normuon_form!r} is not one of {list(FORMS)}")


def _build(cfg):
    if cfg.normuon_form == "records43":
        return partial(_after_ns_records, beta=cfg.normuon_beta)
    return partial(_after_ns, beta=cfg.normuon_beta, eps=cfg.normuon_eps)


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
          Key("normuon_eps", float, 1e-8, "added to each row's root mean square (form rows)", range="> 0"),
          Key("normuon_form", str, "rows", "rows: per-row statistics, rescaled to scale sqrt(min(rows, cols)) | "
              "records43: records 43-46's, along the longer side, rescaled to the update's own norm")),
    check=_check, build=_build)
