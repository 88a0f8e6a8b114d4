"""Schedules over optimizer steps: the learning-rate factor and the validation cadence.

lr: linear warmup x (constant, then linear warmdown), the speedrun's trapezoid. Track 3's
"stable then decay" schedule is the same shape: eta = 1 until progress 1 - cooldown_frac, then
(1 - progress) / cooldown_frac, i.e. warmdown_frac = cooldown_frac and final_lr_frac = 0; its
AdamW result multiplies that by min(1, (step + 1) / 250) (warmup_frac = 250 / max_steps).
"""
from __future__ import annotations


def lr_factor(step: int, max_steps: int, warmup_frac: float, warmdown_frac: float, final_frac: float) -> float:
    """Multiplier of the base LR for optimizer step `step` (0-based, < max_steps).

    Warmup: (step + 1) / W over the first W = round(warmup_frac * max_steps) steps.
    Warmdown: over the last warmdown_frac * max_steps steps, a float (record 20's 0.4 x 1393 =
    557.2, track 3's 0.7 x 5625 = 3937.5; no rounding), the factor falls linearly from 1 to
    `final_frac` at step max_steps. The two multiply where they overlap (track 3's AdamW does).
    """
    warmup = round(warmup_frac * max_steps)
    warmdown = warmdown_frac * max_steps
    factor = min(1.0, (step + 1) / warmup) if warmup else 1.0
    if warmdown and step >= max_steps - warmdown:
        left = (max_steps - step) / warmdown  # 1 where the warmdown starts, 1/warmdown at the last step
        factor *= final_frac + (1.0 - final_frac) * left
    return factor


def val_due(step: int, max_steps: int, val_every: int, tail_every: int = 0, tail_frac: float = 0.0) -> bool:
    """Whether to validate before optimizer step `step` (0..max_steps; always at max_steps).

    Every `val_every` steps (0: only at the end); with tail_every > 0, every `tail_every` steps
    once step / max_steps >= 1 - tail_frac (track 3: every 125, every 25 in the last 10%).
    """
    if step == max_steps:
        return True
    every = tail_every if tail_every > 0 and step / max_steps >= 1 - tail_frac else val_every
    return every > 0 and step % every == 0
