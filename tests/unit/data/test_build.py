"""data/build.py wiring: config fields reach the loaders; the trainer reports data errors in one line."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from data.bos import BOSAlignedLoader
from data.build import build_train_loader, build_val_batches
from data.config import DataConfig, LoaderMode, SyntheticConfig
from data.loader import ContiguousLoader
from data.shards import ShardError, write_shard
from harness.config.schema import ConfigError, load_config, register_configs
from tests.support.data_helpers import synthetic_docs, write_stream
from tests.support.inprocess import user_error

CONFIGS = Path(__file__).resolve().parents[3] / "configs"
register_configs()


def composed(*overrides: str):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return load_config(compose("config", overrides=list(overrides)))


def test_config_fields_compose_and_validate():
    cfg = composed("experiment=smoke", "data.mode=bos", "data.bos_max_doc_len=64", "data.prefetch=false")
    assert cfg.data.mode is LoaderMode.bos and cfg.data.bos_max_doc_len == 64 and not cfg.data.prefetch
    assert cfg.data.vocab_check == cfg.model.vocab_size == 512  # ${model.vocab_size}
    assert cfg.data.bos_token == 511  # the synthetic chain's document token
    assert composed("model.vocab_size=50304").data.vocab_check == 50304
    with pytest.raises(ConfigError, match="data.bos_max_doc_len must be >= 0"):
        composed("data.bos_max_doc_len=-1")
    with pytest.raises(ConfigError, match="data.tokenizer_bpe=/nowhere does not exist"):
        composed("data.tokenizer_bpe=/nowhere")


def test_build_picks_the_loader_of_the_mode(tmp_path):
    write_stream(tmp_path, np.concatenate(synthetic_docs(80, seed=5)), 2000)
    write_shard(tmp_path / "fineweb_val_000000.bin", np.concatenate(synthetic_docs(40, seed=6)))
    cfg = DataConfig(dir=str(tmp_path))
    assert isinstance(build_train_loader(cfg, 16, 2, 0, 1), ContiguousLoader)
    cfg.mode, cfg.bos_max_doc_len = LoaderMode.bos, 8
    loader = build_train_loader(cfg, 16, 2, 1, 2)
    assert isinstance(loader, BOSAlignedLoader) and loader.cap == 8 and loader.bos == 50256
    x, _ = loader.next_batch()
    assert (x[:, 0] == 50256).all()
    assert len(list(build_val_batches(cfg, 64, 2, 16, 0, 1))) == 2  # validation stays contiguous
    cfg.vocab_check = 1000  # synthetic ids go up to 50255
    with pytest.raises(ShardError, match=">= vocab size 1000"):
        build_train_loader(cfg, 16, 2, 0, 1)
    with pytest.raises(ShardError, match=">= vocab size 1000"):
        build_val_batches(cfg, 64, 2, 16, 0, 1)


def test_bos_mode_uses_the_synthetic_document_token(tmp_path):
    cfg = DataConfig(dir=str(tmp_path), mode=LoaderMode.bos, synthetic=SyntheticConfig(vocab=100, bos_token=100))
    tokens = np.concatenate([[100, *range(i % 7 + 3)] for i in range(300)])
    write_shard(tmp_path / "fineweb_train_000001.bin", tokens)
    x, _ = build_train_loader(cfg, 8, 4, 0, 1).next_batch()
    assert (x[:, 0] == 100).all()


def test_trainer_names_a_shard_outside_the_model_vocabulary(tmp_path):
    tokens = np.arange(70000) % 1000
    write_shard(tmp_path / "fineweb_val_000000.bin", tokens)
    write_shard(tmp_path / "fineweb_train_000001.bin", tokens)
    line = user_error(tmp_path / "run", "experiment=cpu_fineweb", f"data.dir={tmp_path}", "model.vocab_size=500")
    assert "fineweb_val_000000.bin holds token id" in line and ">= vocab size 500" in line
