"""train.py on CPU as a user runs it: the smoke experiment learns and writes its run folder; a diverging run
stops with the step (exit 3)."""
import json
import math

import pytest

from analysis.runs import read_events
from tests.conftest import error_lines, run_train


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("smoke")
    proc = run_train("experiment=smoke", f"hydra.run.dir={run_dir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir, proc


@pytest.mark.e2e
def test_smoke_learns_and_writes_its_run_folder(smoke_run):
    run_dir, proc = smoke_run
    events = read_events(run_dir / "metrics.jsonl")
    vals = [e for e in events if e["event"] == "val"]
    assert [e["step"] for e in vals] == [0, 50, 100, 150, 200]
    assert vals[0]["val_loss"] - vals[-1]["val_loss"] >= 1.0
    assert vals[0]["train_time_ms"] == 0 and all(a["train_time_ms"] < b["train_time_ms"] for a, b in zip(vals, vals[1:]))
    trains = [e for e in events if e["event"] == "train"]
    assert all({"step", "tokens", "train_time_ms", "train_loss", "lr/matrices", "lr_factor"} <= e.keys() for e in trains)
    assert trains[-1]["tokens"] == 200 * 4096
    assert events[-1]["event"] == "summary" and math.isclose(events[-1]["final_val_loss"], vals[-1]["val_loss"])
    assert "vocab_size: 512" in (run_dir / "config.yaml").read_text()  # resolved config, with the experiment's overrides
    assert "step:200/200 val_loss:" in proc.stdout


@pytest.mark.e2e
def test_nan_loss_stops_with_the_step(tmp_path):
    proc = run_train("experiment=smoke", "optim.lr=1e6", "train.max_steps=20", "train.log_every=1",
                     f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 3
    assert "loss is nan" in error_lines(proc)[0] or "loss is inf" in error_lines(proc)[0]
    # every event written before the stop is intact JSON
    assert all(json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines())
