import pytest

from harness.config.schema import ConfigError, LrScheduleKind, PowerCoolConstants, TrainConfig, ValSteps
from harness.loop.schedule import LrSchedule, extra_val_steps, lr_factor, powercool_lr, val_due


def test_constant_without_warmup_or_warmdown():
    assert [lr_factor(s, 10, 0, 0, 0) for s in range(10)] == [1.0] * 10


def test_warmup_then_constant_then_linear_warmdown_to_final():
    f = [lr_factor(s, 100, 0.1, 0.2, 0.1) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == 1.0      # warmup ramps over 10 steps
    assert f[10:80] == [1.0] * 70                            # constant
    assert f[80] == 1.0 and f[99] == pytest.approx(0.1 + 0.9 / 20)
    assert all(a > b for a, b in zip(f[80:], f[81:]))        # strictly decreasing warmdown


def test_record2_shape_warmdown_to_zero():
    f = [lr_factor(s, 9536, 256 / 9536, 2048 / 9536, 0.0) for s in range(9536)]
    assert f[255] == 1.0 and f[254] < 1.0
    assert f[-1] == pytest.approx(1 / 2048)


# ---- train.lr_schedule=powercool (track-3 result #46) -------------------------------------------------------

# #46's constants (track3_best46_cwd_rowfloor_tailema.py): c per group, and lr0.
C_EMBED, C_HEAD, C_OTHER, C_MUON = 4.976805410800738e-05, 5.184172302917436e-07, 1.6589351369335795e-06, \
    3.3169534699576625e-06


def _powercool(**kw) -> TrainConfig:
    return TrainConfig(max_steps=2900, lr_schedule=LrScheduleKind.powercool, **kw)


def test_powercool_is_flat_then_a_power_law_reaching_zero_at_the_end():
    lrs = [powercool_lr(t, 0.0375, C_MUON, 2900, 1.2) for t in range(2901)]
    # Muon leaves its flat part at step 514 (track-3 README: "about 514"); c (T - t)^p after that.
    assert lrs[:514] == [0.0375] * 514 and lrs[514] < 0.0375
    assert lrs[2690] == pytest.approx(C_MUON * 210 ** 1.2, rel=1e-15) and lrs[2690] == pytest.approx(0.0020296, abs=1e-7)
    assert lrs[2899] == C_MUON and lrs[2900] == 0.0
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))
    adam = [powercool_lr(t, 0.01, C_OTHER, 2900, 1.2) for t in range(2901)]
    assert adam[1487] == 0.01 and adam[1488] < 0.01  # the Adam groups leave theirs at 1488


def test_powercool_sets_each_group_from_its_role_and_the_ratio_fills_the_rest():
    groups = [{"role": "embed", "initial_lr": 0.3}, {"role": "attn_q", "initial_lr": 0.0375},
              {"role": "gain", "initial_lr": 0.01}]
    tc = _powercool(powercool_c=PowerCoolConstants(embed=C_EMBED, attn_q=C_MUON), powercool_c_over_lr=1e-4)
    schedule = LrSchedule(tc, groups)
    for t in (0, 1000, 2000, 2899, 2900):
        schedule.apply(groups, t)
        assert [g["lr"] for g in groups] == [min(0.3, C_EMBED * (2900 - t) ** 1.2),
                                             min(0.0375, C_MUON * (2900 - t) ** 1.2),
                                             min(0.01, 1e-4 * 0.01 * (2900 - t) ** 1.2)]


def test_powercool_end_and_power_are_keys():
    groups = [{"role": "head", "initial_lr": 1.0}]
    LrSchedule(_powercool(powercool_end=100, powercool_power=2.0, powercool_c_over_lr=1e-3), groups).apply(groups, 90)
    assert groups[0]["lr"] == 1e-3 * 10 ** 2.0


def test_powercool_without_a_constant_for_a_group_names_the_key():
    with pytest.raises(ConfigError, match=r"train.powercool_c.head"):
        LrSchedule(_powercool(powercool_c=PowerCoolConstants(embed=C_EMBED)), [{"role": "head", "initial_lr": 1.0}])


def test_powercool_refuses_the_linear_schedules_warmup_and_warmdown():
    with pytest.raises(ValueError, match="train.warmdown_frac"):
        _powercool(warmdown_frac=0.3).check()


def test_the_default_schedule_is_the_linear_factor_bit_for_bit():
    tc = TrainConfig(max_steps=100, warmup_frac=0.1, warmdown_frac=0.4, final_lr_frac=0.1)
    groups = [{"role": "embed", "initial_lr": 0.3}, {"role": "attn_q", "initial_lr": 0.037}]
    schedule = LrSchedule(tc, groups)
    for t in range(100):
        schedule.apply(groups, t)
        f = lr_factor(t, 100, 0.1, 0.4, 0.1)
        assert [g["lr"] for g in groups] == [0.3 * f, 0.037 * f]


# ---- validation cadence ---------------------------------------------------------------------------------------

def test_val_at_start_false_skips_step_zero_only():
    assert val_due(0, 100, 10) and not val_due(0, 100, 10, at_start=False)
    assert val_due(10, 100, 10, at_start=False) and val_due(100, 100, 0, at_start=False)


def test_extra_val_steps_are_validated_besides_the_regular_cadence():
    extra = extra_val_steps([ValSteps(first=2600, last=2810, every=5), ValSteps(first=2895, last=2895)])
    assert min(extra) == 2600 and max(extra) == 2895 and len(extra) == 43 + 1 and 2690 in extra
    due = {s for s in range(2901) if val_due(s, 2900, 125, at_start=False, extra=extra)}
    # every 125 (no step 0), the extra steps and the end
    assert due == {125 * k for k in range(1, 24)} | extra | {2900}


def test_val_extra_steps_ranges_are_checked():
    with pytest.raises(ValueError, match=r"train.val_extra_steps\[0\]"):
        TrainConfig(val_extra_steps=[ValSteps(first=10, last=5)]).check()
