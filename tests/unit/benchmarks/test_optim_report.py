"""benchmarks/optim/report.py and the analysis pieces it uses (analysis.curves' seed mean and interpolation,
analysis.stats' Welch test) on made-up curves: interpolation, steps to a target, Welch's one-sided test
against hand-computed values, and the report's ratios and verdicts."""
import math

import pytest

from analysis.crossing import Curve, Point
from analysis.curves import loss_at, mean_curve
from analysis.stats import single_less, welch_less
from benchmarks.optim.arms import Arm
from benchmarks.optim.report import crossing_gap, steps_to, summarize, write_report

STEPS = [0, 100, 200, 300, 400]


def run(vals, ms=100.0):
    """A finished run as benchmarks/optim/run.py's load_run returns it."""
    return {"curve": Curve("run", [Point(s, 0, s * ms, v) for s, v in zip(STEPS, vals)]), "final": vals[-1],
            "ms_per_step": ms}


def test_interpolation_and_steps_to_target():
    r = run([10.0, 8.0, 7.0, 6.5, 6.0], ms=50.0)["curve"]
    assert steps_to(r, 7.5) == 150.0 and steps_to(r, 7.5, "time_s") == 7.5
    assert steps_to(r, 10.0) == 0.0 and math.isinf(steps_to(r, 5.0))
    assert loss_at(r, 150) == 7.5 and loss_at(r, 400) == 6.0 and math.isnan(loss_at(r, 401))
    m = mean_curve([r, run([10.0, 9.0, 8.0, 7.5, 7.0])["curve"]])
    assert [p.val_loss for p in m.points] == [10.0, 8.5, 7.5, 7.0, 6.5]


def test_crossing_gap_is_the_bracket_of_the_first_crossing():
    c = Curve("c", [Point(s, 0, None, v) for s, v in [(0, 10.0), (100, 8.0), (200, 7.0), (210, 6.9), (220, 6.8)]])
    assert crossing_gap(c, 7.5) == 100.0  # between 100 (8.0) and 200 (7.0)
    assert crossing_gap(c, 6.95) == 10.0 and crossing_gap(c, 7.0) == 0.0  # a validation lands on it
    assert crossing_gap(c, 11.0) == 0.0 and math.isnan(crossing_gap(c, 6.0))


def test_welch_one_sided_against_the_hand_computation():
    a, b = [1.0, 2.0, 3.0, 4.0], [3.0, 4.0, 5.0, 6.0]
    # means 2.5 and 4.5, both sample variances 5/3: se = sqrt(2 * 5/12), t = -2 / se, df = 6 exactly
    t, df, p = welch_less(a, b)
    assert t == pytest.approx(-2 / math.sqrt(10 / 12)) and df == pytest.approx(6.0)
    from scipy import stats
    assert p == pytest.approx(stats.t.cdf(t, 6))
    assert p == pytest.approx(stats.ttest_ind(a, b, equal_var=False, alternative="less").pvalue)
    assert 0.03 < p < 0.04  # t = -2.19 on 6 degrees of freedom
    assert welch_less(b, a)[2] == pytest.approx(1 - p)
    assert math.isnan(welch_less([1.0], b)[2])
    assert welch_less([1.0, 1.0], [2.0, 2.0])[2] == 0.0  # no variance: the sign decides


def arm(name, optim="dual"):
    return Arm(name, [f"optim={optim}"], f"the {name} arm", {"optim": {"name": optim}})


def fixtures():
    # Muon: finals 6.30 / 6.32 -> target 6.31, its mean curve crosses it at step 400 (N_ref = 400).
    # fast: crosses 6.31 at step 300 in both seeds (ratio 0.75); at 0.9 N_ref = 360 its val is
    # 6.16 / 6.18, well below Muon's finals -> tiny p goal. slow never reaches it.
    results = {("muon", 0.05, 0): run([10.0, 7.4, 6.8, 6.5, 6.30]), ("muon", 0.05, 1): run([10.0, 7.4, 6.8, 6.5, 6.32]),
               ("fast", 0.1, 0): run([10.0, 7.0, 6.6, 6.31, 6.05]), ("fast", 0.1, 1): run([10.0, 7.0, 6.6, 6.30, 6.10]),
               ("fast", 0.05, 0): run([10.0, 7.0, 6.6, 6.4, 6.2]),
               ("slow", 0.05, 0): run([10.0, 8.0, 7.5, 7.0, 6.9]), ("slow", 0.05, 1): run([10.0, 8.0, 7.5, 7.0, 6.8])}
    grids = {"muon": [0.05], "fast": [0.05, 0.1], "slow": [0.05]}
    chosen = {"muon": 0.05, "fast": 0.1, "slow": 0.05}
    return [arm("muon", "muon"), arm("fast"), arm("slow"), Arm("same", ["optim=dual"], "", {}, alias_of="fast")], \
        results, grids, chosen


