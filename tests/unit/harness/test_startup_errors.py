"""train.py on CPU: the smoke experiment and divergence as a user runs them (e2e), the start-up errors a user
meets first in-process (the one line train.py prints is the exception's message)."""
import json
import math

import numpy as np
import pytest
import torch

from data.shards import write_shard
from harness.config.schema import ConfigError, Device
from harness.process import distributed as D
from harness.telemetry.metrics import read_metrics
from tests.conftest import error_lines, run_train
from tests.support.inprocess import user_error


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("smoke")
    proc = run_train("experiment=smoke", f"hydra.run.dir={run_dir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir, proc


@pytest.mark.e2e
def test_smoke_learns_and_writes_its_run_folder(smoke_run):
    run_dir, proc = smoke_run
    events = read_metrics(run_dir / "metrics.jsonl")
    vals = [e for e in events if e["event"] == "val"]
    assert [e["step"] for e in vals] == [0, 50, 100, 150, 200]
    assert vals[0]["val_loss"] - vals[-1]["val_loss"] >= 1.0
    assert vals[0]["train_time_ms"] == 0 and all(a["train_time_ms"] < b["train_time_ms"] for a, b in zip(vals, vals[1:]))
    trains = [e for e in events if e["event"] == "train"]
    assert all({"step", "tokens", "train_time_ms", "train_loss", "lr/matrices", "lr_factor"} <= e.keys() for e in trains)
    assert trains[-1]["tokens"] == 200 * 4096
    assert events[-1]["event"] == "summary" and math.isclose(events[-1]["final_val_loss"], vals[-1]["val_loss"])
    assert "vocab_size: 512" in (run_dir / "config.yaml").read_text()  # resolved config, with the experiment's overrides
    assert "step:200/200 val_loss:" in proc.stdout


def test_missing_data_dir_is_one_line_naming_data_dir(tmp_path):
    line = user_error(tmp_path, "experiment=cpu_fineweb", f"data.dir={tmp_path / 'no_shards_here'}")
    assert "data.dir" in line and "data.prep.fineweb download" in line


def test_empty_data_dir_names_the_pattern(tmp_path):
    assert "fineweb_val_*.bin" in user_error(tmp_path / "run", "experiment=cpu_fineweb", f"data.dir={tmp_path}")


def test_corrupt_shard_is_named(tmp_path):
    write_shard(tmp_path / "fineweb_val_000000.bin", np.arange(70000) % 1000)
    bad = tmp_path / "fineweb_train_000001.bin"
    write_shard(bad, np.arange(70000) % 1000)
    bad.write_bytes(bad.read_bytes()[:-100])  # truncated download
    line = user_error(tmp_path / "run", "experiment=cpu_fineweb", f"data.dir={tmp_path}")
    assert str(bad) in line and "truncated" in line


def test_indivisible_batch_reports_the_numbers(tmp_path):
    assert "train.global_batch_tokens=3000 is not divisible by world size 1 x train.micro_batch_seqs=16 x " \
           "train.seq_len=128 = 2048" in user_error(tmp_path, "experiment=smoke", "train.global_batch_tokens=3000")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message for a machine without CUDA")
def test_cuda_requested_without_cuda_is_a_clear_error():
    with pytest.raises(ConfigError, match="device=cuda but no CUDA device"):
        D.pick_device(Device.cuda, 0)


@pytest.mark.e2e
def test_nan_loss_stops_with_the_step(tmp_path):
    proc = run_train("experiment=smoke", "optim.lr=1e6", "train.max_steps=20", "train.log_every=1",
                     f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 3
    assert "loss is nan" in error_lines(proc)[0] or "loss is inf" in error_lines(proc)[0]
    # every event written before the stop is intact JSON
    assert all(json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines())
