"""EMA-Nesterov: an outer lookahead wrapped around any built optimizer (track-3 result #46,
track3_best46_cwd_rowfloor_tailema.py; the wrapper class there is `EMA_Nesterov`).

Per parameter it keeps P (the weights after the previous step; at construction, a copy of the initial
weights) and b (an EMA of the per-step displacement, zeros at first), both in the parameter's dtype, and
a count k of steps taken. Each optimizer step, with w the weights:
    before the forward (`pre_forward`), if start <= k < end:   w <- w + s_k b,
        s_k = lookahead x lr/initial_lr of the `lr_role` group as the PREVIOUS step set it (1 before any
        step; the constant `lookahead` if lr_role is null);
    `step`: the inner optimizer's step, then (every step, inside the window or not)
        b <- lerp(b, w - P, 1 - ema),   P <- w,   k <- k + 1.
The jump is kept (the forward/backward sees the shifted weights and the inner step starts from them), so
the displacement b averages includes it. #46: lookahead 0.3 scaled by the embedding's lr ratio, ema 0.99,
window k in [300, 1950) of 2900 steps (s = 0.3 at 300, 0.18677 at 1949).
The trainer calls `pre_forward()` before the micro-batches of every step; a step whose update is dropped
(train.nonfinite=skip) does not count, and its jump is not repeated. state_dict() holds the inner
optimizer's state and P, b, k and the last lr ratio, so a resumed run continues exactly.
Keys (optim.lookahead > 0 turns it on; LookaheadKeys, a base of the hybrid optimizer's schema).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch

from optim.roles import ALL_ROLES


@dataclass
class LookaheadKeys:
    lookahead: float = 0.0              # the jump coefficient; 0 = off (no wrapper)
    lookahead_ema: float = 0.99         # EMA factor of the displacement buffer b
    lookahead_start: int = 300          # first step (0-based) with a jump ...
    lookahead_end: int = 1950           # ... and the first without one again
    lookahead_lr_role: Optional[str] = "embed"  # scale the jump by this role's lr ratio; null = constant


def check_lookahead(cfg: Any) -> None:
    """Ranges of the optim.lookahead* keys (ValueError naming the key)."""
    if not cfg.lookahead >= 0:
        raise ValueError(f"optim.lookahead={cfg.lookahead} must be >= 0 (0 = off)")
    if not 0.0 <= cfg.lookahead_ema < 1.0:
        raise ValueError(f"optim.lookahead_ema={cfg.lookahead_ema} must be in [0, 1)")
    if not 0 <= cfg.lookahead_start <= cfg.lookahead_end:
        raise ValueError(f"optim.lookahead_start={cfg.lookahead_start} and optim.lookahead_end={cfg.lookahead_end} "
                         "must satisfy 0 <= start <= end")
    if cfg.lookahead_lr_role is not None and cfg.lookahead_lr_role not in ALL_ROLES:
        raise ValueError(f"optim.lookahead_lr_role={cfg.lookahead_lr_role!r} is not a role; known roles: "
                         f"{sorted(ALL_ROLES)} (or null for a constant coefficient)")


class EMANesterov:
    """Wraps `inner` (see the module docstring); looks like the inner optimizer to the trainer (param_groups,
    zero_grad, diagnostics, ... are the inner one's)."""

    def __init__(self, inner: torch.optim.Optimizer, lookahead: float, ema: float, start: int, end: int,
                 lr_role: str | None):
        self.inner = inner
        self.lookahead, self.ema, self.start, self.end = lookahead, ema, start, end
        self.role_index = None  # an index: load_state_dict replaces the group dicts
        if lr_role is not None:
            found = [i for i, g in enumerate(inner.param_groups) if g.get("role") == lr_role]
            if len(found) != 1:
                raise ValueError(f"optim.lookahead_lr_role={lr_role!r}: the optimizer has {len(found)} groups of "
                                 f"that role (roles: {[g.get('role') for g in inner.param_groups]}); name one, or null")
            self.role_index = found[0]
        self.params = [p for g in inner.param_groups for p in g["params"]]
        with torch.no_grad():
            self.prev = [p.detach().clone() for p in self.params]
            self.buf = [torch.zeros_like(p) for p in self.params]
        self.steps = 0          # k: steps taken
        self.ratio = 1.0        # lr / initial_lr of the lr_role group at the last step (1: none yet)
        self.jumped = False     # pre_forward ran since the last step
        self.last_coefficient = 0.0  # s of the last pre_forward (0: no jump)

    def __getattr__(self, name: str):  # param_groups, zero_grad, has_diagnostics, ...: the inner optimizer's
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    @torch.no_grad()
    def pre_forward(self) -> None:
        """The jump w <- w + s b, if this step lies in the window (once per step)."""
        if self.jumped:
            return
        self.jumped = True
        self.last_coefficient = 0.0
        if self.start <= self.steps < self.end:
            self.last_coefficient = self.lookahead * self.ratio
            for p, b in zip(self.params, self.buf):
                p.add_(b, alpha=self.last_coefficient)

    @torch.no_grad()
    def step(self, closure=None):
        if not self.jumped:
            raise RuntimeError("EMANesterov.step() without pre_forward() before this step's forward pass")
        loss = self.inner.step(closure)
        keep = 1 - self.ema
        for p, prev, b in zip(self.params, self.prev, self.buf):
            b.lerp_(p.sub(prev), keep)
            prev.copy_(p)
        if self.role_index is not None:
            group = self.inner.param_groups[self.role_index]
            self.ratio = group["lr"] / group["initial_lr"]
        self.jumped = False
        self.steps += 1
        return loss

    def state_dict(self) -> dict:
        return {"inner": self.inner.state_dict(),
                "lookahead": {"prev": [t.clone() for t in self.prev], "buf": [t.clone() for t in self.buf],
                              "steps": self.steps, "ratio": self.ratio, "jumped": self.jumped}}

    def load_state_dict(self, state: dict) -> None:
        if "lookahead" not in state:
            raise ValueError("the optimizer state has no EMA-Nesterov buffers (saved with optim.lookahead=0)")
        self.inner.load_state_dict(state["inner"])
        mine = state["lookahead"]
        if len(mine["prev"]) != len(self.params):
            raise ValueError(f"EMA-Nesterov state for {len(mine['prev'])} parameters, this model has {len(self.params)}")
        with torch.no_grad():
            for dst, src in ((self.prev, mine["prev"]), (self.buf, mine["buf"])):
                for d, s in zip(dst, src):
                    d.copy_(s)
        self.steps, self.ratio, self.jumped = int(mine["steps"]), float(mine["ratio"]), bool(mine["jumped"])


def wrap_lookahead(cfg: Any, optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """`optimizer` wrapped in EMA-Nesterov when optim.lookahead > 0 (a schema without the keys: unchanged)."""
    if not getattr(cfg, "lookahead", 0):
        return optimizer
    return EMANesterov(optimizer, cfg.lookahead, cfg.lookahead_ema, cfg.lookahead_start, cfg.lookahead_end,
                       cfg.lookahead_lr_role)
