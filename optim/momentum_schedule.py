"""The momentum beta of the linear and embed maps at each optimizer step: warm-up, plateau, cool-down.

With t the 0-based step (the number of steps taken before this one), w = momentum_warmup_steps,
c = momentum_cooldown_steps, T = momentum_horizon (the run's length in optimizer steps), start =
momentum_warmup_start, end = momentum_cooldown_end, beta_max = momentum:

    t < w:            ramp from start towards beta_max,  f = t / w
    t > T - c (c > 0): ramp from beta_max towards end,   f = (t - (T - c)) / c
    otherwise:        beta_max

Two ways of writing the ramp from a to b, equal up to one rounding (`momentum_ramp`):
    blend:  (1 - f) a + f b      (the harness' warm-up since record 9, unchanged)
    offset: a + f (b - a)        (track-3 result #46, track3_best46_cwd_rowfloor_tailema.py, its Muon mu
                                  schedule: 0.85 -> 0.95 over 300 steps, 0.95 -> 0.85 over the last 200 of 2900)
The cool-down ends one step short of `end` at the horizon's last step (t = T - 1: f = (c - 1) / c), as #46's.
"""
from __future__ import annotations

RAMPS = ("blend", "offset")


def _ramp(a: float, b: float, f: float, form: str) -> float:
    return a + f * (b - a) if form == "offset" else (1 - f) * a + f * b


def momentum_at(t: int, momentum: float, warmup_start: float, warmup_steps: int, cooldown_end: float = 0.0,
                cooldown_steps: int = 0, horizon: int = 0, form: str = "blend") -> float:
    """beta at 0-based optimizer step t (see the module docstring); cooldown_steps = 0: no cool-down."""
    if warmup_steps > 0 and t < warmup_steps:
        return _ramp(warmup_start, momentum, t / warmup_steps, form)
    if cooldown_steps > 0 and t > horizon - cooldown_steps:
        return _ramp(momentum, cooldown_end, (t - (horizon - cooldown_steps)) / cooldown_steps, form)
    return momentum
