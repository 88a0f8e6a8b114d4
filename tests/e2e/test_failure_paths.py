"""Failure paths, in-process, with the real failures injected: a full disk under torch.save (the kernel's
ENOSPC from /dev/full; a real small tmpfs where this process may mount one), a second Ctrl-C inside the
save (real SIGINTs), a bad token id in the middle of a shard, `+key` typos and Hydra's errors in one line,
the train data wrapping around, and the bookkeeping behind "the same command resumes" and sweeps.
Each failure must end with one line, leave no temporary files, and keep the previous checkpoint loadable
and metrics.jsonl intact. (The same cases through the command line: test_failure_paths_cli.py.)"""
from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from data.shards import ShardError, write_shard
from harness.checkpoint import run_dir, store
from harness.checkpoint.checkpointer import CheckpointError, SaveInterrupted
from harness.checkpoint.store import PendingCheckpoint, list_checkpoints, load_file, read_manifest, verify
from harness.config.schema import ConfigError
from harness.process import outcome, sweep
from harness.process.cli import hydra_error_line
from harness.process.console_log import CLEAR_LINE, ConsoleLog
from harness.process.preemption import StopRequest
from tests.conftest import REPO
from tests.support.inprocess import compose_config, run

pytestmark = pytest.mark.e2e  # every test runs the training loop in-process (integration)

STEPS = ["train.max_steps=6", "train.val_every=2", "checkpoint.every=2", "checkpoint.keep=0"]


def assert_left_clean(root: Path, newest: int) -> None:
    """No temporary folder; the newest complete checkpoint is `newest`, verified and loadable."""
    assert not [p.name for p in root.iterdir() if p.name.startswith(".")], list(root.iterdir())
    steps = [s for s, _ in list_checkpoints(root)]
    assert steps[-1] == newest, steps
    good = root / store.step_name(newest)
    verify(good, read_manifest(good))
    assert load_file(good / "trainer.pt", "trainer state")["step"] == newest
    assert load_file(good / "model.pt", "model state")


def assert_metrics_intact(run_dir_: Path, up_to_step: int) -> None:
    events = [json.loads(line) for line in (run_dir_ / "metrics.jsonl").read_text().splitlines()]
    assert events[0]["event"] == "run" and max(e.get("step", 0) for e in events) == up_to_step


# ---- a full disk inside torch.save -----------------------------------------------------------------

@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs Linux /dev/full")
def test_torch_save_on_a_full_disk_raises_the_disks_error_not_torchs(tmp_path):
    f = open("/dev/full", "wb")
    with pytest.raises(RuntimeError, match="unexpected pos"):  # what torch.save itself reports
        torch.save({"w": torch.zeros(100_000)}, f)
    with pytest.raises(OSError):  # and closing the file fails again, flushing its buffer
        f.close()
    with pytest.raises(OSError) as err:
        store.save_file({"w": torch.zeros(100_000)}, Path("/dev/full"))
    assert err.value.errno == 28  # ENOSPC: what the handler reports in one line


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs Linux /dev/full")
def test_full_disk_during_a_checkpoint_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    add = PendingCheckpoint.add

    def add_on_a_full_disk(self, name, obj):
        if self.step == 4 and name == "optimizer.pt":
            os.symlink("/dev/full", self.tmp / name)  # the kernel answers every write with ENOSPC
        return add(self, name, obj)

    monkeypatch.setattr(PendingCheckpoint, "add", add_on_a_full_disk)
    with pytest.raises(CheckpointError) as err:
        run(tmp_path, *STEPS)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("cannot write checkpoint step_000004 in ")
    assert "No space left on device (ENOSPC)" in msg and "step_000002 is intact" in msg
    assert "run the same command again" in msg
    assert_left_clean(tmp_path / "checkpoints", newest=2)
    assert_metrics_intact(tmp_path, up_to_step=4)


@pytest.fixture
def small_tmpfs(tmp_path):
    """Mount a tmpfs of `size` bytes (root only; skipped elsewhere); unmounted afterwards."""
    mounted = []

    def mount(size: int) -> Path:
        where = tmp_path / f"tmpfs{len(mounted)}"
        where.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")
        mounted.append(where)
        return where

    yield mount
    for where in mounted:
        subprocess.run(["umount", str(where)], capture_output=True)


