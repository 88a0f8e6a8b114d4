"""Checkpoints in-process: the on-disk format, exact resume after a stop signal, refusals, a full disk,
non-finite losses, and checkpoint time kept out of train time. (Process deaths: test_resume.py.)"""
from __future__ import annotations

import errno
import json
import shutil
import time

import pytest
import torch

from harness.checkpoint import store
from harness.checkpoint.checkpointer import CheckpointError
from harness.checkpoint.store import PendingCheckpoint, list_checkpoints, read_manifest, verify
from harness.loop.nonfinite import NonFiniteLoss
from harness.process.preemption import Preempted, StopRequest
from tests.support.inprocess import checkpoint_steps, events, run, tree_hashes

pytestmark = pytest.mark.e2e  # every test runs the training loop in-process (integration)

STEPS = ["train.max_steps=6", "train.val_every=2", "checkpoint.every=2", "checkpoint.keep=0"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted 6-step run with checkpoints at steps 2, 4 and 6."""
    run_dir = tmp_path_factory.mktemp("reference")
    summary = run(run_dir, *STEPS)
    return run_dir, summary


def copy_run(src, dst):
    shutil.copytree(src, dst)
    return dst


# ---- the on-disk format ---------------------------------------------------------------------------

def test_checkpoint_folder_is_published_complete_and_verified(tmp_path):
    root = tmp_path / "ckpt"
    for step in (1, 2, 3):
        pending = PendingCheckpoint(root, step)
        pending.add("model.pt", {"w": torch.full((4,), float(step))})
        pending.commit({"note": "test"})
    (root / ".tmp-step_000004-abc").mkdir()          # a writer killed midway
    (root / "step_000005").mkdir()                     # no manifest: never complete
    assert [s for s, _ in list_checkpoints(root)] == [1, 2, 3]
    assert store.prune(root, keep=2) == [root / "step_000001"]
    assert [s for s, _ in list_checkpoints(root)] == [2, 3]
    path = root / "step_000003"
    manifest = read_manifest(path)
    verify(path, manifest)
    assert torch.load(path / "model.pt", weights_only=True)["w"][0] == 3.0
    data = bytearray((path / "model.pt").read_bytes())
    data[-200] ^= 0xFF                                 # one flipped byte that torch.load would not notice
    (path / "model.pt").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="does not match its sha256"):
        verify(path, manifest)
    store.remove_stale(root)
    assert not (root / ".tmp-step_000004-abc").exists()


# ---- exact resume after a stop signal --------------------------------------------------------------

def test_sigterm_writes_a_checkpoint_and_resume_matches_uninterrupted_run(reference, tmp_path, monkeypatch):
    ref_dir, ref_summary = reference
    monkeypatch.setenv("SPEEDRUN_FAULT", "sigterm:step=3")  # a real SIGTERM, delivered to this process
    with StopRequest(True, 1, torch.device("cpu")) as stop, pytest.raises(Preempted, match="SIGTERM after step 3"):
        run(tmp_path, *STEPS, stop=stop)
    monkeypatch.delenv("SPEEDRUN_FAULT")
    assert checkpoint_steps(tmp_path / "checkpoints") == [2, 3]
    assert [e["step"] for e in events(tmp_path) if e["event"] == "train"] == [1, 2, 3]
    summary = run(tmp_path, *STEPS)  # resume=auto
    assert events(tmp_path) == events(ref_dir)  # bit-identical losses, lrs and val losses, same event order
    assert {k: v for k, v in summary.items() if k != "train_time_ms"} == \
           {k: v for k, v in ref_summary.items() if k != "train_time_ms"}


def test_resuming_an_older_checkpoint_sets_the_newer_ones_aside(reference, tmp_path):
    run_dir = copy_run(reference[0], tmp_path / "run")
    run(run_dir, *STEPS, f"resume={run_dir}/checkpoints/step_000002")
    assert events(run_dir) == events(reference[0])
    assert checkpoint_steps(run_dir / "checkpoints") == [2, 4, 6]  # rewritten by this run
    assert sorted(p.name.split("-")[1] for p in (run_dir / "checkpoints").glob("abandoned-*")) == \
           ["step_000004", "step_000006"]
    assert (run_dir / "metrics.jsonl.bak1").read_text() == (reference[0] / "metrics.jsonl").read_text()


# ---- refusals -----------------------------------------------------------------------------------------

def test_other_model_or_optim_config_is_refused_naming_the_keys(reference, tmp_path):
    before = tree_hashes(reference[0])
    with pytest.raises(CheckpointError) as err:
        run(reference[0], *STEPS, "model.n_layer=3", "optim.lr=0.01")
    msg = str(err.value)
    assert "model.n_layer (checkpoint 2, now 3)" in msg and "optim.lr (checkpoint 0.003, now 0.01)" in msg
    assert "resume_force=true" in msg and "\n" not in msg
    assert tree_hashes(reference[0]) == before


def test_resume_force_loads_and_applies_the_new_hyperparameters(reference, tmp_path):
    run_dir = copy_run(reference[0], tmp_path / "run")
    run(run_dir, *STEPS, "train.max_steps=8", "optim.lr=0.001", "resume_force=true")
    lrs = {e["step"]: e["lr/matrices"] for e in events(run_dir) if e["event"] == "train"}
    ref_lrs = {e["step"]: e["lr/matrices"] for e in events(reference[0]) if e["event"] == "train"}
    assert all(lrs[s] == ref_lrs[s] for s in range(1, 7))  # history kept
    # new lr and the 8-step run's warmdown: 0.3 x 8 = 2.4 steps (exact, not rounded), from step 6 on
    assert lrs[7] == pytest.approx(0.001 * 2 / 2.4) and lrs[8] == pytest.approx(0.001 * 1 / 2.4)


def test_resume_none_in_a_folder_with_checkpoints_is_refused_unless_forced(reference, tmp_path):
    run_dir = copy_run(reference[0], tmp_path / "run")
    before = tree_hashes(run_dir)
    with pytest.raises(CheckpointError, match="resume=none but .* already holds checkpoints"):
        run(run_dir, *STEPS, "resume=none")
    assert tree_hashes(run_dir) == before
    run(run_dir, *STEPS, "resume=none", "resume_force=true")
    assert events(run_dir) == events(reference[0])
    assert len(list((run_dir / "checkpoints").glob("abandoned-step_*"))) == 3


# ---- failures while training ------------------------------------------------------------------------

def test_disk_full_while_checkpointing_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    real_save, calls = store.save_file, []

    def failing_save(obj, path):
        calls.append(path)
        if "step_000004" in str(path):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, path)

    monkeypatch.setattr(store, "save_file", failing_save)
    with pytest.raises(CheckpointError) as err:
        run(tmp_path, *STEPS)
    msg = str(err.value)
    assert "cannot write checkpoint step_000004" in msg and "No space left on device (ENOSPC)" in msg
    assert "step_000002 is intact" in msg and "\n" not in msg
    root = tmp_path / "checkpoints"
    assert checkpoint_steps(root) == [2] and sorted(p.name for p in root.iterdir()) == ["step_000002"]
    verify(root / "step_000002", read_manifest(root / "step_000002"))


def test_nonfinite_loss_stops_naming_step_loss_and_last_good_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setenv("SPEEDRUN_FAULT", "nan:step=4")
    with pytest.raises(NonFiniteLoss) as err:
        run(tmp_path, *STEPS)
    assert str(err.value).startswith("train loss is nan at step 5; last good checkpoint: ")
    assert str(tmp_path / "checkpoints" / "step_000004") in str(err.value)


def test_nonfinite_skip_drops_the_update_and_counts_it(tmp_path, monkeypatch):
    monkeypatch.setenv("SPEEDRUN_FAULT", "nan:step=2")
    summary = run(tmp_path, *STEPS, "train.nonfinite=skip")
    assert summary["skipped_steps"] == 1
    trains = {e["step"]: e["train_loss"] for e in events(tmp_path) if e["event"] == "train"}
    assert trains[3] is None and all(trains[s] is not None for s in (1, 2, 4, 5, 6))
    monkeypatch.setenv("SPEEDRUN_FAULT", "nan:step=1;nan:step=2")
    with pytest.raises(NonFiniteLoss, match="2 steps were skipped .more than train.max_nonfinite_skips=1"):
        run(tmp_path / "again", *STEPS, "train.nonfinite=skip", "train.max_nonfinite_skips=1")


def test_checkpoint_time_is_not_training_time(tmp_path, monkeypatch):
    commit = PendingCheckpoint.commit
    monkeypatch.setattr(PendingCheckpoint, "commit", lambda self, meta: (time.sleep(2.0), commit(self, meta))[1])
    run(tmp_path, "train.max_steps=3", "train.val_every=0", "checkpoint.every=2")
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    t = {e["step"]: e["train_time_ms"] for e in map(json.loads, lines) if e["event"] == "train"}
    assert t[3] - t[2] < 2000, t  # step 3 follows the 2 s checkpoint at step 2; its time excludes it
