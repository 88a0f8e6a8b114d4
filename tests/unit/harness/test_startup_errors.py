"""train.py's start-up errors a user meets first, in-process (the one line train.py prints is the exception's message);
the smoke experiment and divergence as a user runs them: tests/e2e/test_train.py."""
import numpy as np
import pytest
import torch

from data.shards import write_shard
from harness.config.schema import ConfigError, Device
from harness.process import distributed as D
from tests.support.inprocess import user_error


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


def test_staged_windows_need_the_models_external_windows(tmp_path):
    """train.window_stages sets the windows each step: a model that does not take them is refused at start."""
    line = user_error(tmp_path, "experiment=smoke", "train.lr_schedule=staged", "train.window_stages=[2,4]")
    assert "train.window_stages sets the attention windows each step: it needs model.attn_windows_external=true" in line
