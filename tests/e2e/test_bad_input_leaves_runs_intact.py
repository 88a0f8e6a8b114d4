"""Catalogue of bad inputs: configs, data, checkpoints, failures mid-run.

Each case must fail with an error train.py reports in one line (Hydra's own composition errors: a
first line naming the override) and must leave every existing checkpoint, metrics file and shard
byte-identical. Most cases run in-process against a finished run folder that holds checkpoints and
metrics (the one a user would be resuming), so any stray write would show in its hashes; one case
goes through the real command line to check the exit code and the single stderr line.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from hydra.errors import ConfigCompositionException

from data.shards import write_shard
from harness.checkpoint import store
from harness.checkpoint.checkpointer import CheckpointError
from harness.checkpoint.store import MANIFEST
from harness.config.schema import ConfigError
from harness.loop.nonfinite import NonFiniteLoss
from tests.conftest import error_lines, run_train
from tests.support.inprocess import checkpoint_steps, run, tree_hashes

pytestmark = pytest.mark.e2e  # every test runs the training loop in-process (integration)

BASE = ["train.max_steps=4", "train.val_every=2", "checkpoint.every=2", "checkpoint.keep=0"]
N_VAL, N_TRAIN = 10_000, 20_000


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A finished run with checkpoints 2 and 4 (the folder every case is pointed at), plus data folders."""
    root = tmp_path_factory.mktemp("bad_inputs")
    protected = root / "run"
    run(protected, *BASE)
    assert checkpoint_steps(protected / "checkpoints") == [2, 4]
    rng = np.random.default_rng(0)
    data = {}

    def folder(name, val=N_VAL, train=N_TRAIN, high=511):
        d = root / "data" / name
        if val:
            write_shard(d / "fineweb_val_000000.bin", rng.integers(0, high, val))
        if train:
            write_shard(d / "fineweb_train_000001.bin", rng.integers(0, high, train))
        d.mkdir(parents=True, exist_ok=True)
        data[name] = d
        return d

    folder("good")
    folder("missing_val", val=0)
    folder("short_val", val=5_000)
    folder("vocab", high=600)  # GPT-2-sized ids in a 512-token model: another tokenizer's shards
    bad = folder("truncated") / "fineweb_train_000001.bin"
    bad.write_bytes(bad.read_bytes()[:-100])
    bad = folder("foreign") / "fineweb_train_000001.bin"
    bad.write_bytes(b"PK\x03\x04" + os.urandom(4000))  # e.g. a zip saved under a shard's name
    return protected, root, data


def real_data(d: Path) -> list[str]:
    return ["data.synthetic=null", f"data.dir={d}"]


def damaged_copy(world, tmp_path, damage: Callable[[Path], None]) -> Path:
    """A copy of the protected run whose newest checkpoint (step 4) is damaged by `damage`."""
    run_dir = tmp_path / "run"
    shutil.copytree(world[0], run_dir)
    damage(run_dir / "checkpoints" / "step_000004")
    return run_dir


