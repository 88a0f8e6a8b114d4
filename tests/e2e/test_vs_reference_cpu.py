"""benchmarks/vs_reference/run.py's whole orchestration on CPU: a fake reference script
(tests/support/fake_reference_script.py prints the records' log format) against experiment=smoke."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO
from tests.unit.benchmarks.test_vs_reference import FAKE


@pytest.mark.e2e
def test_orchestration_on_cpu_with_a_fake_reference(tmp_path):
    from data.config import SyntheticConfig
    from data.synthetic import ensure_synthetic_shards
    data = ensure_synthetic_shards(tmp_path / "data", SyntheticConfig(vocab=511, bos_token=511))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "benchmarks.vs_reference.run", "--reference", str(FAKE), "--experiment", "smoke",
           "--data", str(data), "--steps", "20", "--gpus", "1", "--device", "cpu", "--val-tokens", "8192",
           "--out", str(out), "--timeout", "300", "--", "train.log_every=1"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "edit: stop after step 20 of 40" in proc.stdout and "edit: validation tokens" in proc.stdout
    assert (out / "reference" / "data" / "fineweb10B").resolve() == data.resolve()
    report = (out / "report.md").read_text()
    for step, fake_val in ((0, 10.0), (10, 4 + 6 / 11), (20, 4 + 6 / 21)):  # the fake's loss, with 8192 tokens
        assert f"| {step} | {fake_val + 8192 / 1e9:.4f} |" in report, report
    assert "| status | ok | ok | |" in report and "**" in report.split("step time")[1].split("\n")[0]
    assert (out / "report.png").stat().st_size > 10_000
    summary = [json.loads(line) for line in (out / "ours" / "metrics.jsonl").read_text().splitlines()][-1]
    assert summary["steps"] == 20 and summary["stopped_early"] == "train.stop_after_step=20 of max_steps=200"