def test_a_real_small_filesystem_fills_up_during_a_checkpoint(tmp_path, small_tmpfs):
    sizing = run(tmp_path / "sizing", "train.max_steps=2", "train.val_every=0", "checkpoint.every=2")
    assert sizing["steps"] == 2
    one = sum(f.stat().st_size for f in (tmp_path / "sizing" / "checkpoints" / "step_000002").iterdir())
    disk = small_tmpfs(int(1.5 * one) // 4096 * 4096)  # room for one checkpoint, not two
    with pytest.raises(CheckpointError, match=r"cannot write checkpoint step_000004 .*No space left on device "
                                              r"\(ENOSPC\); the previous checkpoint .*step_000002 is intact"):
        run(tmp_path / "run", *STEPS, f"checkpoint.dir={disk}")
    assert_left_clean(disk, newest=2)
    assert_metrics_intact(tmp_path / "run", up_to_step=4)


# ---- a second Ctrl-C inside the save --------------------------------------------------------------

def test_second_ctrl_c_inside_the_save_discards_it_and_keeps_the_previous(tmp_path, monkeypatch):
    """Ctrl-C at step 5 asks for a stop checkpoint; a second Ctrl-C lands while torch.save writes it."""
    from harness.process import faults

    def first_ctrl_c(step):
        if step == 5:
            os.kill(os.getpid(), signal.SIGINT)

    write, sent = store._HashingWriter.write, []

    def second_ctrl_c(self, data):
        if not sent and "step_000005" in str(self.f.name) and self.nbytes > 1000:
            sent.append(self.f.name)
            os.kill(os.getpid(), signal.SIGINT)  # delivered here: the handler raises KeyboardInterrupt
        return write(self, data)

    monkeypatch.setattr(faults, "at_step", first_ctrl_c)  # train.py calls faults.at_step(step) each step
    monkeypatch.setattr(store._HashingWriter, "write", second_ctrl_c)
    with StopRequest(True, 1, torch.device("cpu")) as stop:
        with pytest.raises(SaveInterrupted) as err:
            run(tmp_path, *STEPS, stop=stop)
    assert sent and "model.pt" in sent[0]
    assert str(err.value) == (f"checkpoint step_000005 was being written and is discarded; newest checkpoint: "
                              f"{tmp_path / 'checkpoints' / 'step_000004'}")
    assert_left_clean(tmp_path / "checkpoints", newest=4)
    assert_metrics_intact(tmp_path, up_to_step=5)


# ---- a token id >= vocab in the middle of a later shard --------------------------------------------

def test_bad_id_in_the_middle_of_a_later_shard_stops_at_it_naming_file_and_position(tmp_path):
    rng = np.random.default_rng(0)
    data = tmp_path / "data"
    write_shard(data / "fineweb_val_000000.bin", rng.integers(0, 511, 10_000))
    write_shard(data / "fineweb_train_000001.bin", rng.integers(0, 511, 18_000))
    tokens = rng.integers(0, 511, 200_000)
    tokens[150_001] = 600  # where 16 sampled windows of 8192 would not look
    bad = write_shard(data / "fineweb_train_000002.bin", tokens).path
    with pytest.raises(ShardError) as err:
        run(tmp_path / "run", *STEPS, "data.synthetic=null", f"data.dir={data}")
    assert str(err.value) == (f"shard {bad} holds token id 600 >= vocab size 512 at token 150,001 of 200,000: it was "
                              "not tokenized with this vocabulary; re-tokenize it (python -m data.prep.tokenize), or, if "
                              "its vocabulary is larger, set model.vocab_size above 600")
    assert_left_clean(tmp_path / "run" / "checkpoints", newest=4)  # 18,000 tokens last 4 steps of 4,096
    assert_metrics_intact(tmp_path / "run", up_to_step=4)


# ---- the train data wraps around -------------------------------------------------------------------

def test_data_wrapping_around_is_said_once_and_recorded_at_every_wrap(tmp_path, capsys):
    run(tmp_path, "train.max_steps=5", "train.val_every=0", f"data.dir={tmp_path / 'data'}",
        "data.synthetic.train_tokens=9000")
    said = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("note: the train data wrapped")]
    assert said == ["note: the train data wrapped around during step 3: its 9,000 tokens (2.2 steps) are repeated "
                    "from here on (epoch 2); add train shards to data.dir for more"]
    wraps = [json.loads(ln) for ln in (tmp_path / "metrics.jsonl").read_text().splitlines() if '"epoch"' in ln]
    assert [(e["step"], e["epoch"], e["tokens_per_epoch"]) for e in wraps] == [(3, 1, 9000), (5, 2, 9000)]


# ---- config keys and Hydra's errors, in one line ----------------------------------------------------

def test_plus_prefixed_unknown_key_is_refused_naming_the_closest_key():
    with pytest.raises(ConfigError) as err:
        compose_config("experiment=smoke", "+train.max_step=10")
    assert str(err.value) == ("unknown config key train.max_step (did you mean train.max_steps?): every valid key "
                              "already exists, so no override needs `+`; `python train.py --cfg job` prints every key")
    with pytest.raises(ConfigError, match="unknown config key optim.lrr .did you mean optim.lr"):
        compose_config("+optim.lrr=3")
    with pytest.raises(ConfigError, match="unknown config key train.extra "):
        compose_config("+train.extra.a=1")


