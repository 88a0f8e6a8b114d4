"""Failure paths through the command line, as a user meets them: the exit code, one stderr line, the
run folder left behind (train.log, outcome.json, no temporary files, the previous checkpoint loadable),
and the same command resuming. (The in-process versions of these cases: test_failure_paths.py.)"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from analysis.runs import read_events
from harness.checkpoint.store import list_checkpoints, load_file, read_manifest, verify
from tests.conftest import REPO, error_lines, run_train
from tests.support.inprocess import run

pytestmark = pytest.mark.e2e
FAST = ["experiment=smoke", "train.precision=fp32", "train.val_tokens=8192", "train.log_every=1"]
STEPS = ["train.max_steps=6", "train.val_every=2", "checkpoint.every=2", "checkpoint.keep=0"]


def loadable(root: Path, step: int) -> None:
    assert not [p.name for p in root.iterdir() if p.name.startswith(".")], "temporary files left"
    assert [s for s, _ in list_checkpoints(root)][-1] == step
    good = root / f"step_{step:06d}"
    verify(good, read_manifest(good))
    assert load_file(good / "trainer.pt", "trainer state")["step"] == step


def outcome_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "outcome.json").read_text())


def test_full_disk_under_two_ranks_is_one_line_exit_2_on_every_rank(tmp_path):
    """A real small filesystem (a tmpfs: root only) as checkpoint.dir fills up at the second checkpoint."""
    run(tmp_path / "sizing", "train.max_steps=2", "train.val_every=0", "checkpoint.every=2")
    one = sum(f.stat().st_size for f in (tmp_path / "sizing" / "checkpoints" / "step_000002").iterdir())
    disk = tmp_path / "disk"
    disk.mkdir()
    size = int(1.5 * one) // 4096 * 4096
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(disk)], capture_output=True)
    if mount.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        run_dir = tmp_path / "run"
        proc = run_train(*FAST, *STEPS, f"checkpoint.dir={disk}", f"hydra.run.dir={run_dir}", nproc=2)
        ours = error_lines(proc)
        assert len(ours) == 1, proc.stderr[-3000:]  # one line, once (not once per rank)
        assert ours[0].startswith("error (rank 0): cannot write checkpoint step_000004 in ")
        assert "No space left on device (ENOSPC)" in ours[0] and "step_000002 is intact" in ours[0]
        assert "exitcode  : 2" in proc.stderr and "SIGABRT" not in proc.stderr, proc.stderr[-3000:]  # torchrun: rank exit 2
        assert "File \"" + str(REPO / "train.py") not in proc.stderr  # no traceback of ours
        loadable(disk, 2)
        assert outcome_of(run_dir)["status"] == "failed" and "ENOSPC" in outcome_of(run_dir)["message"]
        assert ours[0].split(": ", 1)[1] in (run_dir / "train.log").read_text()
        assert max(e.get("step", 0) for e in read_events(run_dir / "metrics.jsonl")) == 4
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)


SECOND_CTRL_C = """
import os, runpy, signal, sys
import harness.checkpoint.store as store, harness.process.faults as faults
real_at_step, real_write, sent = faults.at_step, store._HashingWriter.write, []
def at_step(step):  # the user presses Ctrl-C during step 3 ...
    if step == 3 and not sent:
        os.kill(os.getpid(), signal.SIGINT)
    real_at_step(step)
def write(self, data):  # ... and again while the stop checkpoint is being written
    if not sent and "step_000003" in str(self.f.name) and self.nbytes > 1000:
        sent.append(1)
        os.kill(os.getpid(), signal.SIGINT)
    return real_write(self, data)
