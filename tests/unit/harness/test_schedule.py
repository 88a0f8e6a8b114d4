import pytest

from harness.loop.schedule import lr_factor


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
