"""The linear map: the update of every hidden matrix (attn_q/k/v, attn_qkv, attn_out, mlp_in, mlp_out;
the head too with optim.head_map=linear). What a weight such as W_q [d_out, d_in] gets, in order:

    buf <- beta buf + (1 - beta) g,  u = (1 - beta) g + beta buf    momentum -> Nesterov (maps/momentum.py)
    u <- stage(u)                      the before_ns stages that are on (optim.soap: optim/stages/soap.py)
    U V^T = NS(u)                      Newton-Schulz (optim/newton_schulz.py), per Q/K/V block of a fused weight
    d = scale(d_out, d_in) * U V^T     the duality map of the RMS->RMS operator norm (bf16 with optim.update_bf16)
    d <- stage(d)                      the after_ns stages that are on (optim.normuon, optim.radial_brake,
                                       optim.uw_floor: optim/stages/normuon.py, radial.py, uw_floor.py)
    p <- p (1 - lr wd) - lr d          applied by HybridOptimizer, with its layer_rates, around_step and decay
                                       stages (optim.lanton, optim.radius_pin, optim.cautious_wd_post,
                                       optim.cautious_wd: optim/stages/)

The norm and its dual, for W, G [d_out, d_in]:

    ||W||   = sqrt(d_in / d_out) * spectral(W)      (RMS->RMS: how much W can grow an RMS-1 input)
    ||G||_* = sqrt(d_out / d_in) * nuclear(G)      and <G, dualize(G)> = ||G||_* with the exact polar factor.

scale: `spectral` sqrt(d_out/d_in) (the paper's: ||d|| = 1), `muon` sqrt(max(1, rows/cols)) (Muon's;
equal unless fan-in > fan-out), `rms_match` 0.2 sqrt(max(rows, cols)) (Moonshot: update RMS ~0.2 like
AdamW's, so AdamW rates transfer), `unit` 1 (records 29-46: their Muon / NorMuon multiply by
sqrt(max(1, rows/cols)) of the STORED matrix, and they store every hidden matrix wide, attention as
[hdim, 4 dim] (or [4, hdim, dim]) and both MLP matrices as [dim, 4 dim], the input one used transposed; so
the factor is 1 for every matrix, and records 43-46 give the transposed MLP input lr_mul 2, which is
optim.role_lr_mul.mlp_in=2 here). Newton-Schulz is the expensive step, so HybridOptimizer runs it for
every weight at once, batched per shape and split across ranks (optim/distributed.py): `direction` hands
it its input and receives U V^T back. Everything else here runs on every rank, so every rank holds the
complete, identical state ("momentum_buffer", and what the after_ns stages keep, e.g. "normuon_v").
"""
from __future__ import annotations

import math
from typing import Any, Callable, Generator

import torch

from optim.maps.momentum import nesterov, update_momentum_
from optim.newton_schulz import orthogonalize, orthogonalize_batched
from optim.roles import FUSED_BLOCKS
from optim.stages import active
from optim.stages.base import MatrixContext

SCALES = ("spectral", "muon", "rms_match", "unit")


def linear_scale(rows: int, cols: int, rule: str = "spectral") -> float:
    """Factor multiplying U V^T for a [rows=d_out, cols=d_in] matrix, by `rule` (see the module docstring)."""
    if rule == "spectral":
        return math.sqrt(rows / cols)
    if rule == "muon":
        return math.sqrt(max(1.0, rows / cols))
    if rule == "rms_match":
        return 0.2 * math.sqrt(max(rows, cols))
    if rule == "unit":
        return 1.0
    raise ValueError(f"unknown linear scale rule {rule!r}; choose one of {list(SCALES)}")


def exact_polar(G: torch.Tensor) -> torch.Tensor:
    """U V^T from an SVD of G [..., rows, cols] (fp64 inside), over the nonzero singular values only,
    so that, like Newton-Schulz, rank is preserved and the zero matrix maps to zero. Reference path."""
    U, S, Vh = torch.linalg.svd(G.double(), full_matrices=False)
    tol = S.amax(dim=-1, keepdim=True) * max(G.shape[-2:]) * torch.finfo(torch.float64).eps
    keep = (S > tol).to(U.dtype)
    return ((U * keep.unsqueeze(-2)) @ Vh).to(G.dtype)


