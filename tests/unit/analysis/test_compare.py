"""analysis/compare.py and analysis/significance.py on the reference curves and on synthetic runs; the run-folder
reader (analysis/runs.py) and the `python -m analysis` dispatcher."""
import json
import math

import pytest

from analysis import compare, significance
from analysis.crossing import first_crossing
from analysis.curves import CurveError, read_curve, record_curve
from analysis.runs import read_events, read_run
from analysis.stats import one_sided_ttest
from tests.conftest import REPO


def write_run(folder, losses, every=100, ms_per_step=50.0, tokens_per_step=4096, seed=0, lr=0.003, complete=True):
    """A run folder like train.py writes: its config, val events every `every` steps, then a summary."""
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(f"seed: {seed}\noptim:\n  lr: {lr}\nlogger:\n  name: none\n")
    with open(folder / "metrics.jsonl", "w") as f:
        for i, loss in enumerate(losses):
            s = i * every
            f.write(json.dumps({"event": "val", "step": s, "tokens": s * tokens_per_step,
                                "train_time_ms": s * ms_per_step, "val_loss": loss}) + "\n")
            f.write(json.dumps({"event": "train", "step": s + 1, "tokens": 0, "train_time_ms": 0,
                                "step_avg_ms": 0, "train_loss": 9.0, "lr": 1.0}) + "\n")
        if complete:
            f.write(json.dumps({"event": "summary", "final_val_loss": losses[-1]}) + "\n")
    return folder


def test_interpolated_crossing_on_record5():
    c = first_crossing(record_curve("record05_modernarch"), 3.28, interpolate=True)
    f = (3.2857 - 3.28) / (3.2857 - 3.2776)  # between step 4875 (3.2857, 870349 ms) and 5000 (3.2776, 892894 ms)
    assert c.interpolated and math.isclose(c.step, 4875 + 125 * f) and math.isclose(c.time_ms, 870349 + 22545 * f)


def test_speedrun_log_format_is_parsed(tmp_path):
    log = tmp_path / "0a1b.txt"
    log.write_text("import torch\n# code...\nstep:0/500 val_loss:10.8258 train_time:0ms step_avg:nanms\n"
                   "step:1/500 train_time:4005ms step_avg:nanms\n"
                   "step:250/500 val_loss:3.5000 train_time:30000ms step_avg:120.00ms\n"
                   "step:500/500 val_loss:3.2700 train_time:60000ms step_avg:120.00ms\npeak memory 1 MiB\n")
    curve = read_curve(log)
    assert [(p.step, p.val_loss, p.time_ms) for p in curve.points] == [(0, 10.8258, 0), (250, 3.5, 30000), (500, 3.27, 60000)]
    assert curve.final.tokens == 500 * 524_288
    with pytest.raises(CurveError, match="no validation points"):
        (tmp_path / "empty.txt").write_text("nothing here\n")
        read_curve(tmp_path / "empty.txt")


def test_compare_names_a_bad_input(tmp_path, capsys):
    main = compare.main
    assert main([str(tmp_path), "--record", "record05_modernarch"]) == 2
    assert "no metrics.jsonl" in capsys.readouterr().err
    assert main([str(tmp_path), "--record", "record99"]) == 2
    assert "no reference curve for record 'record99'" in capsys.readouterr().err


def test_ttest_p_values_match_the_closed_form():
    # df = 2: P(T <= t) = 1/2 + t / (2 sqrt(2 + t^2)), an independent check of scipy's value
    closed = lambda t: 0.5 + t / (2 * math.sqrt(2 + t * t))
    r = one_sided_ttest([3.270, 3.272, 3.274], 3.28)  # mean 3.272, std 0.002 -> t = -4 sqrt(3)
    assert math.isclose(r.t, -4 * math.sqrt(3), rel_tol=1e-9) and math.isclose(r.p, closed(r.t), rel_tol=1e-9)
    assert math.isclose(r.p, 0.010102, abs_tol=1e-6) and not r.significant  # just misses p < 0.01
    r = one_sided_ttest([3.270, 3.271, 3.272], 3.28)  # t = -9 sqrt(3)
    assert math.isclose(r.p, closed(-9 * math.sqrt(3)), rel_tol=1e-9) and r.significant
    assert one_sided_ttest([3.29, 3.30, 3.31]).p > 0.5
    with pytest.raises(ValueError, match="at least 2"):
        one_sided_ttest([3.2])


def test_significance_verdicts_and_errors(capsys):
    main = significance.main
    assert main(["--values", "3.270", "3.272", "3.274"]) == 1
    out = capsys.readouterr().out
    assert "p=0.0101" in out and "NOT SIGNIFICANT" in out
    # the records' own final losses (one run each): a single run cannot be tested
    assert main([str(REPO / "configs/records/record20_sub3min.csv")]) == 2
    assert "at least 2" in capsys.readouterr().err


def test_run_reader_skips_a_torn_last_line_and_takes_a_folder_or_its_file(tmp_path):
    run = write_run(tmp_path / "r", [10.9, 3.5, 3.27])
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"event": "val", "step": 300, "val_loss": null}\n')  # a non-finite loss is logged as null
        f.write('{"event": "train", "step": 30')                        # a crash mid-line
    events = read_events(run)
    assert events == read_events(run / "metrics.jsonl")
    assert len(events) == 8 and events[-2] == {"event": "summary", "final_val_loss": 3.27}
    assert events[-1] == {"event": "val", "step": 300, "val_loss": None}
    log = read_run(run / "metrics.jsonl")
    assert log.name == "r" and log.complete and [e["val_loss"] for e in log.vals] == [10.9, 3.5, 3.27]
    assert [e["step"] for e in log.of("train")] == [1, 101, 201]
    unfinished = read_run(write_run(tmp_path / "u", [10.9], complete=False))
    assert unfinished.name == "u" and not unfinished.complete and unfinished.summary is None
    with pytest.raises(FileNotFoundError):
        read_events(tmp_path)  # a folder without a metrics.jsonl


def test_python_m_analysis_dispatches_to_each_tool(tmp_path, capsys):
    from analysis.__main__ import SUBCOMMANDS, main
    assert main(["--help"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines() if line.startswith("  ")]
    assert listed == list(SUBCOMMANDS) == ["summarize", "compare", "significance", "mfu"]
    assert main(["significance", "--values", "3.270", "3.272", "3.274"]) == 1  # the subcommand's own status
    assert "p=0.0101" in capsys.readouterr().out
    assert main(["summarize", str(write_run(tmp_path / "r", [10.9, 3.5]))]) == 0  # its main returns None
    assert "## Runs (1)" in capsys.readouterr().out
    for argv, said in ((["summarise"], "unknown subcommand 'summarise'"), ([], "no subcommand given")):
        assert main(argv) == 2
        assert capsys.readouterr().err.splitlines() == [
            f"error: {said}: choose one of summarize, compare, significance, mfu (python -m analysis --help)"]

