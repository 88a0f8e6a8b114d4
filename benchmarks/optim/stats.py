"""The optimizer benchmark's arithmetic: reading a run, curves, steps to a target, Welch's t-test.

A run (benchmarks/optim/run.py `load_run`) is {"steps", "val", "time_s", "final", "ms_per_step"}:
validation steps, val losses (nats/token), training seconds at each, the summary's final val loss
and mean ms per optimizer step. Steps to a target are read with analysis.curves.first_crossing (the
rule compare.py and the trainer use), linearly interpolated between validations.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from statistics import mean, stdev

from analysis.curves import Curve, Point, first_crossing


def load_run(run_dir: Path) -> dict | None:
    """Val curve and timing of a finished run (its metrics.jsonl has a summary), or None."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return None
    events = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a torn last line of an interrupted run
    summary = next((e for e in events if e.get("event") == "summary"), None)
    if summary is None:
        return None
    vals = sorted({e["step"]: e for e in events if e.get("event") == "val"}.values(), key=lambda e: e["step"])
    return {"steps": [e["step"] for e in vals], "val": [e["val_loss"] for e in vals],
            "time_s": [e["train_time_ms"] / 1000 for e in vals], "final": summary["final_val_loss"],
            "ms_per_step": summary["train_time_ms"] / max(1, summary["steps"])}


def steps_to(run: dict, target: float, key: str = "steps") -> float:
    """First (interpolated) step, or training seconds with key="time_s", where val <= target; inf if never."""
    curve = Curve("run", [Point(s, 0, 1000 * t, v) for s, t, v in zip(run["steps"], run["time_s"], run["val"])])
    hit = first_crossing(curve, target, interpolate=True)
    if hit is None:
        return math.inf
    return float(hit.step) if key == "steps" else hit.time_ms / 1000


def val_at(run: dict, step: float) -> float:
    """Val loss at `step`, linearly interpolated between validations (nan outside the curve)."""
    steps, vals = run["steps"], run["val"]
    if not steps or step < steps[0] or step > steps[-1]:
        return math.nan
    for (s0, v0), (s1, v1) in zip(zip(steps, vals), zip(steps[1:], vals[1:])):
        if s0 <= step <= s1:
            return v0 if s1 == s0 else v0 + (step - s0) / (s1 - s0) * (v1 - v0)
    return vals[-1]


def mean_curve(runs: list[dict]) -> dict:
    """Seed-averaged curve over the validation steps every run has."""
    common = sorted(set.intersection(*(set(r["steps"]) for r in runs)))
    at = [dict(zip(r["steps"], zip(r["val"], r["time_s"]))) for r in runs]
    return {"steps": common, "val": [mean(a[s][0] for a in at) for s in common],
            "time_s": [mean(a[s][1] for a in at) for s in common]}


def welch_less(a: list[float], b: list[float]) -> tuple[float, float, float]:
    """Welch's unequal-variance t-test of H1: mean(a) < mean(b), one-sided. Returns (t, df, p).

    t = (mean a - mean b) / sqrt(s_a^2/n_a + s_b^2/n_b), df by Welch-Satterthwaite, p = P(T_df <= t).
    nan where either side has < 2 values; with no variance on either side the sign decides."""
    if len(a) < 2 or len(b) < 2 or not all(map(math.isfinite, a + b)):
        return math.nan, math.nan, math.nan
    va, vb = stdev(a) ** 2 / len(a), stdev(b) ** 2 / len(b)
    diff = mean(a) - mean(b)
    if va + vb == 0:
        return (-math.inf if diff < 0 else math.inf if diff > 0 else 0.0), math.nan, \
            (0.0 if diff < 0 else 1.0 if diff > 0 else 0.5)
    t = diff / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    from scipy.stats import t as student_t
    return t, df, float(student_t.cdf(t, df))


def spread(values: list[float]) -> tuple[float, float, float, float]:
    """(mean, sample std (0 for one value), min, max) of finite values; nans if none."""
    vals = [v for v in values if math.isfinite(v)]
    if not vals:
        return math.nan, math.nan, math.nan, math.nan
    return mean(vals), (stdev(vals) if len(vals) > 1 else 0.0), min(vals), max(vals)
