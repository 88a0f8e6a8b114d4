"""The hybrid optimizer on the real model (model.param_roles()) and through train.py."""
import math

import pytest
import torch
from omegaconf import OmegaConf

from harness.telemetry.metrics import read_metrics
from model.config import ModelConfig
from model.gpt import GPT
from optim import build_optimizer, orthogonalize
from optim.hybrid_config import DualConfig, MuonConfig
from tests.conftest import run_train
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
                "mlp_in": "linear", "mlp_out": "linear", "head": "adam", "gain": "adam", "bias": "adam"}
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


# experiment=smoke sets optim.lr=3e-3 (an AdamW rate), so the Muon/dual rate is passed explicitly.
# dual runs the smoke's tied model (its yaml maps the tied table to the Embed map); Muon runs it
# untied, as records 8-20 (with the tied table on Adam it stays near the unigram loss here).
@pytest.mark.e2e
@pytest.mark.parametrize("optim,extra", [("dual", []), ("muon", ["model.tie_embeddings=false"])])
def test_train_smoke_learns(tmp_path, optim, extra):
    proc = run_train("experiment=smoke", f"optim={optim}", "optim.lr=0.05", "train.max_steps=60",
                     "train.val_every=30", "optim.diag_every=20", *extra, f"hydra.run.dir={tmp_path}",
                     env={"OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    vals = [e["val_loss"] for e in read_metrics(tmp_path / "metrics.jsonl") if e["event"] == "val"]
    assert len(vals) == 3 and all(math.isfinite(v) for v in vals)
    assert vals[0] - vals[-1] > 1.0  # the synthetic chain is learnable: more than a nat in 60 steps


@pytest.mark.e2e
def test_two_rank_torchrun_dual(tmp_path):
    proc = run_train("experiment=smoke", "optim=dual", "train.max_steps=20", "train.val_every=0",
                     "optim.diag_every=10", f"hydra.run.dir={tmp_path}", nproc=2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    events = read_metrics(tmp_path / "metrics.jsonl")
    assert events[-1]["event"] == "summary" and events[-1]["world_size"] == 2
    diags = [e for e in events if e["event"] == "diag"]  # rank 0 alone logs them, once per diag step
    assert [e["step"] for e in diags] == [10, 20] and all(math.isfinite(e["ns_error"]) for e in diags)
    assert math.isfinite(events[-1]["final_val_loss"])


def test_bad_optim_value_is_one_line_naming_the_key(tmp_path):
    assert "optim.rate_mode='auto'" in user_error(tmp_path, "experiment=smoke", "optim=dual", "optim.rate_mode=auto")


@pytest.mark.parametrize("name", ["adamw", "dual", "muon"])
def test_optim_yaml_states_no_value_of_its_own(name):
    """Each default is stated once, in the schema (optim/hybrid_config.py, optim/config.py):
    configs/optim/NAME.yaml only names it, so `optim=NAME` is exactly the schema's defaults."""
    from pathlib import Path

    from optim.config import OPTIM_SCHEMAS
    yaml = OmegaConf.load(Path(__file__).resolve().parents[3] / "configs" / "optim" / f"{name}.yaml")
    assert set(yaml.keys()) == {"defaults"}
    schema = OPTIM_SCHEMAS[f"{name}_schema"]
    assert compose_config(f"optim={name}").optim == schema()
