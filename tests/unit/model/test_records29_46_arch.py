"""Records 29-46's architecture switches, each against its definition (the scripts themselves:
tests/records/test_records29_46_model.py): config checks name their key, the smear gate, the value-embedding
layout, skipped blocks, the rotation from tables, YaRN's update, trainer-set windows over cu_seqlens, roles
and the scripts' parameter count."""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from model.masks import DocLayout, Window, build_masks
from model.block import Block
from model.config import AttnImpl, ModelConfig
from model.embeddings import SmearGate, value_embed_layout
from model.gpt import GPT
from model.residual import packed_scalar_slots, script_parameter_count
from model.rotary import Yarn, apply_rotary, rotary_frequencies, rotate_with_tables

TINY = dict(n_layer=6, n_head=2, n_embd=32, vocab_size=64, block_size=64, norm="rmsnorm", norm_affine=False,
            bias=False, mlp_act="relu2", pos_emb="rotary", rope_base=1024.0, rope_half_truncated=True,
            qk_norm="before_rope", tie_embeddings=False, init="scaled_uniform", embed_norm=True, x0_mix=True,
            value_embed_tables=2, value_embed_layers=[1, 4, 5], value_embed_table_ids=[1, 0, 1],
            no_attn_layers=[0, 3], no_mlp_layers=[0], attn_gate_dim=4, smear_gate_dim=4, skip_pairs=[[1, 4]],
            skip_sigmoid=True, skip_init=-1.5, backout_layer=4, attn_scale=0.1, doc_causal=True, window_size=16,
            short_window_layers=[1, 2], attn_windows_external=True, yarn=True, packed_scalars=True)


def cfg_of(**fields) -> ModelConfig:
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(ModelConfig), fields))


