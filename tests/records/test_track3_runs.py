"""Track 3's experiments (those with a track-3 reference: block) through the trainer, shrunk: summed loss,
bf16 table, the val tail cadence, the schedule, and an exact resume after a SIGTERM."""
from __future__ import annotations

import math

import pytest
import torch

from analysis.records import experiments_with_reference
from tests.support.inprocess import compose_config


@pytest.mark.e2e  # runs the training loop in-process (integration)
@pytest.mark.parametrize("experiment", experiments_with_reference(track=3))
def test_track3_experiments_run_through_the_trainer(experiment, tmp_path, monkeypatch):
    """Shrunk to 1 x 128 on synthetic data: summed loss, bf16 table, the val tail cadence, the schedule;
    a SIGTERM and the resume give the uninterrupted run (the bf16 table's fp32 optimizer state survives it)."""
    import train
    from analysis.runs import read_events
    from harness.process import distributed as D
    from harness.process.preemption import Preempted, StopRequest
    from tests.support.inprocess import events
    cfg = compose_config(f"experiment={experiment}", "data=synthetic", f"data.dir={tmp_path / 'data'}",
                         "data.synthetic.vocab=511", "data.synthetic.bos_token=511", "data.synthetic.train_tokens=20000",
                         "data.synthetic.val_tokens=4096", "data.prefetch=false", "model.vocab_size=512",
                         "model.n_layer=1", "model.n_embd=128", "model.n_head=1", "device=cpu", "train.compile=false",
                         "train.max_steps=20", "train.val_every=10", "train.val_tail_every=2", "train.seq_len=64",
                         "train.micro_batch_seqs=2", "train.global_batch_tokens=256", "train.val_tokens=1024",
                         "train.log_every=5", "checkpoint.every=0", "checkpoint.keep=0")
    rank = D.RankInfo(0, 0, 1, torch.device("cpu"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        (tmp_path / "run").mkdir()
        summary = train.train(cfg, rank, tmp_path / "run")
        (tmp_path / "stopped").mkdir()
        monkeypatch.setenv("SPEEDRUN_FAULT", "sigterm:step=7")
        with StopRequest(True, 1, torch.device("cpu")) as stop, pytest.raises(Preempted, match="after step 7"):
            train.train(cfg, rank, tmp_path / "stopped", stop)
        monkeypatch.delenv("SPEEDRUN_FAULT")
        train.train(cfg, rank, tmp_path / "stopped")  # resume=auto
    finally:
        torch.set_num_threads(threads)
    vals = [e for e in read_events(tmp_path / "run" / "metrics.jsonl") if e.get("event") == "val"]
    assert [e["step"] for e in vals] == [0, 10, 18, 20]  # every 10, then every 2 in the last 10%
    assert math.isfinite(summary["final_val_loss"]) and summary["final_val_loss"] < vals[0]["val_loss"] - 0.5
    resumed = [e for e in events(tmp_path / "stopped") if e["event"] in ("train", "val", "summary")]
    assert resumed == [e for e in events(tmp_path / "run") if e["event"] in ("train", "val", "summary")]