def test_summary_ratios_and_p_values():
    arms, results, grids, chosen = fixtures()
    summary, ref = summarize(arms, results, chosen, "muon", 0.90)
    assert ref["target"] == pytest.approx(6.31) and ref["n_ref"] == pytest.approx(400.0)
    fast = summary["fast"]
    # seed 0 is at 6.31 exactly at step 300; seed 1 crosses between 200 (6.6) and 300 (6.30)
    assert fast["per_seed"] == [pytest.approx(0.75), pytest.approx((200 + 100 * 0.29 / 0.30) / 400)]
    # the mean curve: 6.6 at 200, 6.305 at 300
    assert fast["ratio"] == pytest.approx((200 + 100 * 0.29 / 0.295) / 400)
    goal_vals = [loss_at(r["curve"], 360) for r in (results[("fast", 0.1, 0)], results[("fast", 0.1, 1)])]
    assert summary["fast"]["p_goal"] == pytest.approx(welch_less(goal_vals, [6.30, 6.32])[2])
    assert summary["fast"]["p_final"] < 0.05 and summary["slow"]["p_final"] > 0.95
    assert math.isinf(summary["slow"]["steps_to"]) and math.isnan(summary["muon"]["p_final"])


def test_report_tables_verdict_and_png(tmp_path):
    arms, results, grids, chosen = fixtures()
    setup = {"command": "python -m benchmarks.optim.run --fake", "wall_min": 1.0, "base": ["experiment=smoke"],
             "reference": "muon", "also_vs": ["fast"], "goal_ratio": 0.90, "seeds": 2, "lr_mults": "1,2", "steps": 400,
             "machine": "a test",
             "missing": ["slow_lr0.05_s2"], "notes": "## Notes\n\nhand-written context"}
    out = tmp_path / "optim.md"
    write_report(out, arms, results, grids, chosen, setup)
    text = out.read_text()
    assert (tmp_path / "optim.png").stat().st_size > 10_000
    assert "target = its mean final val loss **6.3100**" in text and "N_ref = 400" in text
    assert "| same |" in text and "identical config to **fast**: not run" in text
    assert "0.05: 6.2000 | 0.1: 6.0500 | 0.1 (edge) |" in text
    assert "**Incomplete**: 1 planned runs" in text
    # fast: 0.75x with 2 seeds is below the ratio but the goal needs >= 4 seeds
    assert "**not met**. Best dual-family ratio: fast at 0.7" in text
    assert "Protocol: every arm gets the same lr sweep (its base lr x 1,2), seed 0" in text
    # fast crosses Muon's 6.31 between validations 100 steps apart (N_ref 400): flagged; slow never crosses
    gap_line = next(line for line in text.splitlines() if line.startswith("- Crossings interpolated"))
    assert "fast (100 steps)" in gap_line and "slow (" not in gap_line and "muon (" not in gap_line
    row = next(line for line in text.splitlines() if line.startswith("| slow | 0.05 |"))
    assert "not reached" in row
    # against a second reference (--also-vs fast): its mean final 6.075 at step 400; slow never reaches it
    assert "## Against fast" in text and "Target = fast's mean final val loss **6.0750**" in text
    against = next(line for line in text.splitlines() if line.startswith("| muon | 2 |"))
    assert "not reached" in against and against.endswith("| 1 |") is False
    assert text.rstrip().endswith("hand-written context")
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporary files


