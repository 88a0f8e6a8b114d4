"""harness/loop/stages.py and its train.* keys: the staged lr, windows, batch stages, group parity and the YaRN
events on small hand-checked schedules (the records' own, against their scripts: tests/records/
test_records29_46_schedules.py)."""
from __future__ import annotations

import pytest
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError

from harness.config.schema import BatchStage, LrScheduleKind, LrStage, TrainConfig
from harness.loop.schedule import LrSchedule
from harness.loop.stages import (Batch, BatchChange, StageSchedule, WindowChange, Windows, WindowTracker, 
                                 stage_index, staged_lr_factor)


def staged(**kw) -> TrainConfig:
    tc = TrainConfig(**{"lr_schedule": LrScheduleKind.staged, **kw})
    tc.check()
    return tc


# ---- lr -------------------------------------------------------------------------------------------------------------

def test_flat_then_linear_cooldown_to_the_floor():
    s = StageSchedule(staged(max_steps=10, warmdown_frac=0.5, final_lr_frac=0.1))
    f = [s.lr_factor(t) for t in range(10)]
    assert f[:5] == [1.0] * 5 and f[5] == 1.0  # x = 0.5 >= 1 - 0.5: w = 1
    assert f[6] == pytest.approx(0.8 * 1.0 + 0.2 * 0.1) and f[9] == pytest.approx(0.2 + 0.8 * 0.1)
    assert all(a > b for a, b in zip(f[5:], f[6:]))


def test_stage_multipliers_start_strictly_after_their_progress():
    stages = [LrStage(after=0.25, mult=2.0), LrStage(after=0.5, mult=3.0)]
    f = [staged_lr_factor(t, 8, 0.0, 0.1, 1.0, stages) for t in range(8)]
    assert f == [1.0, 1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 3.0]  # x = 0.25 and 0.5 still the earlier stage


def test_extension_steps_sit_at_the_floor_or_just_above_it_with_a_cap():
    s = StageSchedule(staged(max_steps=12, extension_steps=2, warmdown_frac=0.5, final_lr_frac=0.1,
                             lr_stages=[LrStage(after=0.5, mult=2.0)]))
    assert [s.lr_factor(t) for t in (10, 11)] == [0.1, 0.1]  # x = 1: w = 0 -> 2.0 x 0 + 1 x 0.1, exactly
    capped = StageSchedule(staged(max_steps=12, extension_steps=2, warmdown_frac=0.5, final_lr_frac=0.1,
                                  lr_progress_cap=0.9999))
    w = (1 - 0.9999) / 0.5  # x = min(0.9999, step / 10)
    assert capped.lr_factor(10) == capped.lr_factor(11) == w * 1.0 + (1 - w) * 0.1 == pytest.approx(0.10018)


def test_lr_schedule_staged_sets_initial_lr_times_the_factor_on_every_group():
    tc = staged(max_steps=10, warmdown_frac=0.5, final_lr_frac=0.1)
    groups = [{"initial_lr": 0.5}, {"initial_lr": 0.02}]
    LrSchedule(tc, groups).apply(groups, 8)
    factor = StageSchedule(tc).lr_factor(8)
    assert factor < 1.0 and [g["lr"] for g in groups] == [0.5 * factor, 0.02 * factor]


# ---- windows --------------------------------------------------------------------------------------------------------

def test_windows_by_stage_final_on_extension_steps_and_the_last_validation():
    s = StageSchedule(staged(max_steps=8, extension_steps=2, window_stages=[2, 5, 8], window_final=10,
                             window_validate_last=16))
    assert [s.windows(t).long for t in range(9)] == [2, 2, 5, 5, 8, 8, 10, 10, 10]  # stages over S = 6 steps
    assert s.windows(3) == Windows(long=5, short=2)
    assert s.val_windows(7) == s.windows(7) and s.val_windows(8) == Windows(16, 5)
    assert s.window_changes() == [WindowChange(2, 2, 5), WindowChange(4, 5, 8), WindowChange(6, 8, 10)]


def test_window_stage_steps_moves_the_boundaries_and_without_final_the_last_stage_stays():
    s = StageSchedule(staged(max_steps=6, window_stages=[1, 3], window_stage_steps=7))
    assert [s.windows(t).long for t in range(7)] == [1, 1, 1, 1, 3, 3, 3]  # 2 x 3/7 < 1 <= 2 x 4/7
    plain = StageSchedule(staged(max_steps=6, window_stages=[1, 3]))
    assert [plain.windows(t).long for t in range(7)] == [1, 1, 1, 3, 3, 3, 3]


def test_no_window_stages_has_no_windows_and_no_events():
    s = StageSchedule(staged(max_steps=5))
    assert not s.has_windows and s.window_changes() == []
    with pytest.raises(ValueError, match="train.window_stages is empty"):
        s.windows(0)


