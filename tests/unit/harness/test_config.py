"""Config composition: every experiment composes; typos and bad values fail naming the key."""
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException

from harness.config.schema import Config, ConfigError, Device, load_config, register_configs

CONFIGS = Path(__file__).resolve().parents[3] / "configs"
EXPERIMENTS = sorted(p.stem for p in (CONFIGS / "experiment").glob("*.yaml"))
register_configs()


def composed(*overrides: str):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose("config", overrides=list(overrides))


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_composes_and_validates(name):
    cfg = load_config(composed(f"experiment={name}"))
    assert isinstance(cfg, Config) and cfg.experiment == name


def test_defaults_are_gpt2_small_with_adamw():
    cfg = load_config(composed())
    assert (cfg.model.n_layer, cfg.model.n_embd, cfg.optim.name, cfg.device) == (12, 768, "adamw", Device.auto)


def test_public_override_names_exist():
    cfg = load_config(composed("data.dir=/x", "train.max_steps=7", "train.val_every=3", "train.val_tokens=4096",
                               "train.global_batch_tokens=8192", "train.seq_len=64", "train.micro_batch_seqs=4",
                               "optim.lr=0.01", "seed=5", "device=cpu"))
    assert (cfg.data.dir, cfg.train.max_steps, cfg.optim.lr, cfg.seed, cfg.device) == ("/x", 7, 0.01, 5, Device.cpu)


@pytest.mark.parametrize("override,key", [("train.max_step=3", "train.max_step"),
                                          ("train.max_steps=abc", "train.max_steps"),
                                          ("model.norm=batchnorm", "model.norm"),
                                          ("optim.momentum=0.9", "optim.momentum"),
                                          ("device=tpu", "device")])
def test_typos_and_wrong_types_fail_at_composition_naming_the_key(override, key):
    with pytest.raises(ConfigCompositionException) as err:
        composed(override)
    assert key in str(err.value) + str(err.value.__cause__)


@pytest.mark.parametrize("override,message", [("train.max_steps=-1", "train.max_steps must be > 0"),
                                              ("train.warmdown_frac=1.5", "train.warmdown_frac must lie in [0, 1]"),
                                              ("optim.lr=-0.1", "optim.lr must be >= 0"),
                                              ("model.n_head=5", "model.n_embd=768 must be divisible by model.n_head=5"),
                                              ("optim.betas=[0.9]", "optim.betas must be two numbers")])
def test_out_of_range_values_fail_naming_the_key(override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_config(composed(override))


def test_stop_at_val_loss_must_be_positive():
    from harness.config.schema import TrainConfig
    with pytest.raises(ValueError, match="train.stop_at_val_loss must be > 0"):
        TrainConfig(stop_at_val_loss=-1.0).check()
    TrainConfig(stop_at_val_loss=3.28).check()


def test_generated_schemas_pickle_by_reference():
    """SLURM/submitit tasks unpickle the config: a dataclass made at import (one field per role or per stage key)
    must come back as the same class, or OmegaConf refuses it as its own field's type."""
    import cloudpickle

    from harness.config.schema import PowerCoolConstants
    from optim.stages import StageKeys

    for schema in (PowerCoolConstants, StageKeys):
        assert cloudpickle.loads(cloudpickle.dumps(schema())).__class__ is schema
