"""Nesterov momentum, shared by the linear and the embed map (each map's `direction` starts with it).

    ema (default):  buf <- beta buf + (1 - beta) g,   u = (1 - beta) g + beta buf     (records 20+)
    sum:            buf <- beta buf + g,              u = g + beta buf                (records 4-12)
    nesterov=false: u = buf

`optim.momentum_form` picks the form. Under a constant beta the two differ by the factor 1 - beta,
which the duality maps normalize away; while beta ramps (the momentum warmup) they weigh old
gradients differently. The buffer is fp32 whatever the parameter's dtype; beta comes from
HybridOptimizer.beta (the warmup).
"""
from __future__ import annotations

import torch

FORMS = ("ema", "sum")


def update_momentum_(buf: torch.Tensor, grad: torch.Tensor, beta: float, form: str) -> None:
    """buf <- beta buf + (1 - beta) g (ema) or beta buf + g (sum), in place; buf fp32, grad's shape."""
    if form == "sum":
        buf.mul_(beta).add_(grad.float())
    else:
        buf.lerp_(grad.float(), 1 - beta)


def nesterov(buf: torch.Tensor, grad: torch.Tensor, beta: float, form: str, enabled: bool) -> torch.Tensor:
    """The direction to dualize, from the already updated buffer: (1 - beta) g + beta buf (ema),
    g + beta buf (sum), or the buffer itself when Nesterov is off (optim.nesterov=false). fp32."""
    if not enabled:
        return buf
    g = grad.float()
    return g.add(buf, alpha=beta) if form == "sum" else g.lerp(buf, beta)
