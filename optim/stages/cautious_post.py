"""Cautious weight decay after the step (switch `optim.cautious_wd_post`), as track-3 result #46 runs it.

Source: track-3 result #46 (track3_best46_cwd_rowfloor_tailema.py, CWD 0.025, applied after the radius
pin), after Chen et al., "Cautious Weight Decay", arXiv 2510.12402. With W the PRE-step weight, u the
final direction (W <- W - lr u) and c = optim.cautious_wd_post_rate:

    mask = 1[u W > 0]                (strict, elementwise, from the pre-step W)
    after the step (and after the radius pin, which precedes it in the registry):
    W <- W (1 - lr c mask)

It differs from optim.cautious_wd (optim/stages/cautious.py, unchanged): there the mask is u W >= 0 on the
weight being decayed, the decay is lr wd with wd = optim.weight_decay and it replaces p <- p (1 - lr wd)
before the step on every map; here the rate is its own key, the decay multiplies the weight after the
step (so the pin cannot undo it) and it acts on the linear-map weights only. Acts at the around_step
hook (optim/stages/base.py), every rank; no state. Cost: one mask per matrix.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from optim.stages.base import Key, Stage


def _around_step(w: torch.Tensor, u: torch.Tensor, lr: float, rate: float) -> Callable[[], None]:
    mask = (u.float() * w.float() > 0).to(w.dtype)
    return lambda: w.mul_(1.0 - (lr * rate) * mask)


STAGE = Stage(
    name="cautious_wd_post", hook="around_step",
    doc="#46's cautious decay: W (1 - lr c 1[u W > 0]) after the step and the pin (optim/stages/cautious_post.py)",
    keys=(Key("cautious_wd_post_rate", float, 0.025, "c: the decay per unit of lr on the agreeing coordinates",
              range=">= 0"),),
    build=lambda cfg: lambda w, u, lr: _around_step(w, u, lr, cfg.cautious_wd_post_rate))