faults.at_step, store._HashingWriter.write = at_step, write
sys.argv = ["train.py", *sys.argv[1:]]
runpy.run_path("train.py", run_name="__main__")
"""


def test_second_ctrl_c_inside_the_save_exits_130_in_one_line_and_the_same_command_resumes(tmp_path):
    run_dir = tmp_path / "run"
    command = [*FAST, *STEPS, f"hydra.run.dir={run_dir}"]
    proc = subprocess.run([sys.executable, "-c", SECOND_CTRL_C, *command], cwd=REPO, capture_output=True, text=True,
                          timeout=600, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 130, proc.stderr[-3000:]
    assert proc.stderr.splitlines() == [
        f"interrupted by a second Ctrl-C: checkpoint step_000003 was being written and is discarded; newest checkpoint: "
        f"{run_dir / 'checkpoints' / 'step_000002'}; the same command resumes from the newest checkpoint"]
    assert "SIGINT received" in proc.stdout
    loadable(run_dir / "checkpoints", 2)
    assert outcome_of(run_dir)["status"] == "interrupted"
    again = run_train(*command)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"resumed from {run_dir / 'checkpoints' / 'step_000002'} at step 2" in again.stdout
    assert read_events(run_dir / "metrics.jsonl")[-1]["event"] == "summary"


def test_plus_typo_and_hydra_errors_are_one_line_exit_2_and_a_failed_start_says_why(tmp_path):
    run_dir = tmp_path / "run"
    proc = run_train("experiment=smoke", "+train.max_step=10", f"hydra.run.dir={run_dir}")
    assert proc.returncode == 2 and proc.stderr.splitlines() == [
        "error: unknown config key train.max_step (did you mean train.max_steps?): every valid key already exists, "
        "so no override needs `+`; `python train.py --cfg job` prints every key"], proc.stderr
    assert "unknown config key train.max_step" in (run_dir / "train.log").read_text()
    assert outcome_of(run_dir)["status"] == "failed" and outcome_of(run_dir)["exit_code"] == 2
    proc = run_train("experiment=smoke", "optim=adam", f"hydra.run.dir={tmp_path / 'never'}")
    assert proc.returncode == 2 and proc.stderr.splitlines() == [
        "error: optim=adam: no such option; choose one of adamw, dual, muon, record29, record43, record46, track3_adamw, track3_best46, track3_muon"]
    assert not (tmp_path / "never").exists()  # Hydra refused it before any folder was made
    helped = run_train("--help")
    assert helped.returncode == 0 and "optim: adamw, dual, muon" in helped.stdout and "_schema" not in helped.stdout
    assert "Exit codes: 0 finished" in helped.stdout


def test_a_failing_sweep_job_does_not_stop_the_others(tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_train("-m", *FAST, "train.micro_batch_seqs=24,16", "train.max_steps=2", "train.val_every=0",
                     f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert error_lines(proc) == ["error: train.global_batch_tokens=4096 is not divisible by world size 1 x "
                                 "train.micro_batch_seqs=24 x train.seq_len=128 = 3072 tokens per micro-step"]
    summary = proc.stdout[proc.stdout.index(f"sweep {sweep}: "):].splitlines()
    assert summary[0] == f"sweep {sweep}: 2 jobs: failed 1, finished 1; exit 2"
    assert summary[1].startswith("  #0 train.micro_batch_seqs=24: failed: train.global_batch_tokens=4096 is not")
    assert summary[2].startswith("  #1 train.micro_batch_seqs=16: finished 2 steps, final val loss ")
    assert read_events(sweep / "1" / "metrics.jsonl")[-1]["event"] == "summary"
    assert outcome_of(sweep / "0")["status"] == "failed"


def test_the_same_command_resumes_an_interrupted_run_and_starts_anew_after_a_finished_one(tmp_path):
    runs = tmp_path / "runs"
    command = [*FAST, *STEPS, f"hydra.run.dir=${{run_dir:{runs}}}"]  # the default folder rule, under tmp_path
    stopped = run_train(*command, env={"SPEEDRUN_FAULT": "sigterm:step=3"})
    assert stopped.returncode == 0, stopped.stderr[-2000:]
    (first,) = runs.iterdir()
    assert (f"stopped by SIGTERM after step 3: checkpoint {first / 'checkpoints' / 'step_000003'} written; to continue, "
            f"run the same command again (resume=auto finds this run) or add hydra.run.dir={first}") in stopped.stdout
    killed = run_train(*command, env={"SPEEDRUN_FAULT": "kill:step=5"})  # resumed, then kill -9 at step 5
    assert (f"resume=auto: continuing the unfinished run {first} (same config; it was stopped at step 3; newest "
            "checkpoint step_000003); resume=none starts a new one") in killed.stdout
    assert killed.returncode == -9 and not (first / "outcome.json").exists()  # not the stopped attempt's outcome
    resumed = run_train(*command)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert (f"resume=auto: continuing the unfinished run {first} (same config; it was killed, or crashed before it "
            "could say why; newest checkpoint step_000004); resume=none starts a new one") in resumed.stdout
    assert [p.name for p in runs.iterdir()] == [first.name]
    assert outcome_of(first)["status"] == "finished" and read_events(first / "metrics.jsonl")[-1]["steps"] == 6
    first_resume, resume = [json.loads(line) for line in (first / "resumes.jsonl").read_text().splitlines()]
    assert first_resume["step"] == 3 and resume["step"] == 4 and "checkpoint.every=2" in resume["overrides"]
    assert "train.log" in {p.name for p in first.iterdir()} and "resumed from" in (first / "train.log").read_text()
    anew = run_train(*command)
    assert anew.returncode == 0 and "continuing" not in anew.stdout
    assert len(list(runs.iterdir())) == 2  # a finished run is never resumed: the same command is a new run
