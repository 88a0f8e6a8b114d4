"""Track 3's significance rules on the README's published figures, pooling refusals (significance.py,
summarize.py) and compare.py against the track-3 curves (band, z-test step, y-axis never hiding a run)."""
from __future__ import annotations

import json
import math

import pytest

from analysis import compare, significance
from analysis.curves import band, mean_curve, record_curves
from analysis.pooling import RunFacts, pooling_problems
from analysis.stats import track3_pairwise, track3_ztest
from tests.unit.analysis.test_compare import write_run
from tests.unit.analysis.test_summarize import make_run, summarize

# Published in modded-nanogpt's records/track_3_optimization/README.md ("Pairwise statistical significance"),
# with the inputs its calculations state: (new mean, n, steps), (old mean, n, steps) -> statistic.
PUBLISHED = [
    (((3.2785, 10, 3210), (3.2778, 16, 3250)), 0.0027),    # #13 vs #8
    (((3.2790, 20, 3325), (3.2788, 20, 3375)), 0.00648),   # #12 vs #6 (Muon hyperparameters)
    (((3.2785, 10, 3210), (3.2785, 16, 3225)), 0.00167),   # #13 vs #11
]


@pytest.mark.parametrize("sides,published", PUBLISHED)
def test_pairwise_rule_reproduces_the_published_figures(sides, published):
    res = track3_pairwise(*sides)
    digits = len(str(published).split(".")[1])  # as many decimals as the README prints
    assert round(res.statistic, digits) == published
    assert res.passes == (published >= 0.004)


def test_ztest_on_the_published_rule_and_result_36():
    # "for a single run, any val loss below 3.276 suffices, and for n=4 runs, any average below 3.278"
    assert track3_ztest([3.2759]).passes and not track3_ztest([3.2761]).passes
    assert track3_ztest([3.2779] * 4).passes and not track3_ztest([3.2781] * 4).passes
    finals = [p.val_loss for c in record_curves("track3_muon") for p in c.points if p.step == 3250]
    res = track3_ztest(finals)  # #36: 3.2787 (n=10)
    assert res.n == 10 and round(res.mean, 4) == 3.2787 and res.z == pytest.approx(0.004241, abs=1e-6) and res.passes


def test_significance_cli_prints_inputs_statistic_and_verdict(capsys):
    main = significance.main
    assert main(["--rule", "pairwise", "--new-summary", "3.2785", "10", "3210", "--old-summary", "3.2778", "16",
                 "3250"]) == 1
    out = capsys.readouterr().out
    assert "final_loss_diff = old - new = -0.00070" in out and "steps_diff = old - new = 40" in out
    assert "= 0.002729" in out and "NOT SIGNIFICANT" in out
    assert main(["--rule", "pairwise", "--new-summary", "3.2790", "20", "3325", "--old-summary", "3.2788", "20",
                 "3375"]) == 0
    assert "= 0.006483" in capsys.readouterr().out
    assert main(["--rule", "track3", "--values", "3.2772", "3.2779", "3.2781", "3.2776"]) == 0
    out = capsys.readouterr().out
    assert "inputs: n=4 mean=3.27770" in out and "statistic: (3.28 - 3.27770) * sqrt(4) = 0.0046" in out
    assert main(["--rule", "track3", "--values", "3.2790"]) == 1
    assert "needs a mean <= 3.27600" in capsys.readouterr().out
    assert main(["--rule", "pairwise", "--new-summary", "3.28", "1", "3000"]) == 2
    assert "--old RUNS" in capsys.readouterr().err


def test_pairwise_from_run_folders(tmp_path, capsys):
    new = [write_run(tmp_path / f"new{i}", [10.9, 3.5, v], every=1600, seed=i, lr=0.03)
           for i, v in enumerate([3.2770, 3.2774])]  # final step 3200
    old = [write_run(tmp_path / f"old{i}", [10.9, 3.5, v], every=1625, seed=i) for i, v in enumerate([3.2786, 3.2788])]
    main = significance.main
    expected = ((3.2787 - 3.2772) + 50 / 100 * 0.0045) / math.sqrt(1 / 2 + 1 / 2)  # 0.00375: not enough
    assert main(["--rule", "pairwise", "--new", *map(str, new), "--old", *map(str, old)]) == 1
    out = capsys.readouterr().out
    assert "new mean 3.27720 n=2 at 3200 steps; old mean 3.27870 n=2 at 3250 steps" in out
    assert f"= {expected:.4g}" in out and "NOT SIGNIFICANT" in out


