"""The tail-EMA readout (track-3 result #46, track3_best46_cwd_rowfloor_tailema.py): validation also reads the
loss of a blend of the weights with a slow average of their recent values.

Over the tail window an fp32 EMA E_j of every parameter j except the token embedding (its rows move only
where their tokens occur, and the readout leaves it as trained) is kept, with n = optimizer steps done:
    n == start:          E_j = fp32(w_j)                 (seeded with the weights after `start` steps)
    start < n < end:     E_j <- E_j + (fp32(w_j) - E_j) / tau
(no update at n = end: the last one folds in w_{end-1}). A validation of w while E exists also evaluates
    w_j <- dtype_j((1 - lambda) fp32(w_j) + lambda E_j)       (every non-embedding j)
and puts the weights back exactly; before `start` the readout is the raw loss. Training never sees the
blend. #46: tau 150, lambda 0.6, window [2400, 2900) of 2900 steps; the README's figures and its score use
the readout (`val_ema_loss`). State: the E_j (as many fp32 values as the non-embedding weights) and
whether they exist, in the checkpoint as `tail_ema.pt`.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

# The token embedding: an untied input table, or one tied with the head (optim/roles.py).
EXCLUDED_ROLES = frozenset({"embed", "embed_head"})


class TailEMA:
    def __init__(self, named_params: list[tuple[str, torch.nn.Parameter]], roles: dict[str, str], tau: float,
                 lam: float, start: int, end: int):
        self.params = [p for n, p in named_params if roles[n] not in EXCLUDED_ROLES]
        self.names = [n for n, _ in named_params if roles[n] not in EXCLUDED_ROLES]
        self.tau, self.lam, self.start, self.end = tau, lam, start, end
        self.ema: list[torch.Tensor] | None = None  # None until `start` steps are done

    @torch.no_grad()
    def update(self, steps_done: int) -> None:
        """Call after every optimizer step with the number of steps done (step + 1)."""
        if not self.start <= steps_done < self.end:
            return
        if self.ema is None:
            self.ema = [p.detach().float().clone() for p in self.params]
            return
        for e, p in zip(self.ema, self.params):
            e.add_(p.detach().float() - e, alpha=1.0 / self.tau)

    @torch.no_grad()
    def readout(self, evaluate: Callable[[], float], raw_loss: float) -> float:
        """val_ema_loss: `evaluate()` on the blended weights, which are then put back exactly (raw_loss
        while the EMA does not exist yet)."""
        if self.ema is None:
            return raw_loss
        saved = [p.detach().clone() for p in self.params]
        try:
            for e, p in zip(self.ema, self.params):
                p.copy_(((1.0 - self.lam) * p.float() + self.lam * e).to(p.dtype))
            return evaluate()
        finally:
            for s, p in zip(saved, self.params):
                p.copy_(s)

    def state_dict(self) -> dict:
        return {"names": list(self.names), "ema": None if self.ema is None else [e.clone() for e in self.ema]}

    def load_state_dict(self, state: dict) -> None:
        if list(state["names"]) != self.names:
            raise ValueError(f"the tail EMA was saved for other parameters ({len(state['names'])} tensors, "
                             f"this model has {len(self.names)})")
        # copy=True: a checkpoint's tensors may be memory-mapped from the file
        self.ema = None if state["ema"] is None else [e.to(p.device, torch.float32, copy=True) for e, p in
                                                      zip(state["ema"], self.params)]