def test_tracker_replays_from_any_step_and_never_goes_back():
    s = StageSchedule(staged(max_steps=8, extension_steps=2, window_stages=[2, 5, 8], window_final=10))
    run = WindowTracker(s)
    seen = {t: run.advance(t) for t in range(9)}
    assert {t: e for t, e in seen.items() if e} == {2: [WindowChange(2, 2, 5)], 4: [WindowChange(4, 5, 8)],
                                                    6: [WindowChange(6, 8, 10)]}
    resumed = WindowTracker(s)
    assert resumed.advance(5) == [WindowChange(2, 2, 5), WindowChange(4, 5, 8)]
    assert resumed.advance(5) == [] and resumed.advance(8) == [WindowChange(6, 8, 10)]
    with pytest.raises(ValueError, match="cannot go back to step 3"):
        resumed.advance(3)


# ---- batch ----------------------------------------------------------------------------------------------------------

def test_batch_stages_changes_and_tokens():
    s = StageSchedule(staged(max_steps=8, extension_steps=2,
                             batch_stages=[BatchStage(8, 2), BatchStage(16, 4)], batch_final=BatchStage(24, 6)))
    assert [s.batch(t).global_batch_tokens for t in range(8)] == [8, 8, 8, 16, 16, 16, 24, 24]
    assert s.batch_changes() == [BatchChange(3, Batch(8, 2), Batch(16, 4)), BatchChange(6, Batch(16, 4), Batch(24, 6))]
    assert [s.tokens_before(t) for t in range(9)] == [0, 8, 16, 24, 40, 56, 72, 96, 120]
    assert s.max_seq_len() == 6
    assert s.shapes() == [(None, Batch(8, 2)), (None, Batch(16, 4)), (None, Batch(24, 6))]
    both = StageSchedule(staged(max_steps=8, extension_steps=2, batch_stages=[BatchStage(8, 2), BatchStage(16, 4)],
                                window_stages=[2, 5, 8], window_final=10))
    assert both.shapes() == [(Windows(2, 1), Batch(8, 2)), (Windows(5, 2), Batch(8, 2)), (Windows(5, 2), Batch(16, 4)),
                             (Windows(8, 4), Batch(16, 4)), (Windows(10, 5), Batch(16, 4))]


def test_without_batch_stages_one_batch_from_global_batch_tokens_and_seq_len():
    s = StageSchedule(staged(max_steps=4, global_batch_tokens=64, seq_len=16))
    assert {s.batch(t) for t in range(4)} == {Batch(64, 16)} and s.batch_changes() == []
    assert s.tokens_before(4) == 256


def test_stage_index_is_the_scripts_expression():
    assert [stage_index(t, 3, 9) for t in range(10)] == [0, 0, 0, 1, 1, 1, 2, 2, 2, 2]


# ---- config ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kw, key", [
    (dict(extension_steps=3, lr_schedule=LrScheduleKind.linear), "train.extension_steps=3 needs"),
    (dict(extension_steps=10), "train.extension_steps must lie"),
    (dict(warmup_frac=0.1), "train.warmup_frac=0.1 belongs"),
    (dict(lr_progress_cap=0.0), "train.lr_progress_cap"),
    (dict(lr_stages=[LrStage(0.5, 2.0), LrStage(0.4, 3.0)]), r"train.lr_stages\[1\].after=0.4 must exceed"),
    (dict(lr_stages=[LrStage(0.5, 0.0)]), r"train.lr_stages\[0\] must have"),
    (dict(lr_stages=[LrStage(0.5, 2.0)], lr_schedule=LrScheduleKind.linear), "train.lr_stages needs"),
    (dict(window_stages=[3, 0]), r"train.window_stages\[1\]"),
    (dict(window_final=13), "train.window_final needs train.window_stages"),
    (dict(window_stages=[3], window_validate_last=0), "train.window_validate_last must be >= 1"),
    (dict(batch_stages=[BatchStage(8, 2), BatchStage(16, 2)]), r"train.batch_stages\[1\] has 8 sequences"),
    (dict(batch_stages=[BatchStage(8, 3)]), r"train.batch_stages\[0\] must have"),
    (dict(batch_stages=[BatchStage(8, 2)], batch_final=BatchStage(8, 4)), "train.batch_final has 2 sequences"),
    (dict(batch_final=BatchStage(8, 2)), "train.batch_final needs train.batch_stages"),
])
def test_bad_values_fail_naming_the_key(kw, key):
    tc = TrainConfig(**{"max_steps": 10, "lr_schedule": LrScheduleKind.staged, **kw})
    with pytest.raises(ValueError, match=key):
        tc.check()


def test_yaml_lists_of_stages_are_typed_and_a_misspelt_key_fails():
    base = OmegaConf.structured(TrainConfig)
    tc = OmegaConf.to_object(OmegaConf.merge(base, {"lr_schedule": "staged", "lr_stages": [{"after": 0.33, "mult": 1.51}],
                                                    "batch_stages": [{"global_batch_tokens": 8, "seq_len": 2}]}))
    assert tc.lr_stages == [LrStage(0.33, 1.51)] and tc.batch_stages == [BatchStage(8, 2)]
    with pytest.raises(ConfigKeyError):
        OmegaConf.merge(base, {"lr_stages": [{"after": 0.33, "multiplier": 1.51}]})
    with pytest.raises(ValidationError):
        OmegaConf.merge(base, {"window_stages": ["three"]})
