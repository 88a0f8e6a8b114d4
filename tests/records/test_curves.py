"""Each record's published curve (configs/records/, named by its reference: block): it reads, crosses 3.28 where
the public log says, and ends at the published result."""
import math

import pytest

from analysis.crossing import first_crossing
from analysis.curves import record_curve, record_curves
from analysis.records import experiments_with_reference, reference_of
from tests.records.expected import EXPECTED

RECORDS = experiments_with_reference()
PUBLISHED_DIGITS = 5e-5  # published losses carry 4 or 5 decimals: the curves' finals agree to half the 4th


@pytest.mark.parametrize("record", experiments_with_reference(track=1))
def test_reference_curves_read_and_cross_where_the_logs_say(record):
    curve = record_curve(record)
    cs, cl, ct = EXPECTED[record].first_below_target
    ref = reference_of(record)
    c = first_crossing(curve, 3.28)
    assert (c.step, c.time_ms) == (cs, ct) and math.isclose(c.val_loss, cl)
    assert (curve.final.step, curve.final.time_ms) == (ref.steps, ref.train_time_ms)
    assert abs(curve.final.val_loss - ref.val_loss) < PUBLISHED_DIGITS
    assert curve.final.tokens == ref.steps * 524_288
    assert curve.points[0].step == 0 and curve.has_time == (ref.train_time_ms is not None)


@pytest.mark.parametrize("record", RECORDS)
def test_the_published_result_is_the_runs_mean_at_its_step(record):
    """val_loss and train_time_ms of the reference: block are the mean over its runs' validations at `steps`, of
    its `metric` (track 3's #46: val_ema_loss at 2690, a prefix of its 2900-step runs; the others: their ends)."""
    ref = reference_of(record)
    curves = record_curves(record, metric=ref.metric)
    finals = [p for c in curves for p in c.points if p.step == ref.steps]
    assert len(curves) == ref.runs and len(finals) == ref.runs
    if ref.track == 1:  # a track-3 claim may be a prefix of its runs (the first step the z-test passes)
        assert all(c.final.step == ref.steps for c in curves)
    assert abs(sum(p.val_loss for p in finals) / len(finals) - ref.val_loss) < PUBLISHED_DIGITS
    times = [p.time_ms for p in finals]
    if ref.train_time_ms is None:
        assert times == [None] * len(finals)
    else:
        assert abs(sum(times) / len(times) - ref.train_time_ms) <= 0.5  # published in whole milliseconds
