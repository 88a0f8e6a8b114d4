"""benchmarks/vs_reference/run.py: the script edits (on the fake reference script,
tests/support/fake_reference_script.py; on every record script: tests/records/test_vs_reference_edits.py), log
parsing and the report (the whole orchestration on CPU: tests/e2e/test_vs_reference_cpu.py)."""
from __future__ import annotations

import ast
import json

import pytest

from benchmarks.vs_reference.report import (
    Side,
    ours_compile_ms,
    parse_ours,
    parse_reference_log,
    reference_compile_ms,
    report_lines,
)
from benchmarks.vs_reference.run import VsReferenceError, check_data, edit_script
from tests.conftest import REPO

FAKE = REPO / "tests" / "support" / "fake_reference_script.py"


def test_edits_stop_after_n_and_set_val_tokens():
    text = FAKE.read_text()
    edited, edits = edit_script(text, 20, 8192)
    assert "    last_step = (step == args.num_iterations) or step == 20  # vs_reference" in edited
    assert "    val_tokens : int = 8192" in edited and len(edits) == 2
    assert "stop after step 20 of 40 (schedule unchanged)" in edits[0]
    ast.parse(edited)
    assert edit_script(text, 40, None) == (text, [])  # the whole run, the script's val tokens: no edit
    with pytest.raises(VsReferenceError, match="cannot find the line `last_step"):
        edit_script(text.replace("last_step = (step", "last = (step"), 20, None)


def test_data_checks(tmp_path):
    from data.shards import write_shard
    with pytest.raises(VsReferenceError, match="needs fineweb_train_\\*.bin and fineweb_val_\\*.bin"):
        check_data(tmp_path, 10, FAKE.read_text())
    write_shard(tmp_path / "fineweb_val_000000.bin", [1, 2, 3])
    write_shard(tmp_path / "fineweb_train_000001.bin", list(range(1000)))
    check_data(tmp_path, 10, FAKE.read_text())  # a loader that cycles: any size will do
    generator = "def distributed_data_generator(files):\n    file_iter = iter(files)\n"
    with pytest.raises(VsReferenceError, match="hold 1,000 tokens; 10 steps of this script need"):
        check_data(tmp_path, 10, generator)


STEADY = "".join(f"step:{s}/1875 train_loss:9.0 train_time:{(s - 10) * 400}ms step_avg:400.00ms\n" for s in range(11, 31))
REFERENCE_LOG = """\
step:0/1875 val_loss:10.8258 train_time:0ms step_avg:nanms
step:1/1875 train_loss:10.8258 train_time:35123ms step_avg:nanms
step:2/1875 train_loss:10.1 train_time:35523ms step_avg:nanms
""" + STEADY + "step:30/1875 val_loss:7.5000 train_time:8000ms step_avg:400.00ms\npeak memory consumption: 30000 MiB\n"


def test_parse_reference_log_and_figures():
    side = parse_reference_log(REFERENCE_LOG + "step:31/1393 train_time:8400ms step_avg:400.00ms\n")
    assert side.val == {0: 10.8258, 30: 7.5} and side.peak_mib == 30000
    assert side.train_ms[1] == 35123 and side.train_ms[31] == 8400  # record 20's lines have no train_loss
    assert side.steady_ms() == pytest.approx(400.0)
    assert reference_compile_ms(side) == pytest.approx(35123 - 400)
    assert parse_reference_log("garbage\n").steady_ms() is None


def test_parse_ours_and_report(tmp_path):
    events = [{"event": "val", "step": 0, "val_loss": 10.9, "train_time_ms": 0}]
    events += [{"event": "train", "step": s, "train_time_ms": 500.0 * s, "train_loss": 9.0} for s in range(1, 31)]
    events += [{"event": "val", "step": 30, "val_loss": 7.4, "train_time_ms": 15000},
               {"event": "summary", "peak_memory_mib": 20000.0, "compile_warmup_ms": 61500.0}]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(e) for e in events) + "\n{torn")
    (tmp_path / "config.yaml").write_text("train:\n  compile_warmup_steps: 3\n")
    ours = parse_ours(tmp_path)
    assert ours.steady_ms() == pytest.approx(500.0) and ours_compile_ms(ours) == pytest.approx(60000.0)
    meta = {"title": "t", "reference": "r.py", "experiment": "e", "data": "d", "gpus": 1, "device": "cuda",
            "steps": 30, "of_steps": 1875, "val_every": 125, "val_tokens": 393216, "edits": ["x"], "gpu_plan": "p",
            "overrides": ["a=b"]}
    text = "\n".join(report_lines(meta, parse_reference_log(REFERENCE_LOG), ours))
    assert "| step time (mean of steps 12..N, ms) | 400.0 | 500.0 | **1.250** |" in text
    assert "| 30 | 7.5000 | 7.4000 | -0.1000 |" in text and "| 0 | 10.8258 | 10.9000 | +0.0742 |" in text
    assert "| compile time (s, estimated) | 34.7 | 60.0 | |" in text
    assert "n/a" in "\n".join(report_lines(meta, Side(), Side()))  # nothing parsed: the table still renders
