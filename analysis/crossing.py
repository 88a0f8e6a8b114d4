"""When a run reaches its target val loss: the validation point of an event and the first-crossing rule.

The one rule for "reached the target at": the trainer's logger applies it live (ValTracker, for every
sink's end-of-run summary), and analysis/ applies it afterwards to run folders, speedrun logs and the
reference records (analysis.curves reads those into Curves). The live logger imports this module
alone, so it stays free of everything else analysis/ reads or plots.
Units: steps are optimizer steps, tokens are training tokens seen, times are training milliseconds
(validation and compilation excluded), losses are nats/token.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

DEFAULT_TARGET = 3.28  # the speedrun's target val loss (tracks 1 and 3)


@dataclass
class Point:
    step: int
    tokens: int
    time_ms: Optional[float]  # None where the source has no times (record 2's log)
    val_loss: float


@dataclass
class Curve:
    name: str
    points: list[Point] = field(default_factory=list)

    @property
    def final(self) -> Point:
        return self.points[-1]

    @property
    def has_time(self) -> bool:
        return all(p.time_ms is not None for p in self.points[1:])


def val_point(event: dict, metric: str = "val_loss") -> Optional[Point]:
    """The curve point of a metrics event: a "val" event with a loss, else None. metric: the field read as
    the loss (val_ema_loss: track-3 result #46's tail-EMA readout, harness/loop/tail_ema.py)."""
    if event.get("event") != "val" or event.get(metric) is None:
        return None
    return Point(int(event["step"]), int(event["tokens"]), float(event["train_time_ms"]), float(event[metric]))


@dataclass
class Crossing:
    step: float
    tokens: float
    time_ms: Optional[float]
    val_loss: float
    interpolated: bool


def first_crossing(curve: Curve, target: float = DEFAULT_TARGET, interpolate: bool = False) -> Optional[Crossing]:
    """Where the curve first reaches val_loss <= target, or None.

    Default: the first *logged* validation at or below the target (what the speedrun counts).
    interpolate=True: linear interpolation in step, tokens and time between that point and
    the validation before it, a finer estimate when validations are sparse.
    """
    prev = None
    for p in curve.points:
        if p.val_loss <= target:
            if not interpolate or prev is None or prev.val_loss == p.val_loss:
                return Crossing(p.step, p.tokens, p.time_ms, p.val_loss, False)
            f = (prev.val_loss - target) / (prev.val_loss - p.val_loss)
            lerp = lambda a, b: a + f * (b - a)
            t = lerp(prev.time_ms, p.time_ms) if p.time_ms is not None and prev.time_ms is not None else None
            return Crossing(lerp(prev.step, p.step), lerp(prev.tokens, p.tokens), t, target, True)
        prev = p
    return None


class ValTracker:
    """Best val loss, and the first validation at which val loss reached the target (val_loss <= target);
    with metric="val_ema_loss" (the trainer's, when train.tail_ema is on) both read the readout instead.

    The trainer's MetricsLogger feeds it live events for every sink's summary, and analysis/summarize.py
    feeds it the events of a metrics.jsonl; the crossing is first_crossing above, the same rule
    compare.py applies to records. Validation runs every train.val_every steps, so "reached at" means
    at the first validation that saw it.
    """

    def __init__(self, target_val_loss: float | None, metric: str = "val_loss"):
        self.target = target_val_loss
        self.metric = metric  # the val event's field scored: val_loss, or val_ema_loss (train.tail_ema)
        self.points: list[Point] = []  # finite validations, in arrival order

    def update(self, event: dict) -> None:
        point = val_point(event, self.metric)
        if point is not None and math.isfinite(point.val_loss):
            self.points.append(point)

    def summary(self) -> dict:
        best = min((p.val_loss for p in self.points), default=None)
        hit = first_crossing(Curve("live", self.points), self.target) if self.target is not None else None
        out = {"best_val_loss": best, "target_val_loss": self.target,
               "target_val_loss_step": hit and hit.step, "target_val_loss_train_time_ms": hit and hit.time_ms,
               "target_val_loss_tokens": hit and hit.tokens}
        if self.metric != "val_loss":  # best and target figures read another field: say which
            out["scored_metric"] = self.metric
        return out
