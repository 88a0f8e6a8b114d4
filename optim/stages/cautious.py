"""Cautious weight decay (switch `optim.cautious_wd`), after Chen, Li, Liang, Su, Xie, Pierse, Liang,
Lao & Liu, "Cautious Weight Decay", arXiv 2510.12402.

Decoupled weight decay shrinks every coordinate towards 0; where the optimizer's own update pushes a
weight away from 0, the decay fights it. CWD decays only the coordinates where the update u (the
direction subtracted from the weights) and the weight agree in sign:

    w <- w - lr * (u + wd * 1[u * w >= 0] * w)

(the indicator is elementwise; u = dualize(momentum) on the linear and embed maps, Adam's direction
on the Adam path). Everything else about the step is unchanged; it needs a weight decay to act on
(optim.weight_decay for the linear and embed maps, optim.adam_weight_decay for Adam). Cost: one
elementwise mask per decayed tensor. The stage acts at the `decay` hook (optim/stages/base.py).
"""
from __future__ import annotations

import torch

from optim.stages.base import Stage


def cautious_decay_(p: torch.Tensor, u: torch.Tensor, decay: float | torch.Tensor, lr: float = 0.0) -> None:
    """p <- p - decay * 1[u * p >= 0] * p in place (decay = lr * wd, a float or a 0-dim tensor);
    u: the update direction, p's shape (fp32 as the maps return it, or bf16 with optim.update_bf16; the sign
    test runs in the wider of u's and p's dtypes); lr: the layer's rate, which the step p <- p - lr u follows.

    A bf16 u (optim.update_bf16) takes the decay into the update before it is rounded, as records 43-46's
    NorMuon adds lr wd 1[u p >= 0] p into its bf16 update (the coefficient in p's dtype):
    p <- p - lr (bf16(u + (decay / lr) 1[u p >= 0] p) - u), so that the step then completes
    p - lr bf16(u + ...). Decay terms below u's bf16 resolution are then rounded as the scripts round them."""
    if u.dtype == torch.bfloat16 and lr and not isinstance(decay, torch.Tensor):
        coeff = torch.tensor(decay / lr, dtype=torch.float32).to(p.dtype).float()  # the scripts: in p's dtype
        agree32 = (u * p >= 0).float()
        folded = (u.float() + p.float() * (coeff * agree32)).to(torch.bfloat16)
        p.sub_((folded.float() - u.float()).to(p.dtype), alpha=lr)
        return
    agree = (u * p >= 0).to(p.dtype)
    if isinstance(decay, torch.Tensor):
        p.sub_(p * agree * decay.to(p.dtype))
    else:
        p.addcmul_(p, agree, value=-decay)  # one fused pass: p - decay * p * agree


def _check(cfg) -> None:
    if cfg.cautious_wd and not (cfg.weight_decay > 0 or cfg.adam_weight_decay > 0):
        raise ValueError("optim.cautious_wd=true masks a weight decay, but optim.weight_decay and "
                         "optim.adam_weight_decay are both 0: set one of them > 0 (or drop cautious_wd)")


STAGE = Stage(
    name="cautious_wd", hook="decay",
    doc="decay only where update and weight agree in sign (optim/stages/cautious.py)",
    check=_check,
    build=lambda cfg: cautious_decay_)
