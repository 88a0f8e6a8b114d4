"""Records 29-46's loop in the trainer (in-process, record 46 at toy size, 8 steps): packed rows, its batch
stages, window stages with YaRN, Adam on odd steps. A run stopped by SIGTERM after step 3 (the Adam groups then
hold one step's gradient, a stage has just changed) and resumed logs exactly what the uninterrupted run logs."""
from __future__ import annotations

import pytest
import torch

from harness.config.compose import compose_config
from harness.process import distributed as D
from harness.process.preemption import Preempted, StopRequest
from tests.support.inprocess import events

pytestmark = pytest.mark.e2e  # runs the training loop in-process (integration)

TINY46 = ["experiment=record46_batchsizeschedule", "device=cpu", "train.precision=fp32", "train.compile=false",
          "model.n_embd=64", "model.n_head=2", "model.vocab_size=512", "model.bos_token=511", "model.block_size=512",
          "data=synthetic", "data.synthetic.vocab=511", "data.synthetic.bos_token=511",
          "data.synthetic.train_tokens=20000", "data.synthetic.val_tokens=4096", "data.synthetic.mean_doc_len=32",
          "data.prefetch=false", "data.varlen.val_rank_tokens=64", "data.varlen.max_doc_len=64",
          "train.max_steps=8", "train.extension_steps=2", "train.val_every=4", "train.val_tokens=512",
          "train.log_every=1", "train.seq_len=32", "train.global_batch_tokens=256",
          "train.batch_stages=[{global_batch_tokens:256,seq_len:32},{global_batch_tokens:512,seq_len:64}]",
          "train.batch_final={global_batch_tokens:512,seq_len:64}", "optim.momentum_horizon=8",
          "optim.momentum_cooldown_steps=2", "checkpoint.every=3", "checkpoint.keep=0"]
TIMING = ("train_time_ms", "step_avg_ms", "tokens_per_s", "target_val_loss_train_time_ms", "peak_host_memory_mib",
          "peak_memory_mib")


def run(run_dir, stop=None) -> dict:
    import train  # noqa: E402  (the repo root's train.py)

    cfg = compose_config(*TINY46, f"data.dir={run_dir.parent / 'data'}")
    run_dir.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return train.train(cfg, D.RankInfo(0, 0, 1, torch.device("cpu")), run_dir, stop)
    finally:
        torch.set_num_threads(threads)


def logged(run_dir) -> list[dict]:
    return [{k: v for k, v in e.items() if k not in TIMING} for e in events(run_dir) if e["event"] in ("train", "val")]


def test_record46_stopped_between_two_adam_steps_resumes_exactly(tmp_path, monkeypatch):
    reference = tmp_path / "reference"
    run(reference)
    train_events = [e for e in events(reference) if e["event"] == "train"]
    assert [e["tokens"] for e in train_events][:4] == [256, 512, 768, 1280]  # stage 2 (512 tokens) from step 3
    assert len({(e["window_tokens"], e["window_short_tokens"]) for e in train_events}) >= 2  # windows change
    resumed = tmp_path / "resumed"
    monkeypatch.setenv("SPEEDRUN_FAULT", "sigterm:step=3")
    with StopRequest(True, 1, torch.device("cpu")) as stop, pytest.raises(Preempted):
        run(resumed, stop=stop)
    monkeypatch.delenv("SPEEDRUN_FAULT")
    run(resumed)
    assert logged(resumed) == logged(reference)
