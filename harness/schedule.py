"""Learning-rate schedule: linear warmup, constant, linear warmdown (the speedrun's trapezoid)."""
from __future__ import annotations


def lr_factor(step: int, max_steps: int, warmup_frac: float, warmdown_frac: float, final_frac: float) -> float:
    """Multiplier of the base LR for optimizer step `step` (0-based, < max_steps).

    Warmup ramps from 1/warmup up to 1 over the first warmup_frac*max_steps steps;
    the last warmdown_frac*max_steps steps fall linearly to `final_frac` at the end.
    """
    warmup = round(warmup_frac * max_steps)
    warmdown = warmdown_frac * max_steps
    if step < warmup:
        return (step + 1) / warmup
    if warmdown and step >= max_steps - warmdown:
        left = (max_steps - step) / warmdown  # 1 at the start of the warmdown, 1/warmdown at the last step
        return final_frac + (1.0 - final_frac) * left
    return 1.0