def test_a_densely_validated_crossing_is_not_flagged(tmp_path):
    arms, results, grids, chosen = fixtures()
    pts = [(0, 10.0), (100, 7.0), (200, 6.6), (290, 6.33), (300, 6.30), (400, 6.05)]
    dense = {"curve": Curve("run", [Point(s, 0, s * 100.0, v) for s, v in pts]), "final": 6.05, "ms_per_step": 100.0}
    results = {k: v for k, v in results.items() if k[0] == "muon"} | {("fast", 0.1, 0): dense, ("fast", 0.1, 1): dense}
    summary, ref = summarize(arms[:2], results, chosen, "muon", 0.90)
    assert summary["fast"]["cross_gap"] == 10.0 and ref["n_ref"] == pytest.approx(400.0)
    setup = {"command": "x", "wall_min": 1.0, "base": [], "reference": "muon", "goal_ratio": 0.90, "seeds": 2,
             "lr_mults": "1", "steps": 400, "machine": "a test", "missing": [], "explicit_grids": True}
    write_report(tmp_path / "dense.md", arms[:2], results, {"muon": [0.05], "fast": [0.1]}, chosen, setup)
    text = (tmp_path / "dense.md").read_text()
    assert "Crossings interpolated" not in text
    assert "Protocol: each arm sweeps the lr grid of the sweep table below (explicit --lrs grids" in text


def test_one_change_ablations_and_the_readout_section(tmp_path):
    arms, results, grids, chosen = fixtures()
    # fast differs from slow by one composed key (and the lr, which is not a change); fast is scored on a tail EMA
    # whose raw weights read 0.01 / 0.03 lower. "one" is run at one lr (0.05) and one seed: it is compared with
    # fast's two seeds at that same lr, not at fast's best.
    arms[1] = Arm("fast", ["optim=dual", "optim.soap=true"], "", {"optim": {"name": "dual", "soap": True, "lr": 0.1}})
    arms[2] = Arm("slow", ["optim=dual"], "", {"optim": {"name": "dual", "soap": False, "lr": 0.05}})
    arms.append(Arm("one", ["optim=dual", "optim.x=1"], "", {"optim": {"name": "dual", "soap": True, "x": 1}}))
    results[("fast", 0.1, 0)]["final_raw"] = 6.04
    results[("fast", 0.1, 1)]["final_raw"] = 6.07
    results[("fast", 0.05, 1)] = run([10.0, 7.0, 6.6, 6.4, 6.3])
    results[("one", 0.05, 0)] = run([10.0, 7.0, 6.6, 6.4, 6.1])
    grids["one"], chosen["one"] = [0.05], 0.05
    setup = {"command": "x", "wall_min": 0.0, "reference": "muon", "goal_ratio": 0.9, "seeds": 2,
             "ablations": [("fast", "slow"), ("same", "slow"), ("one", "fast")]}
    out = tmp_path / "a.md"
    write_report(out, arms, results, grids, chosen, setup)
    text = out.read_text()
    row = next(line for line in text.splitlines() if line.startswith("| fast | slow |"))
    # swept, so each at its best: finals 6.05 / 6.10 against 6.9 / 6.8: difference -0.775, Welch's se
    se = math.sqrt(0.0353553 ** 2 / 2 + 0.0707107 ** 2 / 2)
    assert "| own best lr (0.1 vs 0.05) |" in row and f"-0.7750 ± {se:.4f}" in row and "| 2 vs 2 |" in row
    p = welch_less([6.05, 6.10], [6.9, 6.8])[2]
    assert 0.005 < p < 0.01 and f"| {p:.2g} | {1 - p:.2g} |" in row
    assert row.rstrip(" |").endswith("optim.soap: False -> True")
    assert "| same | slow | - | not run |" in text
    # one seed (6.1) against fast's 6.2 / 6.3 at lr 0.05: t = -0.15 / (0.0707 sqrt(1.5)) = -sqrt(3) on 1 degree of
    # freedom (Cauchy): p = 1/2 + atan(-sqrt(3)) / pi = 1/6
    assert single_less(6.1, [6.2, 6.3])[2] == pytest.approx(1 / 6)
    one = next(line for line in text.splitlines() if line.startswith("| one | fast |"))
    assert f"| lr 0.05 (both) | -0.1500 ± {0.0707107 * math.sqrt(1.5):.4f} | 1 vs 2 | 0.17 | 0.83 |" in one
    assert one.rstrip(" |").endswith("optim.x: (none) -> 1")
    readout = next(line for line in text.splitlines() if line.startswith("| fast | 2 |") and "[" in line)
    assert "| 6.0550 | 6.0750 | +0.0200 [+0.0100, +0.0300] |" in readout
    assert "dual's variants against dual" not in text  # --ablation replaces issue 13's default section
