"""A smoke run records its CPU threads, attention backend and path, and compile setting."""
from __future__ import annotations

import json

import pytest



@pytest.mark.e2e
def test_smoke_run_records_its_threads_attention_and_compile(tmp_path, monkeypatch):
    from tests.support.inprocess import run

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    run(tmp_path / "run", "train.max_steps=2", "train.val_every=0")
    run = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert run["event"] == "run" and run["cpu_threads"] == 1 and "auto" in run["cpu_threads_why"]
    assert run["attention_backend"] == "sdpa" and run["attention"].startswith("sdpa (") and run["compile"] is False
