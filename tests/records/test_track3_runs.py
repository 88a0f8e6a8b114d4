"""Track 3's experiments (those with a track-3 reference: block) through the trainer, shrunk: summed loss,
bf16 table, the val tail cadence, the schedule, and an exact resume after a SIGTERM."""
from __future__ import annotations

import math

import pytest
import torch

from analysis.records import experiments_with_reference
from tests.records.expected import EXPECTED
from tests.support.inprocess import compose_config


@pytest.mark.e2e  # runs the training loop in-process (integration)
@pytest.mark.parametrize("experiment", experiments_with_reference(track=3))
def test_track3_experiments_run_through_the_trainer(experiment, tmp_path, monkeypatch):
    """Shrunk to 1 x 128 on synthetic data: summed loss, bf16 table, the val cadence, the schedule (with the
    experiment's horizons shrunk to the run: tests/records/expected.py, Track3Run); a SIGTERM and the resume give
    the uninterrupted run (the bf16 table's fp32 optimizer state survives it, and #46's lookahead and tail EMA)."""
    import train
    from analysis.runs import read_events
    from harness.process import distributed as D
    from harness.process.preemption import Preempted, StopRequest
    from tests.support.inprocess import events
    want = EXPECTED[experiment].run
    cfg = compose_config(f"experiment={experiment}", "data=synthetic", f"data.dir={tmp_path / 'data'}",
                         "data.synthetic.vocab=511", "data.synthetic.bos_token=511", "data.synthetic.train_tokens=20000",
                         "data.synthetic.val_tokens=4096", "data.prefetch=false", "model.vocab_size=512",
                         "model.n_layer=1", "model.n_embd=128", "model.n_head=1", "device=cpu", "train.compile=false",
                         "train.max_steps=20", "train.val_every=10", "train.val_tail_every=2", "train.seq_len=64",
                         "train.micro_batch_seqs=2", "train.global_batch_tokens=256", "train.val_tokens=1024",
                         "train.log_every=5", "checkpoint.every=0", "checkpoint.keep=0", *want.overrides)
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
    assert [e["step"] for e in vals] == list(want.val_steps)
    # the zero-initialized head predicts uniformly at step 0: loss ln(512)
    assert vals[0]["step"] > 0 or vals[0]["val_loss"] == pytest.approx(math.log(512), rel=1e-6)
    assert math.isfinite(summary["final_val_loss"]) and summary["final_val_loss"] < math.log(512) - 0.5
    if cfg.train.tail_ema:  # the readout: raw weights until the EMA starts, the blend after
        assert all((e["val_ema_loss"] == e["val_loss"]) == (e["step"] <= cfg.train.tail_ema_start) for e in vals)
        assert summary["stopped_early"] and summary["steps"] == cfg.train.stop_after_step
    if getattr(cfg.optim, "lookahead", 0):  # the SIGTERM falls inside the lookahead window
        assert cfg.optim.lookahead_start <= 7 < cfg.optim.lookahead_end
    resumed = [e for e in events(tmp_path / "stopped") if e["event"] in ("train", "val", "summary")]
    assert resumed == [e for e in events(tmp_path / "run") if e["event"] in ("train", "val", "summary")]
