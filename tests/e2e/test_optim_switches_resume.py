"""A trainer checkpoint keeps the switches' optimizer state: a run with LANTON, NorMuon and cautious
weight decay on, stopped by SIGTERM and resumed, logs exactly what an uninterrupted run logs.
(In-process, smoke model, 6 steps.)"""
from __future__ import annotations

import pytest
import torch

from harness.checkpoint.store import list_checkpoints
from harness.process.preemption import Preempted, StopRequest
from tests.support.inprocess import events, run

pytestmark = pytest.mark.e2e  # runs the training loop in-process (integration)

SWITCHED = ["optim=dual", "optim.lr=0.05", "optim.lanton=true", "optim.normuon=true", "optim.cautious_wd=true",
            "optim.weight_decay=0.1", "optim.diag_every=2", "train.max_steps=6", "train.val_every=3",
            "checkpoint.every=2", "checkpoint.keep=0"]


def test_sigterm_and_resume_with_every_switch_matches_the_uninterrupted_run(tmp_path, monkeypatch):
    reference = tmp_path / "reference"
    ref_summary = run(reference, *SWITCHED)
    resumed = tmp_path / "resumed"
    monkeypatch.setenv("SPEEDRUN_FAULT", "sigterm:step=3")
    with StopRequest(True, 1, torch.device("cpu")) as stop, pytest.raises(Preempted):
        run(resumed, *SWITCHED, stop=stop)
    monkeypatch.delenv("SPEEDRUN_FAULT")
    (step, path), = [c for c in list_checkpoints(resumed / "checkpoints") if c[0] == 3]
    state = torch.load(path / "optimizer.pt", weights_only=True)["state"]
    keys = set().union(*(s.keys() for s in state.values()))
    assert {"lanton_noise_sq", "lanton_samples", "normuon_v", "momentum_buffer"} <= keys
    summary = run(resumed, *SWITCHED)  # resume=auto from step 3
    assert events(resumed) == events(reference)  # identical losses and lrs, step by step
    assert summary["final_val_loss"] == ref_summary["final_val_loss"]