def test_significance_refuses_runs_that_should_not_be_pooled(tmp_path, capsys):
    main = significance.main
    mixed = [write_run(tmp_path / "a", [10.9, 3.27], seed=0, lr=3e-3), write_run(tmp_path / "b", [10.9, 3.271], seed=1,
             lr=3e-3), write_run(tmp_path / "c", [10.9, 3.272], seed=2, lr=1e-3)]
    assert main(list(map(str, mixed))) == 2
    err = capsys.readouterr().err
    assert "runs differ in optim.lr" in err and "--force" in err
    assert main([*map(str, mixed), "--force"]) in (0, 1)
    assert "WARNING (--force): runs differ in optim.lr" in capsys.readouterr().out
    repeated = [write_run(tmp_path / f"r{i}", [10.9, 3.27 + i / 1000], seed=0, complete=i > 0) for i in range(3)]
    assert main(list(map(str, repeated))) == 2
    err = capsys.readouterr().err
    assert "1 unfinished run(s)" in err and "seed 0 appears more than once" in err
    same = [write_run(tmp_path / f"s{i}", [10.9, 3.27], seed=i) for i in range(2)]
    assert main(list(map(str, same))) == 2
    assert "zero spread" in capsys.readouterr().err
    early = [write_run(tmp_path / f"e{i}", [10.9, 3.5, 3.27][: 2 + i], seed=i) for i in range(2)]
    assert main(list(map(str, early))) == 2
    assert "different steps [100, 200]" in capsys.readouterr().err


def test_pooling_problems_ignore_logging_keys():
    a = RunFacts("a", {"seed": 0, "optim.lr": 0.1, "logger.run_name": "x", "checkpoint.dir": "/a"}, True, 10, 3.2)
    b = RunFacts("b", {"seed": 1, "optim.lr": 0.1, "logger.run_name": "y", "checkpoint.dir": "/b"}, True, 10, 3.3)
    assert pooling_problems([a, b]) == []


def _summarize_run(path, lr, seed, final, complete=True):
    make_run(path, lr, seed, [6.0, 4.0, final], complete=complete)


def test_summarize_leaves_unfinished_runs_out_and_warns(tmp_path, capsys):
    root = tmp_path / "sweep"
    _summarize_run(root / "0", 0.001, 0, 3.50)
    _summarize_run(root / "1", 0.001, 0, 3.40)                    # seed 0 again
    _summarize_run(root / "2", 0.001, 1, 3.30, complete=False)    # interrupted
    _summarize_run(root / "3", 0.003, 0, 3.10)
    _summarize_run(root / "4", 0.003, 1, 3.10)                    # identical final loss
    _summarize_run(root / "5", 0.01, 0, 3.00)                     # alone
    summarize.main([str(root), "--out", str(tmp_path / "out")])
    text = capsys.readouterr().out
    assert "| 0.001 | 2 (+1 unfinished) | 0,0 | 3.4500 ± 0.0707" in text  # the unfinished 3.30 is left out
    assert "group 1 (optim.lr=0.001): seed 0 appears more than once" in text
    assert "group 1 (optim.lr=0.001): 1 unfinished run(s) left out: sweep/2" in text
    assert "group 2 (optim.lr=0.003): all 2 final losses are identical" in text
    assert "group 3 (optim.lr=0.01): one run: no spread" in text and "| 0.01 | 1 | 0 | 3.0000 |" in text
    summarize.main([str(root), "--include-unfinished"])
    assert "| 0.001 | 3 | 0,0,1 | 3.4000 ± 0.1000" in capsys.readouterr().out


def test_compare_against_the_track3_band(tmp_path, capsys):
    curves = record_curves("track3_muon")
    assert len(curves) == 10 and all(c.final.step == 3250 for c in curves)
    last = band(curves)[-1]
    assert last.n == 10 and round(last.mean, 4) == 3.2787 and (last.lo, last.hi) == (3.27699, 3.28091)
    assert mean_curve(curves).final.val_loss == pytest.approx(last.mean)
    run = tmp_path / "t3"
    run.mkdir()
    with open(run / "metrics.jsonl", "w") as f:
        for p in curves[0].points:  # one of #36's runs, 0.002 worse; then a run far above the chart's zoom
            f.write(json.dumps({"event": "val", "step": p.step, "tokens": p.tokens, "train_time_ms": p.time_ms,
                                "val_loss": p.val_loss + 0.002}) + "\n")
    high = write_run(tmp_path / "high", [10.9, 6.5, 5.9, 5.2], every=1000)
    main = compare.main
    out_png = tmp_path / "cmp.png"
    assert main([str(run), str(high), "--record", "track3_muon", "--out", str(out_png)]) == 0
    captured = capsys.readouterr()
    assert "record track3_muon (mean of 10): reached at step 3225" in captured.out
    assert "z-test (target - mean) sqrt(n) >= 0.004 first passes at step 3250" in captured.out
    assert "t3: at step 3250 3.27922 vs the reference's 3.27866 ± 0.00134: +0.00056" in captured.out
    assert "high: 2 of 3 points lie above the plotted range" in captured.err  # the top rises to 5.25 only
    assert out_png.stat().st_size > 20_000


def test_y_range_never_hides_a_run():
    from analysis.crossing import Curve, Point
    near = Curve("near", [Point(s, s, None, v) for s, v in ((0, 10.8), (1, 4.0), (2, 3.3))])
    far = Curve("far", [Point(s, s, None, v) for s, v in ((0, 10.8), (1, 7.0), (2, 6.0))])
    assert compare.y_range([near], 3.28)[1] == pytest.approx(4.0)        # the highest point, below the zoom
    bottom, top = compare.y_range([near, far], 3.28)
    assert top >= 6.0 and bottom == pytest.approx(3.23)                   # raised to far's lowest point
