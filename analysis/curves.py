"""Validation-loss curves of runs and records: read them, find when they reach a target, test them.

Sources read by `read_curve(path)`:
- a run folder of this harness (its metrics.jsonl), or a metrics.jsonl file: the "val" events;
- a speedrun log (any other text file): lines `step:N/M val_loss:X train_time:Tms ...`;
- a reference CSV (configs/records/*.csv): `step,val_loss,train_time_ms` (time may be empty), or
  with a leading `run` column several runs of one result (track 3's #36: 10 runs), read by
  `read_curves` / `record_curves` as one curve per run (`read_curve` refuses to merge them).
Units: steps are optimizer steps, tokens are training tokens seen, times are training milliseconds
(validation and compilation excluded). Logs and CSVs carry no token counts: tokens = step x
tokens_per_step (524,288 for every speedrun record).
"""
from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from analysis.records import ReferenceBlockError, experiments_with_reference, reference_of

RECORD_TOKENS_PER_STEP = 524_288
DEFAULT_TARGET = 3.28
LOG_LINE = re.compile(r"step:(\d+)/\d+\s+val_loss:([0-9.]+|nan|inf)\s+train_time:([0-9.]+)ms")


class CurveError(ValueError):
    """A path holds no readable validation curve; the message names it."""


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


def read_metrics(path: str | Path) -> list[dict]:
    """All events of a metrics.jsonl, in file order (skips a torn last line left by a crash)."""
    events = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return events


def val_point(event: dict) -> Optional[Point]:
    """The curve point of a metrics event: a "val" event with a loss, else None."""
    if event.get("event") != "val" or event.get("val_loss") is None:
        return None
    return Point(int(event["step"]), int(event["tokens"]), float(event["train_time_ms"]), float(event["val_loss"]))


def _read_metrics(path: Path, name: str) -> Curve:
    return Curve(name, [p for p in map(val_point, read_metrics(path)) if p is not None])


def _read_log(path: Path, name: str, tokens_per_step: int) -> Curve:
    points = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        m = LOG_LINE.search(line)
        if m:
            step = int(m.group(1))
            points.append(Point(step, step * tokens_per_step, float(m.group(3)), float(m.group(2))))
    return Curve(name, points)


def _read_csv_runs(path: Path, name: str, tokens_per_step: int) -> list[Curve]:
    """One curve per value of the `run` column (a single curve named `name` without that column)."""
    runs: dict[str, Curve] = {}
    with path.open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            step = int(row["step"])
            t = row.get("train_time_ms") or ""
            run = row.get("run")
            curve = runs.setdefault(run, Curve(f"{name}:{run}" if run is not None else name))
            curve.points.append(Point(step, step * tokens_per_step, float(t) if t.strip() else None,
                                      float(row["val_loss"])))
    return list(runs.values())


def _read_csv(path: Path, name: str, tokens_per_step: int) -> Curve:
    curves = _read_csv_runs(path, name, tokens_per_step)
    if len(curves) > 1:
        raise CurveError(f"{path} holds {len(curves)} runs (a `run` column): read it with read_curves / "
                         "record_curves, or compare against their mean with analysis/compare.py --record")
    return curves[0] if curves else Curve(name)


def read_curve(path: str | Path, tokens_per_step: int = RECORD_TOKENS_PER_STEP) -> Curve:
    """The validation curve stored at `path` (see the module docstring), in step order."""
    p = Path(path)
    name = p.name if p.is_dir() or p.name != "metrics.jsonl" else p.parent.name
    if p.is_dir():
        if not (p / "metrics.jsonl").exists():
            raise CurveError(f"{p} has no metrics.jsonl (give a run folder, a metrics.jsonl, a speedrun log or a CSV)")
        p = p / "metrics.jsonl"
    if not p.exists():
        raise CurveError(f"{p} does not exist")
    if p.suffix == ".jsonl":
        curve = _read_metrics(p, name)
    elif p.suffix == ".csv":
        curve = _read_csv(p, p.stem, tokens_per_step)
    else:
        curve = _read_log(p, p.stem, tokens_per_step)
    if not curve.points:
        raise CurveError(f"{p} holds no validation points (expected val events, `step:N/M val_loss:X "
                         "train_time:Tms` lines or step,val_loss,train_time_ms rows)")
    curve.points.sort(key=lambda q: q.step)
    return curve


