"""Staged step schedules (track-1 records 29, 43 and 46): lr, attention windows, batch, group parity.

Every quantity is a pure function of the 0-based optimizer step, so a run resumed at step s gets the
schedule it would have had, with no state to checkpoint. Keys: the staged-schedule block of TrainConfig
(harness/config/schema.py). S = max_steps - train.extension_steps are the *scheduled* steps; the steps
S .. max_steps - 1 are *extension* steps (records 43, 46: 40) run at the schedule's end values.

lr factor (train.lr_schedule=staged; every group's lr = initial_lr x factor), with c = warmdown_frac
(the scripts' cooldown_frac), f = final_lr_frac (their 0.1), x = min(lr_progress_cap, step / S):

    m = 1.0, or lr_stages[i].mult for the last stage with x > lr_stages[i].after     (record 46)
    factor = m w + (1 - w) f  with w = (1 - x) / c   where x >= 1 - c;  m elsewhere

Python floats in the scripts' order of operations, so each factor is theirs bit for bit. Record 29's
get_lr is this with no stages (its x stays below 1); record 43's caps x at 0.9999, so its extension
steps run at 1.0 x 0.0002 + 0.9998 x 0.1; record 46 returns 0.1 after S, which is this with cap 1:
x = 1 gives w = 0 and m x 0.0 + 1.0 x 0.1 = 0.1 exactly.

Windows, in model.window_block units (128 tokens): the long window of step s is
window_stages[int(n x (s / H))], n stages over H = window_stage_steps (record 29: max_steps + 1, its
get_ws) or S; window_final on steps >= S (43, 46: 13); the short window is long // 2 (records 29-46).
The validation at max_steps uses window_validate_last as its long window (43, 46: 20) without
re-applying YaRN: the scripts set it after the YaRN update, for that one evaluation.

YaRN events: a `WindowChange(step, old, new)` wherever the long window differs from the previous step's
(steps 1 .. max_steps; the scripts apply YaRN there, before that step's validation and training).
`WindowTracker.advance(step)` returns the changes still to apply to a model at `step`: from a fresh or
resumed model all changes up to it, in order, so a resume replays exactly the script's sequence.

Batch (record 46's get_bs): batch_stages[int(n x (s / S))], batch_final on steps >= S (its
train_bs_extension); a new size starts at the first step computing it, whose micro-batches all take it
(the script's `send_args`, sent with each micro-step of that step). Stages change the packed sequence
length at a fixed sequence count, so the accumulation stays fixed (harness/config/schema.py checks it).

Which groups step (records 43, 46: Adam on odd steps, on two steps' gradients) is the optimizer's own
rule (optim.adam_every, optim/hybrid.py), not a schedule.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple


class Windows(NamedTuple):
    """Attention windows of one step, in model.window_block units (the model's `windows` buffer order)."""
    long: int
    short: int


class Batch(NamedTuple):
    """One step's batch: tokens over all ranks and micro-steps, and the packed length of one sequence."""
    global_batch_tokens: int
    seq_len: int


@dataclass(frozen=True)
class WindowChange:
    """The long window changes from `old` to `new` (window blocks) at `step`, before its validation and
    training: where the scripts call model.yarn.apply(old, new)."""
    step: int
    old: int
    new: int


@dataclass(frozen=True)
class BatchChange:
    """The batch changes from `old` to `new` at `step`: every micro-batch of that step has the new size."""
    step: int
    old: Batch
    new: Batch


def stage_index(step: int, n_stages: int, horizon: int) -> int:
    """int(n x (step / horizon)), the scripts' expression in their float order, capped at the last stage."""
    return min(int(n_stages * (step / horizon)), n_stages - 1)


def staged_lr_factor(step: int, scheduled: int, cooldown_frac: float, floor: float, cap: float = 1.0,
                     stages: list = ()) -> float:
    """The staged lr factor of 0-based step `step` (see the module docstring); `stages` holds objects with
    `after` and `mult` in increasing `after`. cooldown_frac = 0: no cooldown."""
    x = min(cap, step / scheduled)
    lr_max = 1.0
    for stage in stages:
        if x > stage.after:
            lr_max = stage.mult
    if cooldown_frac and x >= 1 - cooldown_frac:
        w = (1 - x) / cooldown_frac
        return lr_max * w + (1 - w) * floor
    return lr_max


def _changes(value_at, end: int, change):
    """change(step, old, new) at every step 1..end - 1 whose value_at(step) differs from the step before's."""
    out, prev = [], value_at(0)
    for step in range(1, end):
        new = value_at(step)
        if new != prev:
            out.append(change(step, prev, new))
        prev = new
    return out


class StageSchedule:
    """The staged schedules of one run, from its TrainConfig (`tc`); see the module docstring."""

    def __init__(self, tc: Any):
        self.tc = tc
        self.max_steps = tc.max_steps
        self.scheduled = tc.max_steps - tc.extension_steps
        self.window_horizon = tc.window_stage_steps if tc.window_stage_steps is not None else self.scheduled
        stages = [Batch(b.global_batch_tokens, b.seq_len) for b in tc.batch_stages]
        self.batch_stages = stages or [Batch(tc.global_batch_tokens, tc.seq_len)]
        final = tc.batch_final
        self.batch_final = Batch(final.global_batch_tokens, final.seq_len) if final is not None else self.batch_stages[-1]
        self._window_changes: list[WindowChange] | None = None
        self._batch_changes: list[BatchChange] | None = None

    # ---- lr -------------------------------------------------------------------------------------

    def lr_factor(self, step: int) -> float:
        """Multiplier of every group's initial lr at step `step` (train.lr_schedule=staged)."""
        tc = self.tc
        return staged_lr_factor(step, self.scheduled, tc.warmdown_frac, tc.final_lr_frac, tc.lr_progress_cap,
                                tc.lr_stages)

    # ---- windows ----------------------------------------------------------------------------------

    @property
    def has_windows(self) -> bool:
        return bool(self.tc.window_stages)

    def windows(self, step: int) -> Windows:
        """The (long, short) windows of step `step` (0..max_steps), for training and ordinary validation."""
        tc = self.tc
        if not tc.window_stages:
            raise ValueError("train.window_stages is empty: this run has no staged windows")
        if step >= self.scheduled and tc.window_final is not None:
            long = tc.window_final
        else:
            long = tc.window_stages[stage_index(step, len(tc.window_stages), self.window_horizon)]
        return Windows(long, long // 2)

    def val_windows(self, step: int) -> Windows:
        """The windows a validation at `step` uses: the step's own, except window_validate_last as the long
        window at max_steps (with the rotary/YaRN state of that step: no WindowChange)."""
        w = self.windows(step)
        if step == self.max_steps and self.tc.window_validate_last is not None:
            return Windows(self.tc.window_validate_last, w.short)
        return w

    def window_changes(self) -> list[WindowChange]:
        """Every step 1..max_steps whose long window differs from the previous step's, in order."""
        if self._window_changes is None:
            self._window_changes = _changes(lambda s: self.windows(s).long, self.max_steps + 1, WindowChange) \
                if self.has_windows else []
        return self._window_changes

    # ---- batch --------------------------------------------------------------------------------------

    def batch(self, step: int) -> Batch:
        """The batch of training step `step` (0..max_steps - 1)."""
        if step >= self.scheduled:
            return self.batch_final
        return self.batch_stages[stage_index(step, len(self.batch_stages), self.scheduled)]

    def batch_changes(self) -> list[BatchChange]:
        """Every training step whose batch differs from the previous step's: where the loader takes the new
        size (record 46's send_args is not None exactly there)."""
        if self._batch_changes is None:
            self._batch_changes = _changes(self.batch, self.max_steps, BatchChange)
        return self._batch_changes

    def tokens_before(self, step: int) -> int:
        """Training tokens of steps 0..step - 1 (the `tokens` of a log event at `step`)."""
        total, start, size = 0, 0, self.batch(0).global_batch_tokens
        for change in self.batch_changes():
            if change.step >= step:
                break
            total += (change.step - start) * size
            start, size = change.step, change.new.global_batch_tokens
        return total + (step - start) * size

    def shapes(self) -> list[tuple[Windows | None, Batch]]:
        """The distinct (windows, batch) pairs of the training steps, in order of first use: what compile
        warm-up steps must visit (the scripts warm up every window and batch size, then reset the rotary
        state). Windows are None without train.window_stages."""
        seen: dict[tuple, None] = {}
        for step in range(self.max_steps):
            seen.setdefault((self.windows(step) if self.has_windows else None, self.batch(step)), None)
        return list(seen)

    def stage_starts(self) -> list[int]:
        """Step 0 and every step where the windows or the batch change (< max_steps): one step of each shape,
        for a compile warm-up that meets every shape before the clock starts."""
        changes = [c.step for c in (self.window_changes() if self.has_windows else [])] + \
                  [c.step for c in self.batch_changes()]
        return sorted({0, *(s for s in changes if s < self.max_steps)})

    def max_seq_len(self) -> int:
        """The longest packed sequence any training step uses (for the model's block_size and memory checks)."""
        return max(b.seq_len for b in [*self.batch_stages, self.batch_final])


class WindowTracker:
    """The YaRN events a model still has to apply. A fresh tracker stands for a model with the windows
    of step 0 (a fresh or resumed model, or one reset after warm-up steps): `advance(step)` returns the
    changes at steps after the last one it was advanced to, up to and including `step`, in order."""

    def __init__(self, schedule: StageSchedule):
        self.schedule, self.at = schedule, 0

    def advance(self, step: int) -> list[WindowChange]:
        if step < self.at:
            raise ValueError(f"the window tracker is at step {self.at}; it cannot go back to step {step} "
                             "(reset the model's rotary state and use a new tracker)")
        due = [c for c in self.schedule.window_changes() if self.at < c.step <= step]
        self.at = step
        return due
