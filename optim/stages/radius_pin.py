"""The radius pin (switch `optim.radius_pin`): after the step, rescale each linear-map weight to the
radius a first-order step would give it, so only the update's radial part changes ||W||.

Source: track-3 result #46 (track3_best46_cwd_rowfloor_tailema.py: its target radius and rescale around
Muon's step). With W the pre-step weight, u the final direction and lr the layer's rate (W <- W - lr u):

    before the step:  r0 = max(||W||_F, 1e-8),   r* = max(r0 - lr <u, W> / r0, 1e-8)
    after the step:   W <- W r* / max(||W||_F, 1e-8)

so the tangential part of the step moves W along its sphere and the finite-step drift off it is
removed. A zero-initialized weight (r0 clamped to 1e-8) is pinned to norm 1e-8 after its first step
and grows only through the radial term. With a weight decay (optim.weight_decay) the pin restores the
radius the decay took (#46 runs none; its decay is optim.cautious_wd_post, after the pin). Norms in fp32.
Acts at the around_step hook (optim/stages/base.py) of the linear-map weights, every rank; no state.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from optim.stages.base import Stage


def target_radius(w: torch.Tensor, u: torch.Tensor, lr: float) -> torch.Tensor:
    """r* = max(r0 - lr <u, W> / r0, 1e-8), r0 = max(||W||_F, 1e-8): the first-order radius after W - lr u."""
    wf = w.float()
    r0 = wf.norm().clamp_min(1e-8)
    return (r0 + -lr * (u.float() * wf).sum() / r0).clamp_min(1e-8)


def pin_(w: torch.Tensor, radius: torch.Tensor) -> None:
    """W <- W radius / max(||W||_F, 1e-8), in place."""
    w.mul_((radius / w.float().norm().clamp_min(1e-8)).to(w.dtype))


def _around_step(w: torch.Tensor, u: torch.Tensor, lr: float) -> Callable[[], None]:
    radius = target_radius(w, u, lr)
    return lambda: pin_(w, radius)


STAGE = Stage(
    name="radius_pin", hook="around_step",
    doc="rescale each hidden matrix to its first-order radius after the step (optim/stages/radius_pin.py)",
    build=lambda cfg: _around_step)
