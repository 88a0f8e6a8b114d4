"""The update/weight floor (switch `optim.uw_floor`): no matrix (or output row) moves less than a fixed
fraction of its own size per unit of lr.

Source: track-3 result #46 (track3_best46_cwd_rowfloor_tailema.py: TARGET_UW 0.3825, its RowFloor with
ROWFLOOR_RHO 1.0; the scalar floor is its #44 base's, the same file with ROWFLOOR off). With u the update
(d, after Newton-Schulz and any earlier after_ns stage, e.g. the radial brake), W the pre-step weight,
tau = optim.uw_floor_target, rho = optim.uw_floor_rho:

    per row (uw_floor_per_row=true, "RowFloor"; rows = output neurons, W [d_out, d_in]):
        u_i <- u_i max(tau max(||W_i||, 1e-8) / max(||u_i||, 1e-8), 1)^rho
    scalar (default):
        if max(||u||_F, 1e-8) / max(||W||_F, 1e-8) < tau:  u <- u (tau max(||W||_F, 1e-8) / max(||u||_F, 1e-8))

No Frobenius renormalization: with the radius pin (optim/stages/radius_pin.py) only the shape of the floor
survives. W is the whole parameter (a fused weight's blocks together). Computed in fp32; the result is in
u's dtype, and with optim.update_bf16 the scalar factor is rounded to bf16 first, as #46 multiplies a bf16
update. Acts at the linear map's after_ns hook (optim/stages/base.py), every rank; no state.
"""
from __future__ import annotations

from functools import partial

import torch

from optim.stages.base import Key, MatrixContext, Stage


def row_floor(u: torch.Tensor, w: torch.Tensor, target: float, rho: float) -> torch.Tensor:
    """u [d_out, d_in] with each row raised to at least target * its weight row's norm."""
    r = w.float().norm(dim=1, keepdim=True).clamp_min(1e-8)
    q = u.float().norm(dim=1, keepdim=True).clamp_min(1e-8)
    return (u.float() * torch.clamp(target * r / q, min=1.0).pow(rho)).to(u.dtype)


def scalar_floor(u: torch.Tensor, w: torch.Tensor, target: float) -> torch.Tensor:
    """u raised to ||u||_F = target ||W||_F when it is smaller (module docstring)."""
    w_norm = w.float().norm().clamp_min(1e-8)
    u_norm = u.float().norm().clamp_min(1e-8)
    scale = torch.where(u_norm / w_norm < target, target * w_norm / u_norm, torch.ones_like(w_norm))
    return u * scale.to(u.dtype)


def _after_ns(d: torch.Tensor, ctx: MatrixContext, target: float, per_row: bool, rho: float) -> torch.Tensor:
    u = d.reshape(ctx.param.shape)
    out = row_floor(u, ctx.param, target, rho) if per_row else scalar_floor(u, ctx.param, target)
    return out.view(d.shape)


STAGE = Stage(
    name="uw_floor", hook="after_ns",
    doc="floor on ||u|| / ||W|| per matrix or per output row (RowFloor) (optim/stages/uw_floor.py)",
    keys=(Key("uw_floor_target", float, 0.3825, "the floor on ||u|| / ||W|| (per unit of lr)", range="> 0"),
          Key("uw_floor_per_row", bool, False, "per output row (#46's RowFloor) instead of per matrix"),
          Key("uw_floor_rho", float, 1.0, "exponent on the per-row boost factor", range="> 0")),
    build=lambda cfg: partial(_after_ns, target=cfg.uw_floor_target, per_row=cfg.uw_floor_per_row,
                              rho=cfg.uw_floor_rho))
