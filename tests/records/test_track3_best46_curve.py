"""Track-3 result #46's curves (configs/records/track3_best46.csv) against what was published: the shared curves
file it was converted from, row for row, and the README's table and figures (track3_best46_README.md, "Result").
The table is restated here by hand from the README; the comparison with the shared file skips without ../shared."""
from __future__ import annotations

import csv
import math

import pytest

from analysis.crossing import first_crossing
from analysis.curves import band, record_curves
from common.paths import RECORD_CURVES
from tests.conftest import SHARED

CSV46 = str(RECORD_CURVES / "track3_best46.csv")
SHARED46 = SHARED / "reference" / "modded-nanogpt" / "track3_curves" / "best46_cwd_rowfloor_tailema.csv"

# The README's per-seed val_ema_loss at steps 2680, 2685, 2690, 2695, 2700 (seeds 0-7), its means and z's.
TABLE_STEPS = (2680, 2685, 2690, 2695, 2700)
TABLE = [(3.27858, 3.27825, 3.27795, 3.27769, 3.27741), (3.27853, 3.27823, 3.27791, 3.27765, 3.27739),
         (3.27840, 3.27806, 3.27776, 3.27749, 3.27723), (3.28070, 3.28039, 3.28008, 3.27979, 3.27953),
         (3.27995, 3.27964, 3.27935, 3.27907, 3.27877), (3.27871, 3.27840, 3.27810, 3.27783, 3.27756),
         (3.27772, 3.27742, 3.27713, 3.27686, 3.27658), (3.27894, 3.27865, 3.27835, 3.27806, 3.27783)]
MEANS = (3.278941, 3.278630, 3.278329, 3.278055, 3.277787)
ZS = (0.00299, 0.00387, 0.00473, 0.00550, 0.00626)
CROSSINGS = (2660, 2660, 2660, 2695, 2680, 2665, 2650, 2665)  # per-seed first val_ema_loss < 3.28, "mean 2667"
RAW = {2730: (3.278736, 0.00357), 2735: (3.278345, 0.00468)}  # raw val_loss: mean, z


def _at(metric: str) -> dict[int, list[float]]:
    """step -> the runs' `metric` there (seed order)."""
    out: dict[int, list[float]] = {}
    for curve in record_curves(CSV46, metric=metric):
        for p in curve.points:
            out.setdefault(p.step, []).append(p.val_loss)
    return out


@pytest.mark.skipif(not SHARED46.is_file(), reason="../shared reference curves not present")
def test_the_curve_is_the_shared_file_with_its_columns_mapped():
    with open(SHARED46, newline="") as f:
        shared = list(csv.DictReader(f))
    with open(CSV46, newline="") as f:
        ours = list(csv.DictReader(f))
    assert len(ours) == len(shared) == 572
    for a, b in zip(ours, shared, strict=True):
        assert (a["run"], a["step"], a["val_loss"], a["val_ema_loss"], a["train_time_ms"]) == \
            (f"seed{b['seed']}", b["step"], b["val_loss"], b["val_ema_loss"], "")


def test_the_readmes_table_means_and_z():
    ema = _at("val_ema_loss")
    for j, step in enumerate(TABLE_STEPS):
        assert ema[step] == [row[j] for row in TABLE]
        mean = sum(ema[step]) / 8
        assert round(mean, 6) == MEANS[j] and round((3.28 - mean) * math.sqrt(8), 5) == ZS[j]
    raw = _at("val_loss")
    for step, (mean, z) in RAW.items():
        assert round(sum(raw[step]) / 8, 6) == mean and round((3.28 - sum(raw[step]) / 8) * math.sqrt(8), 5) == z


def test_the_claim_and_the_runs_own_crossings():
    curves = record_curves(CSV46, metric="val_ema_loss")
    crossings = tuple(first_crossing(c, 3.28).step for c in curves)
    assert crossings == CROSSINGS and sum(crossings) / 8 == 2666.875
    # the claim: the first step every run validated whose mean passes (3.28 - mean) sqrt(8) >= 0.004
    passing = [b.step for b in band(curves) if (3.28 - b.mean) * math.sqrt(b.n) >= 0.004]
    assert passing[0] == 2690 and all(b.n == 8 for b in band(curves))
    raw = band(record_curves(CSV46, metric="val_loss"))
    assert next(b.step for b in raw if (3.28 - b.mean) * math.sqrt(b.n) >= 0.004) == 2735


def test_validation_steps_and_the_shorter_seed():
    steps = sorted({p.step for c in record_curves(CSV46, metric="val_loss") for p in c.points})
    want = sorted({*range(125, 2501, 125), *range(2600, 2811, 5), *range(2820, 2891, 10), 2875, 2895, 2900})
    assert steps == want and len(want) == 74
    lengths = {c.name.split(":")[1]: (len(c.points), c.final.step) for c in record_curves(CSV46, metric="val_loss")}
    assert lengths == {**{f"seed{s}": (74, 2900) for s in range(7)}, "seed7": (54, 2765)}
