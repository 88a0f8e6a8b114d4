"""Acceptance: processes really die (kill -9, a crashed rank, SIGTERM) and resume=auto finishes the run
with metrics identical to an uninterrupted run's (bit-identical losses, CPU, fp32), on 1 and 2 ranks.

Faults are injected with SPEEDRUN_FAULT (harness/process/faults.py) so they hit an exact step. Two-rank runs use
optim=dual, whose per-role state and rank-sharded Newton-Schulz must resume exactly too.
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO
from tests.support.inprocess import checkpoint_steps, events

COMMON = ["experiment=smoke", "train.max_steps=12", "train.val_every=4", "train.log_every=1",
          "train.precision=fp32", "train.val_tokens=8192", "checkpoint.every=4"]
TWO_RANKS = COMMON + ["optim=dual", "optim.lr=0.05"]


def launch(run_dir, overrides, nproc=1, fault=None, torchrun_args=()):
    """train.py (under torchrun when nproc > 1) with hydra.run.dir=run_dir; returns the finished process."""
    cmd = [sys.executable, "train.py"]
    if nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               *torchrun_args, "train.py"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    env.pop("SPEEDRUN_FAULT", None)
    if fault:
        env["SPEEDRUN_FAULT"] = fault
    return subprocess.run(cmd + list(overrides) + [f"hydra.run.dir={run_dir}"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)


def ok(proc):
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


def train_steps(run_dir):
    return [e["step"] for e in events(run_dir) if e["event"] == "train"]


@pytest.fixture(scope="module")
def clean_one(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("clean_one")
    ok(launch(run_dir, COMMON))
    return events(run_dir)


@pytest.fixture(scope="module")
def clean_two(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("clean_two")
    ok(launch(run_dir, TWO_RANKS, nproc=2))
    return events(run_dir)


@pytest.mark.e2e
def test_kill9_between_checkpoints_then_resume_auto_one_rank(clean_one, tmp_path):
    killed = launch(tmp_path, COMMON, fault="kill:step=10")
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert checkpoint_steps(tmp_path / "checkpoints") == [4, 8]
    assert train_steps(tmp_path)[-1] == 10  # steps 9 and 10 ran after the last checkpoint: redone on resume
    resumed = ok(launch(tmp_path, COMMON))
    assert "resumed from" in resumed.stdout and "step_000008 at step 8" in resumed.stdout
    assert events(tmp_path) == clean_one
    assert train_steps(tmp_path) == list(range(1, 13))


@pytest.mark.e2e
def test_two_ranks_sigterm_then_kill9_then_elastic_restart(clean_two, tmp_path):
    # SIGTERM reaches rank 1 only: both ranks agree to stop after the same step, checkpoint, exit 0.
    stopped = ok(launch(tmp_path, TWO_RANKS, nproc=2, fault="sigterm:step=6:rank=1"))
    assert "stopped by a stop signal on another rank after step 6" in stopped.stdout
    assert checkpoint_steps(tmp_path / "checkpoints") == [4, 6] and train_steps(tmp_path)[-1] == 6
    # Relaunch under torchrun --max-restarts=1: it continues at step 7; rank 0 is killed -9 at step 10
    # (between checkpoints 8 and 12) on the first attempt; the elastic restart resumes at 8 and finishes.
    proc = ok(launch(tmp_path, TWO_RANKS, nproc=2, fault="kill:step=10:rank=0:attempt=0",
                     torchrun_args=["--max-restarts=1"]))
    out = proc.stdout
    assert "step_000006 at step 6" in out and "step:7/12 train_loss" in out and "step:6/12 train_loss" not in out
    assert "failed (exitcode: -9) local_rank: 0" in proc.stderr and "step_000008 at step 8" in out
    assert checkpoint_steps(tmp_path / "checkpoints") == [8, 12]
    assert events(tmp_path) == clean_two
    assert train_steps(tmp_path) == list(range(1, 13))