@pytest.mark.parametrize("bad,key", [
    (dict(attn_gate_dim=-1), "model.attn_gate_dim"), (dict(smear_gate_dim=33), "model.smear_gate_dim"),
    (dict(value_embed_table_ids=[1, 0]), "model.value_embed_table_ids"),
    (dict(value_embed_table_ids=[1, 0, 2]), "model.value_embed_table_ids"),
    (dict(no_mlp_layers=[6]), "model.no_mlp_layers"), (dict(x0_mix_init=[1.0]), "model.x0_mix_init"),
    (dict(skip_pairs=[[4, 1]]), "model.skip_pairs"), (dict(skip_pairs=[[1, 4], [1, 5]]), "model.skip_pairs"),
    (dict(skip_pairs=[[0, 4]]), "model.skip_pairs"),  # block 0 is skipped whole: nothing to take from it
    (dict(unet_skips=True), "model.unet_skips"), (dict(backout_layer=6), "model.backout_layer"),
    (dict(window_size=0, short_window_layers=[]), "model.attn_windows_external"),
    (dict(window_block=8), "model.attn_windows_external"),
    (dict(yarn_alpha=32.0), "model.yarn_alpha"),
    (dict(attn_windows_external=False, window_size=16), "model.yarn"),
    (dict(pos_emb="none", yarn=False, rope_bf16_tables=True), "model.rope_bf16_tables"),
])
def test_bad_values_fail_naming_their_key(bad, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        cfg_of(**{**TINY, **bad}).check()


def test_switches_are_off_by_default():
    cfg = ModelConfig()
    assert (cfg.attn_gate_dim, cfg.smear_gate_dim, cfg.no_mlp_layers, cfg.skip_pairs, cfg.backout_layer, cfg.yarn,
            cfg.attn_windows_external, cfg.rope_bf16_tables, cfg.packed_scalars) == (0, 0, [], [], None, False, False,
                                                                                     False, False)


def test_smear_gate_is_its_formula_per_row_and_off_at_init():
    torch.manual_seed(0)
    e = torch.randn(2, 5, 8)
    smear = SmearGate(3)
    assert torch.equal(smear(e), e)
    with torch.no_grad():
        smear.weight.normal_(), smear.lamb.fill_(0.7)
    out = smear(e)
    for b in range(2):
        assert torch.equal(out[b, 0], e[b, 0])
        for t in range(1, 5):
            g = 0.7 * torch.sigmoid(e[b, t, :3] @ smear.weight[0])
            torch.testing.assert_close(out[b, t], e[b, t] + g * e[b, t - 1], rtol=0, atol=1e-6)


def test_value_embed_layout():
    assert value_embed_layout(cfg_of(**TINY)) == [None, 1, None, None, 0, 1]
    rec20 = cfg_of(n_layer=12, value_embed_tables=3, value_embed_layers=[0, 1, 2, 9, 10, 11])
    assert value_embed_layout(rec20) == [0, 1, 2] + [None] * 6 + [0, 1, 2]


def test_block_without_attention_and_mlp_is_skipped_whole():
    cfg = cfg_of(**TINY)
    block = Block(cfg, 0)
    assert block.is_identity and not list(block.parameters())
    x = torch.randn(1, 4, 32)
    assert block(x, None, torch.randn_like(x))[0] is x
    assert not Block(cfg, 3).is_identity and not hasattr(Block(cfg, 3), "attn")  # MLP only


def test_x0_mix_init_and_new_roles():
    model = GPT(cfg_of(**TINY))
    assert model.blocks[1].x0_lambdas.tolist() == [1.0, 0.0]
    assert GPT(cfg_of(**TINY, x0_mix_init=[1.1, 0.0])).blocks[2].x0_lambdas.tolist() == pytest.approx([1.1, 0.0])
    roles = model.param_roles()
    assert roles["smear.weight"] == "smear_gate" and roles["blocks.1.attn.gate_weight"] == "attn_gate"
    assert {roles[n] for n in ("smear.lamb", "skip_gates.weight", "backout.lamb", "blocks.1.x0_lambdas")} == {"scalar"}
    assert model.skip_gates.weight.detach().tolist() == [-1.5] and float(model.backout.lamb.detach()) == 0.5
    assert not model.smear.weight.detach().any() and not model.blocks[1].attn.gate_weight.detach().any()  # zero-init


def test_rotation_from_tables_is_the_rotation_bitwise_and_keeps_the_scripts_dtypes():
    torch.manual_seed(0)
    x = torch.randn(1, 10, 2, 16)
    f = rotary_frequencies(16, 1024.0, True)
    theta = torch.outer(torch.arange(10, dtype=torch.float32), f)
    assert torch.equal(rotate_with_tables(x, theta.cos(), theta.sin()), apply_rotary(x, f))
    cos, sin = theta.cos().bfloat16(), theta.sin().bfloat16()
    assert rotate_with_tables(x, cos, sin).dtype == torch.float32  # fp32 q, bf16 tables: fp32 math
    assert rotate_with_tables(x.bfloat16(), cos, sin).dtype == torch.bfloat16


def test_yarn_update_against_its_formula_in_float64():
    yarn = Yarn(16, 1024.0, True, 0.1, 1.0, 32.0)
    f0 = yarn.freqs.double().clone()
    yarn.update(384)                # first call: recorded only
    assert torch.equal(yarn.freqs.double(), f0) and yarn.attn_scale == 0.1
    yarn.update(896)
    r = 384 * f0 / (2 * math.pi)
    ramp = ((r - 1) / 31).clamp(0, 1)
    expect = f0 * (384 / 896 + ramp * (1 - 384 / 896))
    torch.testing.assert_close(yarn.freqs.double(), expect, rtol=1e-6, atol=0)
    assert yarn.attn_scale == pytest.approx(0.1 * (0.2 * math.log(896 / 384) + 1), rel=1e-15)
    assert float(yarn.scale) == yarn.attn_scale and int(yarn.window) == 896
    assert yarn.freqs[0] == f0[0].float() and yarn.freqs[-1] == 0  # the fastest pair kept, position-free ones 0
    theta = torch.outer(torch.arange(5, dtype=torch.float32), yarn.freqs)
    cos, sin = yarn.tables(5, bf16=True)
    assert cos.dtype == torch.bfloat16 and torch.equal(cos, theta.cos().bfloat16()) and torch.equal(sin.float(),
                                                                                                  theta.sin().bfloat16().float())


def test_windows_over_cu_seqlens_are_token_exact():
    cu = torch.tensor([0, 5, 6, 12], dtype=torch.int32)
    assert DocLayout.packed(cu, 12).document_ids().tolist() == [[0] * 5 + [1] + [2] * 6]
    model = GPT(cfg_of(**TINY))
    with pytest.raises(ValueError, match="attn_windows_external"):
        GPT(cfg_of(**{**TINY, "yarn": False, "attn_windows_external": False})).set_attention_windows(3, 1)
    model.set_attention_windows(3, 1)
    assert model.window_tokens() == (3, 1)
    cfg = dataclasses.replace(model.cfg, attn_impl=AttnImpl.sdpa)  # the dense mask, to read it
    masks = build_masks(cfg, torch.zeros(1, 12, dtype=torch.long), (Window(3), Window(1)), cu)
    starts = [0] * 5 + [5] + [6] * 6
    for mask, left in ((masks.long.mask, 3), (masks.short.mask, 1)):
        for i in range(12):
            seen = [j for j in range(12) if mask[0, 0, i, j]]
            assert seen == list(range(max(starts[i], i - left), i + 1))


def test_forward_takes_a_flat_row_and_sums_or_averages():
    torch.manual_seed(0)
    model = GPT(cfg_of(**TINY))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x, y = torch.randint(0, 64, (1, 12)), torch.randint(0, 64, (1, 12))
    cu = torch.tensor([0, 5, 12], dtype=torch.int32)
    model.set_attention_windows(4, 2)
    mean, total = model(x, y, cu_seqlens=cu), model(x, y, cu_seqlens=cu, reduction="sum")
    torch.testing.assert_close(total, 12 * mean)
    logits = model(x, cu_seqlens=cu)
    torch.testing.assert_close(F.cross_entropy(logits[0], y[0]), mean)
    # the second sequence does not see the first: changing a token of the first leaves its logits
    x2 = x.clone()
    x2[0, 2] = (x[0, 2] + 1) % 64
    logits2 = model(x2, cu_seqlens=cu)
    assert torch.equal(logits2[0, 5:], logits[0, 5:]) and not torch.equal(logits2[0, 2:5], logits[0, 2:5])
    with pytest.raises(ValueError, match="flat packed row"):
        model(torch.cat([x, x]), cu_seqlens=cu)


def test_parameter_count_adds_the_scripts_padded_scalars():
    cfg = cfg_of(**TINY)
    model = GPT(cfg)
    counts = script_parameter_count(model, world_size=8)
    # ours: smear lamb 1, skip 1, backout 1, x0 lambdas 2 x 5 blocks, v lambdas 2 x 4 attention layers
    assert counts["scalars"] == 1 + 1 + 1 + 10 + 8
    assert packed_scalar_slots(cfg, 8) == 32 and packed_scalar_slots(cfg, 1) == 32  # 5 x 6 + 2
    assert counts["script"] == counts["ours"] - counts["scalars"] + 32


def test_windows_before_the_trainers_first_call():
    model = GPT(cfg_of(**TINY))
    assert model.window_tokens() == (16, 8)


def test_flex_path_over_cu_seqlens_equals_the_dense_one():
    torch.manual_seed(0)
    dense, flex = GPT(cfg_of(**TINY, attn_impl="sdpa")), GPT(cfg_of(**TINY, attn_impl="flex"))
    flex.load_state_dict(dense.state_dict())
    x, cu = torch.randint(0, 64, (1, 12)), torch.tensor([0, 5, 12], dtype=torch.int32)
    for m in (dense, flex):
        m.eval()
        m.set_attention_windows(3, 1)
    with torch.no_grad():
        torch.testing.assert_close(flex(x, cu_seqlens=cu), dense(x, cu_seqlens=cu), rtol=1e-5, atol=1e-5)


def test_the_model_moves_between_devices_and_dtypes_with_yarn():
    """Yarn is an nn.Module: moving the model (.to, .double()) must keep its rescale and its buffers."""
    model = GPT(cfg_of(**TINY)).to("cpu")
    model.set_attention_windows(3, 1)
    model.set_attention_windows(7, 3)
    scale = model.yarn.attn_scale
    model = model.double().float()
    assert model.yarn.attn_scale == scale and model.yarn.freqs.dtype == torch.float32