def _record_path(record: str) -> Path:
    """A CSV path as given, or the curve file that experiment `record`'s `reference:` block names."""
    p = Path(record)
    if p.exists():
        return p
    try:
        known = experiments_with_reference()
        if record not in known:
            raise CurveError(f"no reference curve for record {record!r}: give a CSV path or an experiment with "
                             f"a reference: block, one of {known}")
        return reference_of(record).curve_path
    except ReferenceBlockError as e:  # a malformed block in some experiment file
        raise CurveError(str(e)) from None


def record_curve(record: str) -> Curve:
    """A record's reference curve by experiment name (its `reference.curve` under configs/records/) or CSV path."""
    return read_curve(_record_path(record))


def record_curves(record: str, tokens_per_step: int = RECORD_TOKENS_PER_STEP) -> list[Curve]:
    """Every run of a reference result (one curve for the track-1 records, 10 for track 3's #36)."""
    p = _record_path(record)
    if p.suffix != ".csv":
        return [read_curve(p, tokens_per_step)]
    curves = [c for c in _read_csv_runs(p, p.stem, tokens_per_step) if c.points]
    if not curves:
        raise CurveError(f"{p} holds no validation points")
    for c in curves:
        c.points.sort(key=lambda q: q.step)
    return curves


@dataclass
class BandPoint:
    step: int
    tokens: int
    time_ms: Optional[float]  # mean over the runs (None if any run lacks a time)
    mean: float
    std: float                # sample std over the runs (0 for one run)
    lo: float
    hi: float
    n: int


def band(curves: list[Curve]) -> list[BandPoint]:
    """Mean, spread and range of val loss over runs, at the steps every run validated."""
    common = set.intersection(*({p.step for p in c.points} for c in curves)) if curves else set()
    out = []
    for step in sorted(common):
        pts = [next(p for p in c.points if p.step == step) for c in curves]
        losses = [p.val_loss for p in pts]
        n = len(losses)
        mean = sum(losses) / n
        std = math.sqrt(sum((x - mean) ** 2 for x in losses) / (n - 1)) if n > 1 else 0.0
        times = [p.time_ms for p in pts]
        t = None if any(x is None for x in times) else sum(times) / n
        out.append(BandPoint(step, pts[0].tokens, t, mean, std, min(losses), max(losses), n))
    return out


def mean_curve(curves: list[Curve], name: str | None = None) -> Curve:
    """The runs' mean val loss (and mean time) at the steps every run validated, as one curve."""
    if len(curves) == 1:
        return curves[0]
    label = name or f"{curves[0].name.split(':')[0]} (mean of {len(curves)})"
    return Curve(label, [Point(b.step, b.tokens, b.time_ms, b.mean) for b in band(curves)])


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


@dataclass
class TTest:
    n: int
    mean: float
    std: float
    t: float
    p: float  # one-sided: H1 mean < target
    target: float
    alpha: float

    @property
    def significant(self) -> bool:
        return self.p < self.alpha


def one_sided_ttest(losses: list[float], target: float = DEFAULT_TARGET, alpha: float = 0.01) -> TTest:
    """One-sample t-test of H0: mean >= target against H1: mean < target (the speedrun's rule)."""
    from scipy import stats

    if len(losses) < 2:
        raise ValueError(f"a t-test needs at least 2 final losses (got {len(losses)})")
    if any(not math.isfinite(x) for x in losses):
        raise ValueError(f"non-finite final loss among {losses}")
    n = len(losses)
    mean = sum(losses) / n
    std = math.sqrt(sum((x - mean) ** 2 for x in losses) / (n - 1))
    if std == 0:  # degenerate: every run identical; the sign decides
        return TTest(n, mean, 0.0, -math.inf if mean < target else math.inf, 0.0 if mean < target else 1.0,
                     target, alpha)
    res = stats.ttest_1samp(losses, target, alternative="less")
    return TTest(n, mean, std, float(res.statistic), float(res.pvalue), target, alpha)