def flip_byte(ckpt: Path) -> None:
    data = bytearray((ckpt / "model.pt").read_bytes())
    data[len(data) // 2] ^= 0x01
    (ckpt / "model.pt").write_bytes(bytes(data))


def truncate(ckpt: Path) -> None:
    (ckpt / "optimizer.pt").write_bytes((ckpt / "optimizer.pt").read_bytes()[:1000])


def garbage_manifest(ckpt: Path) -> None:
    (ckpt / MANIFEST).write_text('{"format": "speedrun-checkpoint", "files": {"model.pt": ')


class _Payload:
    """Unpickling this would run a shell command: weights_only loading must refuse it."""

    marker = Path("/tmp") / f"speedrun-pwned-{uuid.uuid4().hex}"

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def replace_trainer_state(obj) -> Callable[[Path], None]:
    """Damage: trainer.pt becomes torch.save(obj), the manifest updated to match (anyone can do that)."""
    def damage(ckpt: Path) -> None:
        torch.save(obj, ckpt / "trainer.pt")
        data = (ckpt / "trainer.pt").read_bytes()
        manifest = json.loads((ckpt / MANIFEST).read_text())
        manifest["files"]["trainer.pt"] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        (ckpt / MANIFEST).write_text(json.dumps(manifest))
    return damage


@dataclass
class Case:
    id: str
    overrides: Callable[[tuple], list[str]]  # world -> overrides (the run folder is added by the runner)
    error: type
    says: str
    damage: Callable[[Path], None] | None = None   # damage a copy of the protected run's newest checkpoint


P = lambda *o: (lambda w: list(o))  # noqa: E731  fixed overrides
CASES = [
    # configs: Hydra rejects the override at composition, naming it
    Case("wrong_type", P("train.max_steps=abc"), ConfigCompositionException, "train.max_steps"),
    Case("unknown_experiment", P("experiment=nope"), ConfigCompositionException, "experiment/nope"),
    Case("unknown_key", P("checkpoint.evry=5"), ConfigCompositionException, "checkpoint.evry"),
    Case("wrong_type_bool", P("resume_force=maybe"), ConfigCompositionException, "resume_force"),
    Case("unknown_enum", P("train.nonfinite=ignore"), ConfigCompositionException, "train.nonfinite"),
    Case("plus_unknown_key", P("+train.max_step=10"), ConfigError,  # `+` would add it: the schema check refuses
         "unknown config key train.max_step (did you mean train.max_steps?)"),
    # configs: values out of range, named by key
    Case("negative_size", P("train.micro_batch_seqs=-4"), ConfigError, "train.micro_batch_seqs must be > 0"),
    Case("negative_every", P("checkpoint.every=-1"), ConfigError, "checkpoint.every must be >= 0"),
    Case("negative_keep", P("checkpoint.keep=-1"), ConfigError, "checkpoint.keep must be >= 0"),
    Case("zero_stop_check", P("checkpoint.stop_check_every=0"), ConfigError, "checkpoint.stop_check_every must be > 0"),
    Case("heads_do_not_divide", P("model.n_head=3"), ConfigError,
         "model.n_embd=64 must be divisible by model.n_head=3"),
    Case("empty_resume", P("resume=''"), ConfigError, "resume must be auto, none or a checkpoint path"),
    Case("non_divisible_batch", P("train.global_batch_tokens=3000"), ConfigError,
         "train.global_batch_tokens=3000 is not divisible by world size 1"),
    Case("seq_len_over_block", P("train.seq_len=512", "train.micro_batch_seqs=8"), ConfigError,
         "train.seq_len=512 exceeds model.block_size=256"),
    # data
    Case("data_dir_missing", P("data.synthetic=null", "data.dir=/nonexistent/shards"), Exception, "is not a folder"),
    Case("missing_val_shard", lambda w: real_data(w[2]["missing_val"]), Exception,
         "has no validation shards matching 'fineweb_val_*.bin'"),
    Case("truncated_shard", lambda w: real_data(w[2]["truncated"]), Exception, "truncated or corrupt"),
    Case("foreign_shard", lambda w: real_data(w[2]["foreign"]), Exception, "(not a speedrun token shard)"),
    Case("vocab_mismatch", lambda w: real_data(w[2]["vocab"]), Exception, ">= vocab size 512"),
    Case("val_too_short", lambda w: real_data(w[2]["short_val"]), Exception, "fewer than train.val_tokens=8192"),
    Case("loader_state_other_shards", lambda w: real_data(w[2]["good"]), Exception,
         "loader state was saved over other shards"),
    # checkpoints
    Case("resume_missing_path", P("resume=/nonexistent/ckpt"), CheckpointError, "no such file or folder"),
    Case("resume_foreign_file", lambda w: [f"resume={w[1] / 'ckpt.pt'}"], CheckpointError,
         "is a file, not a speedrun checkpoint folder"),
    Case("resume_foreign_folder", lambda w: [f"resume={w[1] / 'foreign_ckpt'}"], CheckpointError,
         "is not a speedrun checkpoint"),
    Case("corrupt_checkpoint", P(), CheckpointError, "model.pt does not match its sha256", damage=flip_byte),
    Case("truncated_checkpoint", P(), CheckpointError, "optimizer.pt is 1000 bytes, the manifest says",
         damage=truncate),
    Case("garbage_manifest", P(), CheckpointError, "unreadable manifest.json", damage=garbage_manifest),
    Case("pickle_payload", P(), CheckpointError, "refused by torch.load(weights_only=True)",
         damage=replace_trainer_state({"step": 4, "config": "{}", "payload": _Payload()})),
    Case("foreign_trainer_state", P(), CheckpointError, "trainer.pt does not hold a trainer state",
         damage=replace_trainer_state({"iter_num": 4, "model_args": {"n_layer": 2}})),
    Case("other_model_config", P("model.n_layer=3"), CheckpointError, "model.n_layer (checkpoint 2, now 3)"),
    Case("other_optimizer", P("optim=dual"), CheckpointError, "optim.name (checkpoint 'adamw', now 'dual')"),
    Case("resume_none_over_checkpoints", P("resume=none"), CheckpointError, "resume=none but"),
    Case("unwritable_checkpoint_dir", lambda w: [f"checkpoint.dir={w[1] / 'ckpt.pt' / 'sub'}"], CheckpointError,
         "is not writable"),
]


@pytest.fixture(scope="module")
def foreign_files(world):
    torch.save({"model": {"w": torch.zeros(2)}, "iter_num": 5}, world[1] / "ckpt.pt")  # a nanoGPT-style file
    (world[1] / "foreign_ckpt").mkdir()
    (world[1] / "foreign_ckpt" / MANIFEST).write_text('{"format": "someone-else", "files": {}}')
    return world


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_fails_in_one_line_and_changes_nothing(case, foreign_files, tmp_path):
    world = foreign_files
    run_dir = damaged_copy(world, tmp_path, case.damage) if case.damage else world[0]
    watched = [world[0], world[1] / "data", run_dir]
    before = tree_hashes(*watched)
    with pytest.raises(case.error) as err:
        run(run_dir, *BASE, *case.overrides(world))
    message = str(err.value)
    assert case.says in message.splitlines()[0], message
    if not isinstance(err.value, ConfigCompositionException):
        from harness.supervisor import USER_ERRORS
        assert isinstance(err.value, USER_ERRORS), type(err.value)  # the supervisor: one line, exit 2
        assert "\n" not in message
    assert tree_hashes(*watched) == before
    if case.id == "pickle_payload":
        assert not _Payload.marker.exists()


def test_nonfinite_loss_mid_run_names_the_last_good_checkpoint(world, tmp_path, monkeypatch):
    monkeypatch.setenv("SPEEDRUN_FAULT", "nan:step=2")
    with pytest.raises(NonFiniteLoss) as err:
        run(tmp_path, *BASE)
    assert str(err.value).startswith(f"train loss is nan at step 3; last good checkpoint: {tmp_path}/checkpoints/"
                                     "step_000002") and "\n" not in str(err.value)
    good = tmp_path / "checkpoints" / "step_000002"
    store.verify(good, store.read_manifest(good))


def test_disk_full_mid_run_keeps_the_previous_checkpoint(world, tmp_path, monkeypatch):
    real_save = store.save_file

    def save(obj, path):
        if "step_000004" in str(path):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, path)

    monkeypatch.setattr(store, "save_file", save)
    with pytest.raises(CheckpointError, match=r"No space left on device \(ENOSPC\); the previous checkpoint .*"
                                              r"step_000002 is intact"):
        run(tmp_path, *BASE)
    ckpts = tmp_path / "checkpoints"
    assert [p.name for p in ckpts.iterdir()] == ["step_000002"]
    store.verify(ckpts / "step_000002", store.read_manifest(ckpts / "step_000002"))


@pytest.mark.e2e
def test_command_line_reports_a_corrupt_checkpoint_in_one_line_exit_2(world, tmp_path):
    run_dir = damaged_copy(world, tmp_path, flip_byte)
    before = tree_hashes(run_dir)
    proc = run_train("experiment=smoke", "train.precision=fp32", "train.val_tokens=8192", *BASE,
                     f"hydra.run.dir={run_dir}", env={"OMP_NUM_THREADS": "1"})
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = error_lines(proc)
    assert len(lines) == 1 and "step_000004 is damaged: model.pt does not match its sha256" in lines[0]
    assert "Traceback" not in proc.stderr
    after = tree_hashes(run_dir)
    # Hydra rewrites its own .hydra/ record and train.py config.yaml at start; checkpoints and metrics are untouched.
    keep = lambda h: {k: v for k, v in h.items() if "/checkpoints/" in k or k.endswith("metrics.jsonl")}  # noqa: E731
    assert keep(after) == keep(before)