def composition_error(*overrides: str) -> str:
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        with pytest.raises(Exception) as err:
            compose("config", overrides=list(overrides))
    return hydra_error_line(err.value)


@pytest.mark.parametrize("override,line", [
    ("train.max_step=10", "unknown config key train.max_step (did you mean train.max_steps?): "
                          "`python train.py --cfg job` prints every key"),
    ("optim=adam", "optim=adam: no such option; choose one of adamw, dual, muon, record29, record43, record46, track3_adamw, track3_best46, track3_muon"),
    ("logger=wandb_schema", "logger=wandb_schema: no such option; choose one of none, wandb"),
    ("optim.lr=fast", "optim.lr=fast: Value 'fast' of type 'str' could not be converted to Float"),
    ("train.precision=fp16", "train.precision=fp16: Invalid value 'fp16', expected one of [auto, fp32, bf16]"),
])
def test_hydra_errors_are_one_line_without_internal_schemas(override, line):
    assert composition_error(override) == line


# ---- the run folder: the same command resumes an unfinished run, never a finished one ---------------

def fake_run(folder: Path, config: dict, status: str | None, checkpoint: bool = True) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(config)))
    if status:
        outcome.record(outcome.Outcome(status, "test"), folder)
    if checkpoint:
        pending = PendingCheckpoint(folder / "checkpoints", 3)
        pending.add("model.pt", {"w": torch.zeros(1)})
        pending.commit({})
    return folder


def test_find_unfinished_picks_the_same_config_that_did_not_finish_and_is_idle(tmp_path):
    config, other = {"seed": 0, "train": {"max_steps": 9}}, {"seed": 1, "train": {"max_steps": 9}}
    fake_run(tmp_path / "a_finished", config, "finished")
    fake_run(tmp_path / "b_other_config", other, "stopped")
    fake_run(tmp_path / "c_no_checkpoint", config, None, checkpoint=False)
    killed = fake_run(tmp_path / "d_killed", config, None)
    assert run_dir.find_unfinished(tmp_path, config) == killed
    lock = run_dir.RunLock(killed)
    lock.acquire()  # a live run writes it: never picked
    try:
        assert run_dir.in_use(killed) and run_dir.find_unfinished(tmp_path, config) is None
        with pytest.raises(RuntimeError, match=f"run folder {killed} is in use by a live run .pid {os.getpid()}"):
            run_dir.RunLock(killed).acquire()
    finally:
        lock.release()
    assert run_dir.finished_before(tmp_path / "a_finished", config)["status"] == "finished"
    assert run_dir.finished_before(killed, config) is None


# ---- a sweep's summary, train.log -----------------------------------------------------------------------

def test_sweep_summary_lists_every_job_and_takes_the_largest_exit_code(tmp_path):
    for n, (status, override) in enumerate([("failed", "lr=9"), ("finished", "lr=1"), ("stopped", "lr=2")]):
        (tmp_path / str(n)).mkdir()
        outcome.record(outcome.Outcome(status, f"{status} msg", overrides=["experiment=smoke", override]),
                       tmp_path / str(n))
    (tmp_path / "3" / ".hydra").mkdir(parents=True)  # started, then killed: no outcome.json
    (tmp_path / "3" / ".hydra" / "overrides.yaml").write_text("- experiment=smoke\n- lr=3\n")
    lines, code = sweep.summary_lines(tmp_path)
    assert code == 2 and lines == [
        f"sweep {tmp_path}: 4 jobs: failed 1, finished 1, stopped 1, no outcome 1; exit 2",
        "  #0 lr=9: failed msg (exit 2)", "  #1 lr=1: finished msg", "  #2 lr=2: stopped msg",
        "  #3 lr=3: no outcome.json: killed, or still running (exit 1)",
        f"  to finish it: the same command with hydra.sweep.dir={tmp_path} (finished jobs are skipped, "
        "stopped ones resume)"]


def test_train_log_holds_the_console_without_status_line_redraws(tmp_path, capsys):
    with ConsoleLog(tmp_path / "train.log"):
        print("step:1/2 val_loss:5.0")
        import sys
        sys.stdout.write(f"{CLEAR_LINE}step:2/2 train_loss:4.0\n[ 2/2 100%] loss 4.0")
        sys.stdout.write(CLEAR_LINE)
        print("error: something", file=sys.stderr)
    assert (tmp_path / "train.log").read_text() == "step:1/2 val_loss:5.0\nstep:2/2 train_loss:4.0\nerror: something\n"
    assert "[ 2/2 100%]" in capsys.readouterr().out  # the terminal still got its status line
