"""The Adam path: gains, biases and scalars (roles gain, bias, scalar), the head by default
(optim.head_map=adam), embeddings with optim.embed_map=adam (Muon's setup) and hidden matrices with
optim.hidden_map=adam (track 3's AdamW result). These have no operator norm to dualize against (a
vector's coordinates are independent), so they take Adam's elementwise, sign-like step:

    m <- b1 m + (1 - b1) g,   v <- b2 v + (1 - b2) g^2           (t: the group's optimizer step, from 1)
    d = (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
    without bias correction (the roles in optim.adam_no_bias_correction_roles; track-3 result #46's aux Adam,
    track3_best46_cwd_rowfloor_tailema.py): m <- lerp(m, g, 1 - b1), v <- lerp(v, g^2, 1 - b2) (lerp, as the
    script: its roundings), d = m / (sqrt(v) + eps); the first step moves each coordinate by lr (1 - b1) /
    sqrt(1 - b2) (2 lr at (0.8, 0.99)) instead of lr
    with optim.adam_correction=step_size (records 29-46's DistAdam: the correction folded into the step size,
    eps added to the uncorrected root): m <- b1 m + (1 - b1) g, v <- b2 v + (1 - b2) g^2 (mul then add, as the
    scripts), d = m / (sqrt(v) + eps) * sqrt(1 - b2^t) / (1 - b1^t); it equals the torch form with eps
    replaced by eps / sqrt(1 - b2^t)
    p <- p (1 - lr wd) - lr d          applied by HybridOptimizer (the decay by the decay stage when one is
                                       on, optim/stages/: optim.cautious_wd)

betas: optim.adam_betas (optim.hidden_adam_betas for hidden matrices; optim.role_adam_betas.ROLE for one
role), eps: optim.adam_eps, wd:
optim.adam_weight_decay (optim.weight_decay for hidden matrices), each group's own ("betas",
"weight_decay"). State: "exp_avg", "exp_avg_sq", on every rank: fp32, or bf16 with optim.adam_state_dtype=bf16
(records 43-46's DistAdam: every moment update rounds to bf16, and so does the step lr d, which the
step_size form reproduces by rounding lr d and returning it over lr; an eager reading of the script: its
torch.compile'd step may fuse away some of these roundings).
"""
from __future__ import annotations

from typing import Any

import torch


@torch.no_grad()
def adam_direction(grad: torch.Tensor, exp_avg: torch.Tensor, exp_avg_sq: torch.Tensor, step: int,
                   betas: tuple[float, float], eps: float) -> torch.Tensor:
    """Update the moment buffers in place and return the bias-corrected direction d above.
    step: 1-based count of updates including this one. All tensors share grad's shape."""
    beta1, beta2 = betas
    exp_avg.lerp_(grad, 1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    bias1 = 1 - beta1**step
    bias2 = 1 - beta2**step
    denom = (exp_avg_sq / bias2).sqrt_().add_(eps)  # in place on one temporary: big tables (head) are memory-bound
    return torch.div(exp_avg, denom).div_(bias1)


@torch.no_grad()
def adam_direction_step_size(grad: torch.Tensor, exp_avg: torch.Tensor, exp_avg_sq: torch.Tensor, step: int,
                             betas: tuple[float, float], eps: float, lr: float = 1.0) -> torch.Tensor:
    """Update the moment buffers in place and return the step-size-corrected direction (records 29-46's
    DistAdam, the module docstring). step: 1-based count of updates including this one. lr: the step's rate,
    which the scripts fold into the step size before the product is rounded to the moments' dtype (bf16
    moments): the direction is that rounded step divided by lr again (lr = 0: a zero direction)."""
    beta1, beta2 = betas
    exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    correction = (1 - beta2**step) ** 0.5 / (1 - beta1**step)
    step_ = exp_avg.div(exp_avg_sq.sqrt().add_(eps)).mul_(lr * correction)
    return step_ if lr == 1.0 else (step_.float() / lr if lr else torch.zeros_like(step_, dtype=torch.float32))


@torch.no_grad()
def adam_direction_uncorrected(grad: torch.Tensor, exp_avg: torch.Tensor, exp_avg_sq: torch.Tensor,
                               betas: tuple[float, float], eps: float) -> torch.Tensor:
    """Update the moment buffers in place and return m / (sqrt(v) + eps), no bias correction (above)."""
    beta1, beta2 = betas
    exp_avg.lerp_(grad, 1 - beta1)
    exp_avg_sq.lerp_(grad.square(), 1 - beta2)
    return exp_avg / (exp_avg_sq.sqrt() + eps)


class AdamMap:
    """Adam's update rule; cfg: the optim config (optim/hybrid_config.py's fields)."""

    name = "adam"

    def __init__(self, cfg: Any):
        self.eps, self.correction = cfg.adam_eps, cfg.adam_correction
        self.state_dtype = torch.bfloat16 if cfg.adam_state_dtype == "bf16" else torch.float32

    @staticmethod
    def check_shape(name: str, role: str, p: torch.Tensor) -> None:
        """Any shape: Adam is elementwise."""

    def init_state(self, state: dict, p: torch.Tensor) -> None:
        if "exp_avg" not in state:
            state["exp_avg"] = torch.zeros_like(p, dtype=self.state_dtype)
            state["exp_avg_sq"] = torch.zeros_like(p, dtype=self.state_dtype)

    def direction(self, p: torch.Tensor, state: dict, step: int, betas: tuple[float, float],
                  bias_correction: bool = True, lr: float = 1.0) -> torch.Tensor:
        """The direction d (the state's dtype, or fp32; p's shape) that p steps along, p <- p - lr d; step: the
        group's step (from 1); lr: the rate it will be applied at (the step_size form with bf16 moments rounds
        lr d, as the scripts do)."""
        self.init_state(state, p)
        m, v = state["exp_avg"], state["exp_avg_sq"]
        if self.correction == "step_size" and bias_correction:  # mul/add: an fp32 gradient into bf16 moments
            return adam_direction_step_size(p.grad.float(), m, v, step, betas, self.eps,
                                            lr if m.dtype != torch.float32 else 1.0)
        g = p.grad.to(m.dtype)  # lerp wants its operands in the moments' dtype
        if not bias_correction:
            return adam_direction_uncorrected(g, m, v, betas, self.eps)
        return adam_direction(g, m, v, step, betas, self.eps)
