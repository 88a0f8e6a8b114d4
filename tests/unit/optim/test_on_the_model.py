"""The hybrid optimizer on the real model (model.param_roles()); through train.py: tests/e2e/test_optim_training.py."""

import pytest
import torch
from omegaconf import OmegaConf

from model.config import ModelConfig
from model.gpt import GPT
from optim import build_optimizer, orthogonalize
from optim.hybrid_config import DualConfig, MuonConfig
from tests.support.inprocess import compose_config, user_error


def tiny_model(**kw) -> GPT:
    torch.manual_seed(0)
    return GPT(ModelConfig(n_layer=2, n_head=2, n_embd=64, vocab_size=256, block_size=64, **kw))


def loss_backward(model: GPT) -> None:
    x = torch.randint(0, 256, (4, 32), generator=torch.Generator().manual_seed(1))
    model(x, torch.roll(x, -1, dims=1)).backward()


def groups_by_name(opt) -> dict[str, dict]:
    return {n: g for g in opt.param_groups for n in g["names"]}


def test_routing_on_the_real_untied_model():
    model = tiny_model(tie_embeddings=False)
    roles = model.param_roles()
    cfg = OmegaConf.to_object(OmegaConf.structured(DualConfig(rate_mode="mass", lr=0.2)))
    opt = build_optimizer(cfg, list(model.named_parameters()), roles)
    by_name = groups_by_name(opt)
    assert by_name.keys() == dict(model.named_parameters()).keys()
    expected = {"embed": "embed", "pos_embed": "embed", "attn_qkv": "linear", "attn_out": "linear",
                "mlp_in": "linear", "mlp_out": "linear", "head": "adam", "gain": "adam", "bias": "adam",
                "attn_out_bias": "adam"}
    for name, role in roles.items():
        assert by_name[name]["map"] == expected[role], (name, role)
    # mass rule with token + position tables at the input: they share the embed mass
    lrs = {g["role"]: g["initial_lr"] for g in opt.param_groups}
    assert lrs["embed"] == pytest.approx(0.2 / 14) and lrs["pos_embed"] == pytest.approx(0.2 / 14)
    assert lrs["attn_qkv"] == pytest.approx(0.2 * 5 / 7) and lrs["mlp_out"] == pytest.approx(0.2 * 5 / 21)


def test_real_fused_qkv_step_is_per_block():
    model = tiny_model(tie_embeddings=False)
    cfg = OmegaConf.to_object(OmegaConf.structured(MuonConfig(momentum=0.0, momentum_warmup_steps=0)))
    opt = build_optimizer(cfg, list(model.named_parameters()), model.param_roles())
    loss_backward(model)
    w = model.blocks[0].attn.qkv.weight
    before, grad = w.detach().clone(), w.grad.clone()
    opt.step()
    update = (before - w.detach()) / 0.05
    expected = torch.cat([orthogonalize(b, "quintic", 5) for b in grad.split(64)])
    torch.testing.assert_close(update, expected, atol=1e-5, rtol=0)


def test_tied_model_needs_tied_map():
    model = tiny_model()  # GPT-2 default: tied embedding / head
    with pytest.raises(ValueError, match="optim.tied_map"):
        build_optimizer(DualConfig(tied_map=None), list(model.named_parameters()), model.param_roles())
    opt = build_optimizer(DualConfig(tied_map="embed"), list(model.named_parameters()), model.param_roles())
    assert groups_by_name(opt)["wte.weight"]["map"] == "embed"
    loss_backward(model)
    opt.step()
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_bad_optim_value_is_one_line_naming_the_key(tmp_path):
    assert "optim.rate_mode='auto'" in user_error(tmp_path, "experiment=smoke", "optim=dual", "optim.rate_mode=auto")


@pytest.mark.parametrize("name", ["adamw", "dual", "muon"])
def test_optim_yaml_states_no_value_of_its_own(name):
    """Each default is stated once, in the schema (optim/hybrid_config.py, optim/adamw.py):
    configs/optim/NAME.yaml only names it, so `optim=NAME` is exactly the schema's defaults."""
    from pathlib import Path

    from optim.registry import OPTIMIZERS
    yaml = OmegaConf.load(Path(__file__).resolve().parents[3] / "configs" / "optim" / f"{name}.yaml")
    assert set(yaml.keys()) == {"defaults"}
    schema = OPTIMIZERS[name].schema
    assert compose_config(f"optim={name}").optim == schema()
