"""Validation-loss curves of runs and records: read them, and their mean and spread over runs.

Sources read by `read_curve(path)`:
- a run folder of this harness (its metrics.jsonl), or a metrics.jsonl file: the "val" events;
- a speedrun log (any other text file): lines `step:N/M val_loss:X train_time:Tms ...`;
- a reference CSV (configs/records/*.csv): `step,val_loss,train_time_ms` (time may be empty), or
  with a leading `run` column several runs of one result (track 3's #36: 10 runs), read by
  `read_curves` / `record_curves` as one curve per run (`read_curve` refuses to merge them).
Which loss a curve holds (`metric`, analysis.records.METRICS): val_loss, or val_ema_loss (track 3's
tail-EMA readout: the "val" events' and the CSVs' `val_ema_loss`). A point without the metric (a run
or CSV without a readout, or a validation before the EMA started) reads its val_loss, as the readout
equals val_loss until the EMA starts; `lacks_metric` says when a whole source had none.
Units: steps are optimizer steps, tokens are training tokens seen, times are training milliseconds
(validation and compilation excluded). Logs and CSVs carry no token counts: tokens = step x
tokens_per_step (524,288 for every speedrun record).
The curve types and the first-crossing rule are in analysis.crossing, the tests on final losses in
analysis.stats.
"""
from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from analysis.crossing import Curve, Point, val_point
from analysis.records import METRICS, ReferenceBlockError, experiments_with_reference, reference_of
from analysis.runs import METRICS_FILE, read_events
from analysis.stats import sample_mean_std

RECORD_TOKENS_PER_STEP = 524_288
LOG_LINE = re.compile(r"step:(\d+)/\d+\s+val_loss:([0-9.]+|nan|inf)\s+train_time:([0-9.]+)ms")


class CurveError(ValueError):
    """A path holds no readable validation curve; the message names it."""


def _check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise CurveError(f"unknown metric {metric!r}: choose one of {', '.join(METRICS)}")


def _readout(values: dict, metric: str):
    """values[metric] where the event or CSV row has it (not null, not empty), else its val_loss."""
    v = values.get(metric)
    return values.get("val_loss") if v is None or (isinstance(v, str) and not v.strip()) else v


def _read_metrics(path: Path, name: str, metric: str) -> Curve:
    points = (val_point({**e, "val_loss": _readout(e, metric)}) for e in read_events(path))
    return Curve(name, [p for p in points if p is not None])


def _read_log(path: Path, name: str, tokens_per_step: int) -> Curve:
    points = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        m = LOG_LINE.search(line)
        if m:
            step = int(m.group(1))
            points.append(Point(step, step * tokens_per_step, float(m.group(3)), float(m.group(2))))
    return Curve(name, points)


def _read_csv_runs(path: Path, name: str, tokens_per_step: int, metric: str = "val_loss") -> list[Curve]:
    """One curve per value of the `run` column (a single curve named `name` without that column)."""
    runs: dict[str, Curve] = {}
    with path.open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            step = int(row["step"])
            t = row.get("train_time_ms") or ""
            run = row.get("run")
            curve = runs.setdefault(run, Curve(f"{name}:{run}" if run is not None else name))
            curve.points.append(Point(step, step * tokens_per_step, float(t) if t.strip() else None,
                                      float(_readout(row, metric))))
    return list(runs.values())


def _read_csv(path: Path, name: str, tokens_per_step: int, metric: str) -> Curve:
    curves = _read_csv_runs(path, name, tokens_per_step, metric)
    if len(curves) > 1:
        raise CurveError(f"{path} holds {len(curves)} runs (a `run` column): read it with read_curves / "
                         "record_curves, or compare against their mean with analysis/compare.py --record")
    return curves[0] if curves else Curve(name)


def read_curve(path: str | Path, tokens_per_step: int = RECORD_TOKENS_PER_STEP, metric: str = "val_loss") -> Curve:
    """The validation curve of `metric` stored at `path` (see the module docstring), in step order.
    Speedrun logs print val_loss alone."""
    _check_metric(metric)
    p = Path(path)
    name = p.name if p.is_dir() or p.name != METRICS_FILE else p.parent.name
    if p.is_dir():
        if not (p / METRICS_FILE).exists():
            raise CurveError(f"{p} has no metrics.jsonl (give a run folder, a metrics.jsonl, a speedrun log or a CSV)")
        p = p / METRICS_FILE
    if not p.exists():
        raise CurveError(f"{p} does not exist")
    if p.suffix == ".jsonl":
        curve = _read_metrics(p, name, metric)
    elif p.suffix == ".csv":
        curve = _read_csv(p, p.stem, tokens_per_step, metric)
    else:
        curve = _read_log(p, p.stem, tokens_per_step)
    if not curve.points:
        raise CurveError(f"{p} holds no validation points (expected val events, `step:N/M val_loss:X "
                         "train_time:Tms` lines or step,val_loss,train_time_ms rows)")
    curve.points.sort(key=lambda q: q.step)
    return curve


