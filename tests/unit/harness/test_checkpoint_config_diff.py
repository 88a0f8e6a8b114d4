"""Which model/optim differences refuse a resume (harness/checkpoint/state.py): a key added to the code after
the checkpoint was written, left at its schema default, is no difference (it is the behavior from before it);
the same key set to another value, a changed value and a removed key are."""
from pathlib import Path

from hydra import compose, initialize_config_dir

from harness.checkpoint.state import config_diff, model_optim_config, model_optim_defaults
from harness.config.schema import load_config, register_configs

CONFIGS = Path(__file__).resolve().parents[3] / "configs"


def composed(*overrides: str):
    register_configs()
    with initialize_config_dir(config_dir=str(CONFIGS), version_base=None):
        return load_config(compose(config_name="config", overrides=list(overrides)))


def test_a_key_newer_than_the_checkpoint_at_its_default_is_no_difference():
    cfg = composed("experiment=track3_proxy_cpu", "optim=dual")
    now, defaults = model_optim_config(cfg), model_optim_defaults(cfg)
    assert defaults["optim.head_lr_times_width"] is None and defaults["optim.soap"] is False
    older = {k: v for k, v in now.items() if k not in ("optim.head_lr_times_width", "optim.soap")}
    assert config_diff(older, now, defaults) == []
    assert config_diff(older, now) != []  # without the schema's defaults every one-sided key counts
    # set away from its default, the new key changes the run: refused, named
    changed = model_optim_config(composed("experiment=track3_proxy_cpu", "optim=dual", "optim.head_lr_times_width=0.5"))
    assert config_diff(older, changed, defaults) == ["optim.head_lr_times_width (checkpoint '<absent>', now 0.5)"]
    # a preset whose value differs from the schema's (track3_muon's head_lr 0.004 vs 0.008) is a real difference
    # even where the checkpoint lacks the key
    muon = composed("experiment=track3_proxy_cpu", "optim=track3_muon")
    partial = {k: v for k, v in model_optim_config(muon).items() if k != "optim.head_lr"}
    assert config_diff(partial, model_optim_config(muon), model_optim_defaults(muon)) == [
        "optim.head_lr (checkpoint '<absent>', now 0.004)"]
    # a key only the checkpoint has (removed from the code, or another optimizer's) still counts
    assert config_diff({**now, "optim.gone": 1}, now, defaults) == ["optim.gone (checkpoint 1, now '<absent>')"]
