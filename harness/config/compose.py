"""A run's config without Hydra's app: configs/config.yaml composed with overrides, typed and validated.

For code that builds a run in-process (benchmarks, tests) exactly as `python train.py OVERRIDES` would
compose it; raises ConfigError with train.py's one-line message for a bad value.
"""
from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir

from common.paths import CONFIGS, REPO
from harness.config.schema import Config, load_config, register_configs


def compose_config(*overrides: str) -> Config:
    """The typed Config of `overrides`; a relative data.dir is taken from the repository root, where
    train.py runs."""
    register_configs()
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = load_config(compose("config", overrides=list(overrides)))
    if cfg.data.dir and not Path(cfg.data.dir).is_absolute():
        cfg.data.dir = str(REPO / cfg.data.dir)
    return cfg
