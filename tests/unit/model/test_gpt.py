import math

import pytest
import torch

from model.config import MlpAct, ModelConfig, Norm, PosEmb
from model.gpt import GPT
from optim.roles import ALL_ROLES


def count(cfg: ModelConfig) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in GPT(cfg).parameters())


def test_gpt2_124m_has_exactly_124439808_parameters():
    assert count(ModelConfig()) == 124_439_808


def test_vocab_padding_rounds_rows_up():
    cfg = ModelConfig(pad_vocab_to=128)
    assert cfg.padded_vocab_size == 50304
    assert count(cfg) == 124_439_808 + (50304 - 50257) * 768


def test_untied_head_adds_a_vocab_by_width_matrix():
    assert count(ModelConfig(tie_embeddings=False)) == 124_439_808 + 50257 * 768


def test_every_parameter_has_a_known_role_and_roles_follow_modules():
    model = GPT(ModelConfig(n_layer=2, n_head=2, n_embd=64))
    roles = model.param_roles()
    assert set(roles) == {n for n, _ in model.named_parameters()}
    assert set(roles.values()) <= ALL_ROLES
    assert roles["wte.weight"] == "embed_head" and roles["wpe.weight"] == "pos_embed"
    assert roles["blocks.0.attn.qkv.weight"] == "attn_qkv" and roles["blocks.1.mlp.proj.weight"] == "mlp_out"
    assert roles["blocks.0.ln_1.weight"] == "gain" and roles["blocks.0.attn.qkv.bias"] == "bias"
    untied = GPT(ModelConfig(n_layer=1, n_head=2, n_embd=64, tie_embeddings=False, fused_qkv=False, bias=False))
    r = untied.param_roles()
    assert r["wte.weight"] == "embed" and r["lm_head.weight"] == "head"
    assert {r[f"blocks.0.attn.{k}.weight"] for k in "qkv"} == {"attn_q", "attn_k", "attn_v"}
    assert "bias" not in r.values()


@pytest.mark.parametrize("norm,act,pos", [(Norm.layernorm, MlpAct.gelu, PosEmb.learned),
                                          (Norm.rmsnorm, MlpAct.relu2, PosEmb.none)])
def test_forward_shapes_initial_loss_and_causality(norm, act, pos):
    torch.manual_seed(0)
    model = GPT(ModelConfig(n_layer=2, n_head=2, n_embd=64, vocab_size=1000, block_size=32,
                            norm=norm, mlp_act=act, pos_emb=pos))
    idx = torch.randint(0, 1000, (3, 16))
    logits = model(idx)
    assert logits.shape == (3, 16, 1000) and logits.dtype == torch.float32
    # A freshly initialized model is close to uniform: loss near ln(V).
    targets = torch.randint(0, 1000, (3, 16))
    assert abs(model(idx, targets).item() - math.log(1000)) < 0.5
    # Causal: changing the last token never changes earlier positions' logits.
    idx2 = idx.clone()
    idx2[:, -1] = (idx2[:, -1] + 1) % 1000
    assert torch.allclose(model(idx2)[:, :-1], logits[:, :-1], atol=1e-6)
    assert not torch.allclose(model(idx2)[:, -1], logits[:, -1])


def test_bad_shapes_are_rejected_naming_the_key():
    with pytest.raises(ValueError, match="model.n_embd=100 must be divisible by model.n_head=3"):
        GPT(ModelConfig(n_layer=1, n_head=3, n_embd=100))
    with pytest.raises(ValueError, match="model.n_layer must be > 0"):
        GPT(ModelConfig(n_layer=0))
