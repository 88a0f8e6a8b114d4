"""Every statistical test of the analysis tools and the benchmarks, once.

- Track 1's rule: a one-sided one-sample t-test, H1: mean final val loss < 3.28, significant at p < 0.01.
- Track 3 (the optimization benchmark; rules in modded-nanogpt's records/track_3_optimization/README.md):
  one group, a one-sided z-test with sigma = 0.0013 assumed (p < .001 is 3.09 sigma = 0.004):
      z = (3.28 - mean) * sqrt(n) >= 0.004
  a new result against an old one, steps converted to loss at 0.0045 per 100 steps (measured on
  its result #12: 200 fewer steps cost 0.0091):
      (final_loss_diff + steps_diff / 100 * 0.0045) / sqrt(1/n1 + 1/n2) >= 0.004
  with final_loss_diff = old mean - new mean and steps_diff = old steps - new steps (both positive
  when the new result is better).
- Two groups of runs (benchmarks/optim): Welch's unequal-variance t-test, one-sided.
Inputs are final val losses (nats/token) unless said otherwise.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import mean, stdev
from typing import Optional

from analysis.crossing import DEFAULT_TARGET

TRACK3_TARGET = DEFAULT_TARGET
TRACK3_MARGIN = 0.004          # 3.09 sigma at sigma = 0.0013 (one-sided p < .001)
TRACK3_LOSS_PER_100_STEPS = 0.0045


def sample_mean_std(values: list[float]) -> tuple[float, float]:
    """(mean, sample std) of n >= 1 values; the std is 0 for one value."""
    n = len(values)
    m = sum(values) / n
    return m, (math.sqrt(sum((x - m) ** 2 for x in values) / (n - 1)) if n > 1 else 0.0)


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
    m, std = sample_mean_std(losses)
    if std == 0:  # degenerate: every run identical; the sign decides
        return TTest(n, m, 0.0, -math.inf if m < target else math.inf, 0.0 if m < target else 1.0, target, alpha)
    res = stats.ttest_1samp(losses, target, alternative="less")
    return TTest(n, m, std, float(res.statistic), float(res.pvalue), target, alpha)


def track3_z(mean_loss: float, n: int, target: float = TRACK3_TARGET) -> float:
    """Track 3's one-group statistic (target - mean) * sqrt(n), in val-loss units; passes at >= TRACK3_MARGIN."""
    return (target - mean_loss) * math.sqrt(n)


@dataclass
class ZTest:
    n: int
    mean: float
    z: float          # (target - mean) * sqrt(n), in val-loss units
    target: float
    margin: float

    @property
    def passes(self) -> bool:
        return self.z >= self.margin


def track3_ztest(losses: list[float], target: float = TRACK3_TARGET, margin: float = TRACK3_MARGIN) -> ZTest:
    """Track 3's one-group rule on final val losses (n >= 1: sigma is assumed, not estimated)."""
    if not losses:
        raise ValueError("the z-test needs at least one final loss")
    if any(not math.isfinite(x) for x in losses):
        raise ValueError(f"non-finite final loss among {losses}")
    n = len(losses)
    m = sum(losses) / n
    return ZTest(n, m, track3_z(m, n, target), target, margin)


def track3_first_pass(means: list[tuple[int, float, int]], target: float = TRACK3_TARGET,
                      margin: float = TRACK3_MARGIN) -> tuple[Optional[tuple[int, float]], Optional[tuple[int, float]]]:
    """Track 3's stopping rule on a group's validations: the first step whose mean passes the z-test.

    `means` holds (step, mean val loss over the runs, n) in step order. Returns ((step, z) of the first
    pass, (step, z) of the validation before it), each None where there is none. Result #46 fixes this
    rule in advance (track3_best46_README.md, "Reproducing": the smallest 5-step boundary with
    (3.28 - mean) sqrt(n) >= 0.004, with validations every 5 steps): 2690, z 0.00473; 2685: 0.00387."""
    before = None
    for step, m, n in means:
        z = track3_z(m, n, target)
        if z >= margin:
            return (step, z), before
        before = (step, z)
    return None, before


@dataclass
class Pairwise:
    new_mean: float
    new_n: int
    new_steps: float
    old_mean: float
    old_n: int
    old_steps: float
    loss_per_100_steps: float
    margin: float

    @property
    def loss_diff(self) -> float:
        return self.old_mean - self.new_mean

    @property
    def steps_diff(self) -> float:
        return self.old_steps - self.new_steps

    @property
    def step_loss(self) -> float:
        """The steps saved, in val-loss units."""
        return self.steps_diff / 100 * self.loss_per_100_steps

    @property
    def statistic(self) -> float:
        return (self.loss_diff + self.step_loss) / math.sqrt(1 / self.new_n + 1 / self.old_n)

    @property
    def passes(self) -> bool:
        return self.statistic >= self.margin


def track3_pairwise(new: tuple[float, int, float], old: tuple[float, int, float],
                    loss_per_100_steps: float = TRACK3_LOSS_PER_100_STEPS, margin: float = TRACK3_MARGIN) -> Pairwise:
    """Track 3's rule for a new result against an old one; each given as (mean final loss, n, steps)."""
    for label, (m, n, steps) in (("new", new), ("old", old)):
        if n < 1 or n != int(n):
            raise ValueError(f"the {label} result's run count must be a whole number >= 1 (got {n})")
        if not math.isfinite(m) or steps < 0:
            raise ValueError(f"the {label} result needs a finite mean and steps >= 0 (got {m}, {steps})")
    return Pairwise(new[0], int(new[1]), new[2], old[0], int(old[1]), old[2], loss_per_100_steps, margin)


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


def single_less(x: float, b: list[float]) -> tuple[float, float, float]:
    """One new value x against a sample b, H1: x comes from a distribution with a lower mean, assuming b's
    spread for both (a one-seed arm against a seeded one). Returns (t, df, p).

    t = (x - mean b) / (s_b sqrt(1 + 1/n_b)) (the prediction interval's), df = n_b - 1, p = P(T_df <= t);
    nan where b has < 2 values or no spread."""
    if len(b) < 2 or not all(map(math.isfinite, [x, *b])) or stdev(b) == 0:
        return math.nan, math.nan, math.nan
    t = (x - mean(b)) / (stdev(b) * math.sqrt(1 + 1 / len(b)))
    from scipy.stats import t as student_t
    return t, len(b) - 1, float(student_t.cdf(t, len(b) - 1))


def spread(values: list[float]) -> tuple[float, float, float, float]:
    """(mean, sample std (0 for one value), min, max) of finite values; nans if none."""
    vals = [v for v in values if math.isfinite(v)]
    if not vals:
        return math.nan, math.nan, math.nan, math.nan
    return mean(vals), (stdev(vals) if len(vals) > 1 else 0.0), min(vals), max(vals)
