"""Schedules over optimizer steps: the learning rate of every param group and the validation cadence.

lr, `train.lr_schedule`:
- linear (the default): linear warmup x (constant, then linear warmdown), the speedrun's trapezoid,
  one factor for every group (lr = initial_lr x lr_factor). Track 3's "stable then decay" schedule is
  the same shape: eta = 1 until progress 1 - cooldown_frac, then (1 - progress) / cooldown_frac, i.e.
  warmdown_frac = cooldown_frac and final_lr_frac = 0; its AdamW result multiplies that by
  min(1, (step + 1) / 250) (warmup_frac = 250 / max_steps).
- powercool (track-3 result #46, track3_best46_cwd_rowfloor_tailema.py): per group
  lr_g(t) = min(lr0_g, c_g max(0, T - t)^p), flat until the power curve falls below lr0_g, then a
  power-law cooldown reaching 0 at step T (`train.powercool_end`, default max_steps). Each group has its
  own c_g (`train.powercool_c.<role>`, or c_g = `train.powercool_c_over_lr` x lr0_g), so groups leave
  their flat part at different steps (#46: Muon from step 514, the Adam groups from 1488). The rate is
  computed as that min() directly, not as lr0 x factor, which would differ from it in the last bit.
- staged (track-1 records 29, 43, 46): flat x per-stage multipliers, a linear cooldown to final_lr_frac
  over the scheduled steps, extension steps at the floor; one factor for every group
  (harness/loop/stages.py, with the records' windows and batch stages).
"""
from __future__ import annotations

from typing import Any

from harness.config.schema import ConfigError
from harness.loop.stages import StageSchedule


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


def powercool_lr(step: int, lr0: float, c: float, end: int, power: float) -> float:
    """min(lr0, c * max(0, end - step)^power): the rate (not a factor) of optimizer step `step`
    (0-based); Python floats in the script's order of operations, so the result is the script's bit for bit."""
    return min(lr0, c * max(0.0, end - step) ** power)


def powercool_constants(param_groups: list[dict], tc: Any) -> list[float]:
    """c_g of every group, from its "role": train.powercool_c.<role> if given, else
    train.powercool_c_over_lr x the group's initial_lr. Raises ConfigError naming the missing key."""
    out = []
    for group in param_groups:
        role = group.get("role")
        c = getattr(tc.powercool_c, role, None) if isinstance(role, str) else None
        if c is not None:
            out.append(float(c))
        elif tc.powercool_c_over_lr is not None:
            out.append(tc.powercool_c_over_lr * group["initial_lr"])
        else:
            raise ConfigError(f"train.lr_schedule=powercool: param group {role!r} has no constant: set "
                             f"train.powercool_c.{role} (or train.powercool_c_over_lr for every group)")
    return out


class LrSchedule:
    """Sets every param group's "lr" for a step, following train.lr_schedule (see the module docstring)."""

    def __init__(self, tc: Any, param_groups: list[dict]):
        self.tc = tc
        self.powercool = tc.lr_schedule.value == "powercool"
        self.staged = StageSchedule(tc) if tc.lr_schedule.value == "staged" else None
        if self.powercool:
            self.constants = powercool_constants(param_groups, tc)
            self.end = tc.max_steps if tc.powercool_end is None else tc.powercool_end

    def apply(self, param_groups: list[dict], step: int) -> None:
        tc = self.tc
        if self.powercool:
            for group, c in zip(param_groups, self.constants):
                group["lr"] = powercool_lr(step, group["initial_lr"], c, self.end, tc.powercool_power)
            return
        if self.staged is not None:
            factor = self.staged.lr_factor(step)
        else:
            factor = lr_factor(step, tc.max_steps, tc.warmup_frac, tc.warmdown_frac, tc.final_lr_frac)
        for group in param_groups:
            group["lr"] = group["initial_lr"] * factor


def extra_val_steps(ranges: list) -> frozenset[int]:
    """The steps named by train.val_extra_steps: each entry {first, last, every} gives first, first + every,
    ... up to and including last."""
    return frozenset(s for r in ranges for s in range(r.first, r.last + 1, r.every))


def val_due(step: int, max_steps: int, val_every: int, tail_every: int = 0, tail_frac: float = 0.0,
            at_start: bool = True, extra: frozenset[int] = frozenset()) -> bool:
    """Whether to validate before optimizer step `step` (0..max_steps; always at max_steps).

    Every `val_every` steps (0: only at the end); with tail_every > 0, every `tail_every` steps
    once step / max_steps >= 1 - tail_frac (track 3: every 125, every 25 in the last 10%); at step 0
    only if `at_start` (#46 has no step-0 validation); and at every step in `extra` (#46: every 5
    steps in [2600, 2810], ...).
    """
    if step == max_steps or step in extra:
        return True
    if step == 0 and not at_start:
        return False
    every = tail_every if tail_every > 0 and step / max_steps >= 1 - tail_frac else val_every
    return every > 0 and step % every == 0
