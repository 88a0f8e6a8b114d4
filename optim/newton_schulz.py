"""Newton-Schulz orthogonalization: G = U S V^T  ->  approximately U V^T, without an SVD.

Every odd matrix polynomial acts on the singular values alone:

    p(X) = a X + b (X X^T) X + c (X X^T)^2 X      =>      p(U S V^T) = U p(S) V^T

so iterating scalar polynomials that push every s in (0, 1] towards 1 turns X into
(approximately) its orthogonal polar factor U V^T. The input is first divided by its
Frobenius norm so that every singular value is <= 1 (the region where the polynomials
are designed to work). Wide layout (rows <= cols) keeps the Gram matrix X X^T at
min(rows, cols)^2, so tall inputs are transposed in and out.

Methods (coefficients (a, b, c) per step; docs/optimizer.md has their measured accuracy):
- cubic:         X <- 1.5 X - 0.5 X X^T X; converges to 1 on (0, sqrt 3) but slowly from small s.
- quintic:       Muon's (3.4445, -4.7750, 2.0315) every step; output s in ~[0.68, 1.2] by design
                 (fast growth of small s traded for not converging exactly).
- polar_express: 5 per-step sets (arXiv 2505.16932), normalized by 1.02 ||X||_F + 1e-6.
- six_step:      6 per-step sets used by modula (integers / 1024); output s in ~[0.99, 1].
- track3:        (2, -1.5, 0.5) x 12, track 3's baseline: p(s) = 2s - 1.5s^3 + 0.5s^5 has p(1) = 1
                 and p'(1) = 0 (converges to 1 from any s in (0, 1]; doubles small s each step).
A schedule longer than its coefficient list repeats its last set (that set is the one
tuned for singular values already near 1); a shorter one uses its first sets.

Input normalization (`norm`, config key optim.ns_norm), with the method's (scale s, eps):
- fro:  X / (s ||X||_F + eps)                                 (default; every method's own)
- gram: X / max(s sqrt(||X X^T||_F), eps), the Schatten-4 norm (sum sigma^4)^(1/4) of X, computed
        in fp32 from the working-dtype X (track-3 result #46, track3_best46_cwd_rowfloor_tailema.py,
        its NS input scaling). Schatten-4 <= Frobenius and >= spectral, so every s stays <= 1 but the
        small singular values start larger: fewer iterations are spent lifting them.
"""
from __future__ import annotations

import torch

Coeffs = tuple[float, float, float]

