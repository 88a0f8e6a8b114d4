"""#46's loop pieces in the trainer (in-process, smoke model, 8 steps): PowerCool, EMA-Nesterov, the tail-EMA
readout and the val cadence on together; a run stopped by SIGTERM inside the lookahead window and the tail
window and resumed logs exactly what the uninterrupted run logs (val_loss and val_ema_loss included)."""
from __future__ import annotations

import pytest
import torch

from harness.process.preemption import Preempted, StopRequest
from tests.support.inprocess import events, run

pytestmark = pytest.mark.e2e  # runs the training loop in-process (integration)

LOOP46 = ["optim=muon", "optim.lookahead=0.3", "optim.lookahead_start=2", "optim.lookahead_end=7",
          "optim.lookahead_lr_role=embed_head",  # the smoke model ties its table and head
          "train.max_steps=8", "train.warmdown_frac=0", "train.lr_schedule=powercool",
          "train.powercool_c_over_lr=0.1", "train.tail_ema=true", "train.tail_ema_start=3", "train.tail_ema_end=8",
          "train.tail_ema_tau=2", "train.val_every=0", "train.val_at_start=false",
          "train.val_extra_steps=[{first: 3, last: 7, every: 2}]", "checkpoint.every=4", "checkpoint.keep=0"]


def test_loop46_pieces_resume_exactly_and_report_the_readout(tmp_path, monkeypatch):
    reference = tmp_path / "reference"
    ref_summary = run(reference, *LOOP46)
    vals = [e for e in events(reference) if e["event"] == "val"]
    assert [e["step"] for e in vals] == [3, 5, 7, 8]  # no step 0; the extra steps and the end
    assert vals[0]["val_ema_loss"] == vals[0]["val_loss"]  # the EMA is seeded after step 3's validation
    assert all(e["val_ema_loss"] != e["val_loss"] for e in vals[1:])
    assert ref_summary["final_val_ema_loss"] == vals[-1]["val_ema_loss"]
    logged = events(reference)[-1]  # the summary event: best and target figures read the readout
    assert logged["scored_metric"] == "val_ema_loss" and logged["best_val_loss"] == min(e["val_ema_loss"] for e in vals)
    resumed = tmp_path / "resumed"
    monkeypatch.setenv("SPEEDRUN_FAULT", "sigterm:step=5")
    with StopRequest(True, 1, torch.device("cpu")) as stop, pytest.raises(Preempted):
        run(resumed, *LOOP46, stop=stop)
    monkeypatch.delenv("SPEEDRUN_FAULT")
    assert sorted(p.name for p in (resumed / "checkpoints").glob("*/tail_ema.pt")) == ["tail_ema.pt"] * 2
    summary = run(resumed, *LOOP46)
    assert events(resumed) == events(reference)
    assert summary["final_val_ema_loss"] == ref_summary["final_val_ema_loss"]