def record_path(record: str) -> Path:
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


def lacks_metric(path: str | Path, metric: str) -> bool:
    """True when no validation at `path` (a run folder, metrics.jsonl, log or CSV) carries `metric`, so its
    curve of `metric` is its val_loss throughout (a run or result without the readout)."""
    if metric == "val_loss":
        return False
    p = Path(path)
    if p.is_dir():
        p = p / METRICS_FILE
    if p.suffix == ".jsonl":
        return not any(e.get("event") == "val" and e.get(metric) is not None for e in read_events(p))
    if p.suffix == ".csv":
        with p.open(newline="", encoding="utf-8") as f:
            return not any((row.get(metric) or "").strip() for row in csv.DictReader(f))
    return True  # a speedrun log prints val_loss alone


def record_metric(record: str) -> str:
    """The metric a reference is scored on: its reference: block's `metric` by experiment name; val_loss
    for a CSV path (which declares nothing)."""
    if Path(record).exists():
        return "val_loss"
    record_path(record)  # a CurveError naming the known records, for an unknown name
    return reference_of(record).metric


def record_curve(record: str) -> Curve:
    """A record's reference curve by experiment name (its `reference.curve` under configs/records/) or CSV path."""
    return read_curve(record_path(record))


def record_curves(record: str, tokens_per_step: int = RECORD_TOKENS_PER_STEP,
                  metric: Optional[str] = None) -> list[Curve]:
    """Every run of a reference result (one curve for the track-1 records, 10 for track 3's #36, 8 for
    #46), as curves of `metric` (None: the one the reference is scored on, record_metric)."""
    metric = metric or record_metric(record)
    _check_metric(metric)
    p = record_path(record)
    if p.suffix != ".csv":
        return [read_curve(p, tokens_per_step, metric)]
    curves = [c for c in _read_csv_runs(p, p.stem, tokens_per_step, metric) if c.points]
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


def band(curves: list[Curve], every_run: bool = True) -> list[BandPoint]:
    """Mean, spread and range of val loss over runs, at the steps every run validated (every_run=False:
    at every step any run validated, over the runs present there, `n` of them; for a published result
    whose runs stop at different steps: #46's seed 7 stops at 2765, so its later means are over 7)."""
    steps = [{p.step for p in c.points} for c in curves]
    common = (set.intersection if every_run else set.union)(*steps) if curves else set()
    out = []
    for step in sorted(common):
        found = (next((p for p in c.points if p.step == step), None) for c in curves)
        pts = [p for p in found if p is not None]
        losses = [p.val_loss for p in pts]
        n = len(losses)
        mean, std = sample_mean_std(losses)
        times = [p.time_ms for p in pts]
        t = None if any(x is None for x in times) else sum(times) / n
        out.append(BandPoint(step, pts[0].tokens, t, mean, std, min(losses), max(losses), n))
    return out


def mean_curve(curves: list[Curve], name: str | None = None, every_run: bool = True) -> Curve:
    """The runs' mean val loss (and mean time) at the steps every run validated (every_run=False: over the
    runs present at each step, see band), as one curve."""
    if len(curves) == 1:
        return curves[0]
    label = name or f"{curves[0].name.split(':')[0]} (mean of {len(curves)})"
    return Curve(label, [Point(b.step, b.tokens, b.time_ms, b.mean) for b in band(curves, every_run)])


def loss_at(curve: Curve, step: float) -> float:
    """Val loss at `step`, linearly interpolated between validations (nan outside the curve)."""
    pts = curve.points
    if not pts or step < pts[0].step or step > pts[-1].step:
        return math.nan
    for a, b in zip(pts, pts[1:]):
        if a.step <= step <= b.step:
            v0, v1 = a.val_loss, b.val_loss
            return v0 if b.step == a.step else v0 + (step - a.step) / (b.step - a.step) * (v1 - v0)
    return pts[-1].val_loss