def block_shape(shape: torch.Size, role: str) -> torch.Size:
    """The independent matrices of a [d_out, d_in] weight: [blocks, d_out / blocks, d_in] for a fused
    role (optim.roles.FUSED_BLOCKS: attn_qkv's Q, K and V), else [d_out, d_in] itself."""
    blocks = FUSED_BLOCKS.get(role, 1)
    return torch.Size([blocks, shape[0] // blocks, shape[1]]) if blocks > 1 else torch.Size(shape)


class LinearMap:
    """The hidden matrices' update rule; cfg: the optim config (optim/hybrid_config.py's fields)."""

    name = "linear"

    def __init__(self, cfg: Any):
        self.scale, self.ns_method, self.ns_steps = cfg.scale, cfg.ns_method, cfg.ns_steps
        self.ns_norm, self.update_bf16 = cfg.ns_norm, cfg.update_bf16
        self.momentum_form, self.nesterov = cfg.momentum_form, cfg.nesterov
        self.before_ns, self.after_ns = active(cfg, "before_ns"), active(cfg, "after_ns")  # optim/stages/

    # ---- the norm -----------------------------------------------------------------------------

    @staticmethod
    def norm(W: torch.Tensor) -> torch.Tensor:
        """RMS->RMS operator norm of each matrix of W [..., d_out, d_in] (fp64): sqrt(d_in/d_out) spectral(W)."""
        return math.sqrt(W.size(-1) / W.size(-2)) * torch.linalg.matrix_norm(W.double(), ord=2)

    @staticmethod
    def dual_norm(G: torch.Tensor) -> torch.Tensor:
        """Its dual, sqrt(d_out/d_in) * nuclear(G), of each matrix of G [..., d_out, d_in] (fp64, by SVD)."""
        return math.sqrt(G.size(-2) / G.size(-1)) * torch.linalg.matrix_norm(G.double(), ord="nuc")

    def dual_norm_estimate(self, R: torch.Tensor) -> torch.Tensor:
        """The dual norm without an SVD, summed over the matrices of R [..., d_out, d_in] (fp32): nuclear(R) =
        <R, U V^T>, with U V^T from this map's Newton-Schulz (LANTON's noise sample). 0-dim, R's device."""
        polar = orthogonalize(R, self.ns_method, self.ns_steps, norm=self.ns_norm).float()
        return (R.float() * polar).sum() * math.sqrt(R.size(-2) / R.size(-1))

    # ---- the duality map ----------------------------------------------------------------------

    def dualize(self, G: torch.Tensor, exact: bool = False) -> torch.Tensor:
        """scale(d_out, d_in) * U V^T for each matrix of G = U S V^T [..., d_out, d_in], U V^T by this map's
        Newton-Schulz, or by an exact SVD with `exact` (tests, references). G's shape and dtype."""
        return self.scaled(exact_polar(G) if exact else orthogonalize(G, self.ns_method, self.ns_steps,
                                                                      norm=self.ns_norm))

    def scaled(self, polar: torch.Tensor) -> torch.Tensor:
        """The duality map's last step: scale(d_out, d_in) * U V^T, for each matrix of polar [..., d_out, d_in]."""
        return polar * linear_scale(polar.size(-2), polar.size(-1), self.scale)

    def orthogonalize(self, mats: list[torch.Tensor]) -> list[torch.Tensor]:
        """U V^T of every tensor in `mats` ([..., rows, cols] each), one batched Newton-Schulz call per shape."""
        return orthogonalize_batched(mats, self.ns_method, self.ns_steps, norm=self.ns_norm)

    # ---- state and the update -----------------------------------------------------------------

    @staticmethod
    def check_shape(name: str, role: str, p: torch.Tensor) -> None:
        blocks = FUSED_BLOCKS.get(role, 1)
        if p.ndim != 2 or p.size(0) % blocks:
            raise ValueError(f"parameter {name!r} (role {role!r}) is routed to the linear map but has shape "
                             f"{tuple(p.shape)}; expected [d_out, d_in]" +
                             (f" with d_out divisible by {blocks}" if blocks > 1 else ""))

    @staticmethod
    def init_state(state: dict, p: torch.Tensor) -> None:
        """Create the momentum buffer if `state` lacks it (stages create their own entries when they first act)."""
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = torch.zeros_like(p, dtype=torch.float32)

    def direction(self, p: torch.Tensor, state: dict, beta: float, role: str, step: int = 0
                  ) -> Generator[Callable[[], torch.Tensor], torch.Tensor, torch.Tensor]:
        """The direction d (fp32, or bf16 with optim.update_bf16; p's shape) that p steps along, p <- p - lr d,
        as a generator: it runs to the Newton-Schulz input and yields a function making it (called on the rank
        that orthogonalizes this weight, or on every rank when a before_ns stage is on), is sent back U V^T
        ([blocks, rows, cols] or [rows, cols]) and returns d. step: the 0-based optimizer step (stages' schedules)."""
        self.init_state(state, p)
        buf, shape = state["momentum_buffer"], block_shape(p.shape, role)
        update_momentum_(buf, p.grad, beta, self.momentum_form)  # every rank: the state stays complete
        ctx = MatrixContext(state, role, linear_scale(shape[-2], shape[-1], self.scale), param=p, grad=p.grad,
                            step=step)

        def ns_input() -> torch.Tensor:  # the Nesterov direction, per block, through the before_ns stages
            u = nesterov(buf, p.grad, beta, self.momentum_form, self.nesterov).view(shape)
            for stage in self.before_ns:
                u = stage(u, ctx)
            return u

        # Newton-Schulz, per block: HybridOptimizer batches it with the other weights'
        polar = yield ns_input
        # #46 keeps Muon's update in bf16 from Newton-Schulz on: scaled in bf16, re-rounded by each stage
        d = self.scaled(polar.to(torch.bfloat16) if self.update_bf16 else polar)  # the duality map: scale * U V^T
        for stage in self.after_ns:
            d = stage(d, ctx)
        return d.reshape(p.shape)

    def noise_sample(self, p: torch.Tensor, state: dict, role: str) -> torch.Tensor:
        """LANTON's noise sample of this layer: the dual norm of G - B (B: the updated momentum buffer),
        summed over blocks, estimated by Newton-Schulz (optim/stages/lanton.py). 0-dim fp32."""
        residual = p.grad.float() - state["momentum_buffer"]
        return self.dual_norm_estimate(residual.view(block_shape(p.shape, role)))

    def ns_error(self, u: torch.Tensor) -> dict[str, float]:
        """Diagnostics on the first matrix of u [..., rows, cols]: Newton-Schulz's relative error against
        the exact polar factor (fp64) and the range of the singular values it produced (ideal: all 1)."""
        x = u.reshape(-1, *u.shape[-2:])[0]
        ns = orthogonalize(x, self.ns_method, self.ns_steps, norm=self.ns_norm).double()
        ref = exact_polar(x.double())
        s = torch.linalg.svdvals(ns)
        k = min(x.shape)
        return {"ns_error": float((ns - ref).norm() / ref.norm().clamp_min(1e-30)),
                "ns_sv_min": float(s[:k].min()), "ns_sv_max": float(s.max())}
