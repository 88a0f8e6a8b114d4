"""The radial brake (switch `optim.radial_brake`): damp the part of the update that grows the weight.

Source: track-3 result #46 (track3_best46_cwd_rowfloor_tailema.py, its radial scaling of Muon's update,
RADIAL_OUTWARD_SCALE 0.5 / RADIAL_INWARD_SCALE 1.0). The update u (the direction subtracted from W, so the
weight moves by -lr u) splits into its component along W and the rest:

    c = <u, W> / max(||W||_F^2, 1e-12),      u <- (u - c W) + s c W,
    s = radial_outward (0.5) if c < 0 (the step -lr u moves W outward, its norm grows), else radial_inward (1.0)

The tangential part is untouched. W is the whole parameter (a fused weight's blocks together), the
pre-step weight; computed in fp32, returned in u's dtype (bf16 with optim.update_bf16, as #46 rounds).
Acts at the linear map's after_ns hook (optim/stages/base.py), every rank; no state. Cost: 2 reductions.
"""
from __future__ import annotations

from functools import partial

import torch

from optim.stages.base import Key, MatrixContext, Stage


def radial_brake(u: torch.Tensor, w: torch.Tensor, outward: float, inward: float) -> torch.Tensor:
    """u (W's shape) with its radial component along w scaled by `outward` or `inward` (module docstring)."""
    uf, wf = u.float(), w.float()
    c = (uf * wf).sum() / (wf * wf).sum().clamp_min(1e-12)
    radial = c * wf
    s = torch.where(c < 0, uf.new_tensor(outward), uf.new_tensor(inward))
    return ((uf - radial) + s * radial).to(u.dtype)


def _after_ns(d: torch.Tensor, ctx: MatrixContext, outward: float, inward: float) -> torch.Tensor:
    return radial_brake(d.reshape(ctx.param.shape), ctx.param, outward, inward).view(d.shape)


STAGE = Stage(
    name="radial_brake", hook="after_ns",
    doc="scale the update's radial component, outward 0.5 / inward 1 (optim/stages/radial.py)",
    keys=(Key("radial_outward", float, 0.5, "factor on the radial part when the step grows ||W||", range=">= 0"),
          Key("radial_inward", float, 1.0, "factor on the radial part when the step shrinks ||W||", range=">= 0")),
    build=lambda cfg: partial(_after_ns, outward=cfg.radial_outward, inward=cfg.radial_inward))