_POLAR_EXPRESS: list[Coeffs] = [
    (8.156554524902461, -22.48329292557795, 15.878769915207462),
    (4.042929935166739, -2.808917465908714, 0.5000178451051316),
    (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
    (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
    (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
]
_SIX_STEP: list[Coeffs] = [
    (a / 1024, b / 1024, c / 1024)
    for a, b, c in [(3955, -8306, 5008), (3735, -6681, 3463), (3799, -6499, 3211),
                    (4019, -6385, 2906), (2677, -3029, 1162), (2172, -1833, 682)]
]

# name -> (per-step coefficient list, default number of steps, normalization (scale, eps)).
# The cubic map needs ~log(1/s_min)/log(1.5) steps just to lift small singular values
# (s ~ 1/sqrt(min dim) after Frobenius normalization), hence its larger default.
METHODS: dict[str, tuple[list[Coeffs], int, tuple[float, float]]] = {
    "cubic": ([(1.5, -0.5, 0.0)], 12, (1.0, 1e-7)),
    "quintic": ([(3.4445, -4.7750, 2.0315)], 5, (1.0, 1e-7)),
    "polar_express": (_POLAR_EXPRESS, 5, (1.02, 1e-6)),
    "six_step": (_SIX_STEP, 6, (1.0, 1e-7)),
    "track3": ([(2.0, -1.5, 0.5)], 12, (1.0, 1e-7)),
}


NORMS = ("fro", "gram")


def schatten4(X: torch.Tensor, eps: float, keepdim: bool = False) -> torch.Tensor:
    """max(sqrt(||G||_F), eps) per matrix of X [..., rows, cols], G the smaller Gram matrix (X^T X if
    rows > cols, else X X^T): the Schatten-4 norm (sum_i sigma_i^4)^(1/4), fp32 whatever X's dtype.
    Shape [...] (or [..., 1, 1] with keepdim). Track-3 result #46 uses it to scale the Newton-Schulz input
    and to keep SOAP's preconditioned momentum at the raw momentum's size (optim/stages/soap.py)."""
    x = X.float()
    gram = x.mT @ x if x.size(-2) > x.size(-1) else x @ x.mT
    return torch.linalg.vector_norm(gram, dim=(-2, -1), keepdim=keepdim).sqrt().clamp_min(eps)


def schedule(method: str, steps: int | None = None) -> list[Coeffs]:
    """The (a, b, c) coefficients of each of `steps` iterations (default: the method's own count)."""
    if method not in METHODS:
        raise ValueError(f"unknown Newton-Schulz method {method!r}; choose one of {sorted(METHODS)}")
    coeffs, default_steps, _ = METHODS[method]
    steps = default_steps if steps is None else steps
    if steps < 0:
        raise ValueError(f"Newton-Schulz steps must be >= 0, got {steps}")
    return [coeffs[min(i, len(coeffs) - 1)] for i in range(steps)]


def default_dtype(device: torch.device) -> torch.dtype:
    """bf16 on CUDA (tensor cores; NS is robust to its rounding), fp32 elsewhere (CPU bf16 matmul is slow)."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


@torch.no_grad()
def orthogonalize(G: torch.Tensor, method: str = "quintic", steps: int | None = None,
                  dtype: torch.dtype | None = None, norm: str = "fro") -> torch.Tensor:
    """Approximate polar factor U V^T of G (or of each matrix in a batch).

    G: [..., rows, cols] (any leading batch dims); returns the same shape and dtype as G.
    The iteration runs in `dtype` (default: bf16 on CUDA, fp32 otherwise). Each matrix is
    normalized by its own norm (`norm`: fro or gram, the module docstring), so the result is invariant
    to positive scaling of G and the zero matrix maps to zero (no NaN).
    """
    if norm not in NORMS:
        raise ValueError(f"unknown Newton-Schulz input norm {norm!r}; choose one of {list(NORMS)}")
    if G.ndim < 2:
        raise ValueError(f"orthogonalize needs a matrix or a batch of matrices, got shape {tuple(G.shape)}")
    coeffs = schedule(method, steps)
    norm_scale, norm_eps = METHODS[method][2]
    X = G.to(dtype or default_dtype(G.device))
    tall = X.size(-2) > X.size(-1)
    if tall:  # contiguous: the same matmul kernels as a wide input (and orthogonalize_batched's stacks)
        X = X.mT.contiguous()
    # Norm in fp32 whatever the working dtype: a bf16 sum over ~1e6 squares loses digits.
    if norm == "gram":  # X is wide here, so its Gram is X X^T; clamped, not offset, by eps (#46's form)
        gram = torch.linalg.vector_norm(X.float() @ X.float().mT, dim=(-2, -1), keepdim=True).sqrt()
        X = X / (gram * norm_scale).clamp_min(norm_eps).to(X.dtype)
    else:
        fro = torch.linalg.vector_norm(X.float(), dim=(-2, -1), keepdim=True)
        X = X / (fro * norm_scale + norm_eps).to(X.dtype)
    for a, b, c in coeffs:
        A = X @ X.mT
        B = b * A + c * (A @ A) if c != 0.0 else b * A
        X = a * X + B @ X
    if tall:
        X = X.mT
    return X.to(G.dtype)


@torch.no_grad()
def orthogonalize_batched(mats: list[torch.Tensor], method: str = "quintic", steps: int | None = None,
                          dtype: torch.dtype | None = None, norm: str = "fro") -> list[torch.Tensor]:
    """`orthogonalize` of every tensor in `mats`, with one batched call per matrix shape.

    mats: tensors [..., rows, cols] of any shapes (leading dims: independent matrices, e.g. the
    Q, K, V blocks of a fused weight). Tall matrices are transposed to wide first, so a [r, c] and a
    [c, r] weight share a batch (GPT-2 124M: 48 hidden matrices in 2 calls instead of 48). Each
    matrix is still normalized by its own norm, so every result equals the per-matrix call up to
    the rounding of batched matmuls. Returns a list aligned with `mats`, each its input's shape and
    dtype. The stacked batch is built in the working dtype (bf16 on CUDA), so it costs one copy.
    """
    work = dtype or (default_dtype(mats[0].device) if mats else torch.float32)
    groups: dict[tuple, list[int]] = {}
    wide: list[torch.Tensor] = []
    for i, m in enumerate(mats):
        if m.ndim < 2:
            raise ValueError(f"orthogonalize needs a matrix or a batch of matrices, got shape {tuple(m.shape)}")
        x = m.reshape(-1, *m.shape[-2:])
        x = x.mT if x.size(-2) > x.size(-1) else x
        wide.append(x)
        groups.setdefault((tuple(x.shape[-2:]), m.device), []).append(i)
    out: list[torch.Tensor | None] = [None] * len(mats)
    for members in groups.values():
        stacked = torch.cat([wide[i].to(work) for i in members]) if len(members) > 1 else wide[members[0]]
        polar = orthogonalize(stacked, method, steps, dtype=work, norm=norm)
        for i, piece in zip(members, polar.split([wide[i].size(0) for i in members])):
            m = mats[i]
            piece = piece.mT if m.size(-2) > m.size(-1) else piece
            out[i] = piece.reshape(m.shape).to(m.dtype)
    return out  # type: ignore[return-value]


def scalar_iteration(s: torch.Tensor, method: str = "quintic", steps: int | None = None) -> torch.Tensor:
    """What `orthogonalize` does to singular values: normalize s by ||s||_2 like the matrix
    path normalizes by ||G||_F (= ||s||_2), then apply the scalar polynomials. s: [k] (>= 0), fp64 ok."""
    norm_scale, norm_eps = METHODS[method][2]
    x = s / (torch.linalg.vector_norm(s) * norm_scale + norm_eps)
    for a, b, c in schedule(method, steps):
        x = a * x + b * x**3 + c * x**5
    return x
