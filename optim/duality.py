"""Duality maps, one per module role (Bernstein & Newhouse, "Modular Duality in Deep Learning").

A gradient G is a linear functional on weight space. Each layer role fixes a norm ||.||
on its weights; the duality map sends G to the unit-norm direction it most increases,

    dualize(G) = argmax_{||T|| = 1} <G, T>,     so  <G, dualize(G)> = ||G||_dual,

and the optimizer steps along -lr * dualize(momentum). Tensors use PyTorch's layout:
a Linear weight is [d_out, d_in], an Embedding table is [vocab, d].

| role    | norm on W                                  | dualize(G)                      | dual norm                      |
|---------|--------------------------------------------|---------------------------------|--------------------------------|
| linear  | RMS->RMS: sqrt(d_in/d_out) * spectral(W)    | sqrt(d_out/d_in) U V^T          | sqrt(d_out/d_in) nuclear(G)    |
| embed   | l1->RMS: max_j rms(W_j) over token rows     | row j -> g_j / rms(g_j)         | sqrt(d) sum_j ||g_j||_2        |
| vectors | (none: Adam's elementwise, sign-like step)  | m_hat / (sqrt(v_hat) + eps)     |                                |
"""
from __future__ import annotations

import math

import torch

from optim.newton_schulz import orthogonalize, orthogonalize_batched

LINEAR_SCALES = ("spectral", "muon", "rms_match")


def linear_scale(rows: int, cols: int, rule: str = "spectral") -> float:
    """Factor multiplying U V^T for a [rows=d_out, cols=d_in] weight.

    spectral:  sqrt(d_out/d_in), the paper's map: makes the update's RMS->RMS norm exactly 1.
    muon:      sqrt(max(1, rows/cols)), Keller Jordan's Muon; equals `spectral` unless fan-in > fan-out.
    rms_match: 0.2 sqrt(max(rows, cols)) (Moonshot): update RMS ~0.2, like AdamW's, so AdamW lrs transfer.
    """
    if rule == "spectral":
        return math.sqrt(rows / cols)
    if rule == "muon":
        return math.sqrt(max(1.0, rows / cols))
    if rule == "rms_match":
        return 0.2 * math.sqrt(max(rows, cols))
    raise ValueError(f"unknown linear scale rule {rule!r}; choose one of {list(LINEAR_SCALES)}")


def exact_polar(G: torch.Tensor) -> torch.Tensor:
    """U V^T from an SVD of G [..., rows, cols] (fp64 inside), over the nonzero singular values only,
    so that, like Newton-Schulz, rank is preserved and the zero matrix maps to zero. Reference path."""
    U, S, Vh = torch.linalg.svd(G.double(), full_matrices=False)
    tol = S.amax(dim=-1, keepdim=True) * max(G.shape[-2:]) * torch.finfo(torch.float64).eps
    keep = (S > tol).to(U.dtype)
    return ((U * keep.unsqueeze(-2)) @ Vh).to(G.dtype)


def dualize_linear(G: torch.Tensor, scale: str = "spectral", method: str = "quintic",
                   steps: int | None = None, exact: bool = False) -> torch.Tensor:
    """Linear-layer duality map: scale(d_out, d_in) * U V^T for G = U S V^T.

    G: [..., d_out, d_in] (leading dims = independent matrices, e.g. the Q, K, V blocks of a
    fused weight). U V^T comes from Newton-Schulz (`method`, `steps`), or from an exact SVD when
    `exact` (tests, references). Returns G's shape and dtype.
    """
    polar = exact_polar(G) if exact else orthogonalize(G, method, steps)
    return polar * linear_scale(G.size(-2), G.size(-1), scale)


def dualize_linear_batched(mats: list[torch.Tensor], scale: str = "spectral", method: str = "quintic",
                           steps: int | None = None) -> list[torch.Tensor]:
    """`dualize_linear` of every tensor in `mats` ([..., d_out, d_in] each), Newton-Schulz batched over
    same-shape matrices (optim.newton_schulz.orthogonalize_batched). Returns a list aligned with `mats`."""
    polars = orthogonalize_batched(mats, method, steps)
    return [p * linear_scale(m.size(-2), m.size(-1), scale) for p, m in zip(polars, mats)]


def dualize_embed(G: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    """Embed (one-hot input) duality map: every token row to unit RMS, g_j -> g_j / rms(g_j).

    G: [vocab, d]. Zero rows (tokens absent from the batch and from the momentum) stay zero.
    eps >= 0 is a relative floor: a row whose RMS is below eps * (largest row RMS) is divided by
    that floor instead, so its update is damped in proportion to its size rather than blown up
    to a full unit-RMS step (with momentum, a token seen once long ago keeps a tiny nonzero
    row). Relative rather than absolute so the map stays invariant to the gradient's scale.
    """
    if G.ndim != 2:
        raise ValueError(f"dualize_embed expects a [vocab, d] table, got shape {tuple(G.shape)}")
    work = G if G.dtype == torch.float64 else G.float()  # at least fp32 (bf16 momentum would lose digits)
    rms = torch.linalg.vector_norm(work, dim=1, keepdim=True) / math.sqrt(G.size(1))
    floor = eps * rms.max()
    denom = torch.maximum(rms, floor)
    # Rows with denom 0 are exactly zero rows: divide by 1 so they stay 0 instead of NaN.
    denom = torch.where(denom > 0, denom, torch.ones_like(denom))
    return (work / denom).to(G.dtype)


@torch.no_grad()
def adam_direction(grad: torch.Tensor, exp_avg: torch.Tensor, exp_avg_sq: torch.Tensor, step: int,
                   betas: tuple[float, float], eps: float) -> torch.Tensor:
    """Adam's path for vectors and scalars (and by default the LM head): update the moment
    buffers in place and return the bias-corrected direction m_hat / (sqrt(v_hat) + eps).
    step: 1-based count of updates including this one. All tensors share grad's shape."""
    beta1, beta2 = betas
    exp_avg.lerp_(grad, 1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    bias1 = 1 - beta1**step
    bias2 = 1 - beta2**step
    denom = (exp_avg_sq / bias2).sqrt_().add_(eps)  # in place on one temporary: big tables (head) are memory-bound
    return torch.div(exp_avg, denom).div_(bias1)


# ---- norms (for tests, diagnostics and the modular norm) -------------------------------------

def linear_norm(W: torch.Tensor) -> torch.Tensor:
    """RMS->RMS operator norm of W [..., d_out, d_in]: sqrt(d_in/d_out) * spectral norm."""
    return math.sqrt(W.size(-1) / W.size(-2)) * torch.linalg.matrix_norm(W.double(), ord=2)


def linear_dual_norm(G: torch.Tensor) -> torch.Tensor:
    """Dual of the RMS->RMS norm: sqrt(d_out/d_in) * nuclear norm of G [..., d_out, d_in]."""
    return math.sqrt(G.size(-2) / G.size(-1)) * torch.linalg.matrix_norm(G.double(), ord="nuc")


def embed_norm(W: torch.Tensor) -> torch.Tensor:
    """l1->RMS operator norm of an embedding table W [vocab, d]: the largest row RMS."""
    return (torch.linalg.vector_norm(W.double(), dim=1) / math.sqrt(W.size(1))).max()


def embed_dual_norm(G: torch.Tensor) -> torch.Tensor:
    """Dual of the l1->RMS norm: sqrt(d) * sum over rows of ||g_j||_2, for G [vocab, d]."""
    return math.sqrt(G.size(1)) * torch.linalg.vector_norm(G.double(), dim=1).sum()
