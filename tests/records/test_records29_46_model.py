"""Records 29, 43 and 46's models against their scripts (../shared/reference/modded-nanogpt; skipped without it).

At shrunk width (12 layers, as the scripts hard-code layer indices; 128 or 256 wide, heads of 64 or 128;
vocabulary 1000 padded to 1024 as the scripts pad), CPU, fp32, the scripts loaded by
tests/support/reference_scripts.py (FA3's varlen call by its formula, bf16 tables in fp32, DISABLE_FP8):
the script's model gets random weights (every tensor, the packed scalars too), copied one to one into ours;
on one flat packed row with its cu_seqlens and the same windows (blocks of 8 tokens, so they bite):
- training mode: the summed loss and every gradient;
- eval mode: the mean loss and the logits (the script's head output, caught by a hook, softcapped);
- records 43, 46: a YaRN window change (Yarn.apply) gives bitwise the script's frequencies and scale, and
  the same loss and gradients after it; then the longer validation window without a rescale.
Also: the parameter count at world size 8 as the scripts count it (their padded scalars vector).
Run with -s to see the largest differences.
"""
from __future__ import annotations

import types

import pytest
import torch

from model.config import ModelConfig
from model.gpt import GPT
from model.residual import packed_scalar_slots, script_parameter_count
from tests.support.reference_scripts import REF_DIR, load
from tests.support.threads import one_thread  # noqa: F401  (autouse: one torch thread)

pytestmark = pytest.mark.skipif(not REF_DIR.is_dir(), reason="needs ../shared/reference/modded-nanogpt")

V, T, BLOCK = 1000, 128, 8      # vocabulary (padded to 1024), tokens in the row, window block (the scripts': 128)
CU = [0, 37, 50, 101, 128]       # sequence starts in the row
L = 12

COMMON = dict(n_layer=L, vocab_size=V, pad_vocab_to=128, block_size=T, norm="rmsnorm", norm_affine=False, bias=False,
              mlp_act="relu2", pos_emb="rotary", rope_base=1024.0, rope_half_truncated=True, qk_norm="before_rope",
              tie_embeddings=False, init="scaled_uniform", zero_init_proj=True, zero_init_head=True, embed_norm=True,
              softcap="sigmoid", softcap_scale=30.0, softcap_div=7.5, x0_mix=True, value_embed_tables=3,
              doc_causal=True, short_window_layers=[1, 2, 3, 5, 6, 8, 9, 10], attn_windows_external=True,
              attn_gate_dim=12, packed_scalars=True)
RECORD29 = dict(COMMON, n_head=2, n_embd=256, attn_scale=0.12, value_embed_layers=[0, 1, 2, 9, 10, 11],
                no_attn_layers=[7], unet_skips=True, window_size=3 * 128)
RECORD46 = dict(COMMON, n_head=2, n_embd=128, attn_scale=0.1, value_embed_layers=[1, 2, 9, 10, 11],
                value_embed_table_ids=[1, 2, 0, 1, 2], no_attn_layers=[0, 7], no_mlp_layers=[0], x0_mix_init=[1.1, 0.0],
                smear_gate_dim=12, skip_pairs=[[4, 7]], skip_sigmoid=True, skip_init=-1.5, backout_layer=8,
                backout_init=0.5, yarn=True, window_size=3 * 128)
RECORD43 = dict(RECORD46, x0_mix_init=[1.0, 0.0], skip_pairs=[[5, 6], [4, 7], [3, 8], [2, 9], [1, 10]])


def model_config(fields: dict) -> ModelConfig:
    from omegaconf import OmegaConf
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(ModelConfig), fields))


def script_module(name: str, world_size: int = 1) -> types.ModuleType:
    m = load(name)
    m.args = m.Hyperparameters()
    m.args.block_size = BLOCK
    m.args.train_max_seq_len = T
    m.device, m.world_size, m.grad_accum_steps = torch.device("cpu"), 1, 1
    dist = m.dist
    m.dist = types.SimpleNamespace(get_world_size=lambda: world_size, ReduceOp=dist.ReduceOp)
    return m


def script_model(m: types.ModuleType, cfg: ModelConfig, record: int) -> torch.nn.Module:
    if record == 29:
        return m.GPT(V, L, cfg.n_head, cfg.n_embd, T)
    return m.GPT(V, L, cfg.n_head, cfg.head_dim, cfg.n_embd, T)


def mapping(ref: torch.nn.Module, cfg: ModelConfig) -> list[tuple[str, str, callable]]:
    """(our name, script name, view of the script tensor as ours) for every parameter of ours."""
    C, n = cfg.n_embd, L // 2
    qkvo = lambda t: t.view(4, C, C)  # noqa: E731  (record 29's [4, C, C]; 43/46's [C, 4C] read as it)
    out = [("wte.weight", "embed.weight", None), ("lm_head.weight", "lm_head.weight", None)]
    out += [(f"value_embeds.{k}.weight", f"value_embeds.{k}.weight", None) for k in range(3)]
    if cfg.smear_gate_dim:
        out += [("smear.weight", "smear_gate.weight", None), ("smear.lamb", "scalars", lambda s: s[5 * L])]
    if cfg.backout_layer is not None:
        out += [("backout.lamb", "scalars", lambda s: s[5 * L + 1])]
    if cfg.unet_skips:
        out += [("skip_weights", "scalars", lambda s: s[:n])]
    if cfg.skip_pairs:
        outs = [o for _, o in cfg.skip_pairs]
        out += [("skip_gates.weight", "scalars", lambda s: s[torch.tensor(outs) - n])]
    for i in range(L):
        p, b = f"blocks.{i}.", f"blocks.{i}."
        if i in cfg.no_attn_layers and i in cfg.no_mlp_layers:
            continue
        out.append((p + "x0_lambdas", "scalars", lambda s, i=i: s[L + 2 * i: L + 2 * i + 2]))
        if i not in cfg.no_attn_layers:
            out += [(p + "attn.qkv.weight", b + "attn.qkvo_w", lambda t: qkvo(t)[:3].flatten(0, 1)),
                    (p + "attn.proj.weight", b + "attn.qkvo_w", lambda t: qkvo(t)[3]),
                    (p + "attn.gate_weight", b + "attn.attn_gate.weight", None),
                    (p + "attn.v_lambdas", "scalars", lambda s, i=i: s[3 * L + 2 * i: 3 * L + 2 * i + 2])]
        if i not in cfg.no_mlp_layers:
            out += [(p + "mlp.fc.weight", b + "mlp.c_fc", lambda t: t.T), (p + "mlp.proj.weight", b + "mlp.c_proj", None)]
    return [(o, s, f or (lambda t: t)) for o, s, f in out]


def build_pair(record: int, fields: dict, seed: int = 0):
    cfg = model_config(fields)
    name = {29: "record29_fa3", 43: "record43_cautiouswd", 46: "record46_batchsizeschedule"}[record]
    m = script_module(name)
    torch.manual_seed(seed)
    ref = script_model(m, cfg, record)
    with torch.no_grad():  # random weights everywhere (the scripts zero the head, gates, output projections)
        for p in ref.parameters():
            p.copy_(torch.randn_like(p) * (0.5 if p.ndim < 2 else 1.0 / p.size(-1) ** 0.5))
    ours = GPT(cfg)
    params = dict(ours.named_parameters())
    pairs = mapping(ref, cfg)
    assert sorted(o for o, _, _ in pairs) == sorted(params), "every parameter of ours is mapped"
    refp = dict(ref.named_parameters())
    with torch.no_grad():
        for o, s, f in pairs:
            params[o].copy_(f(refp[s]))
    return m, ref, ours, pairs


def batch(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(0, V, (T,), generator=g), torch.randint(0, V, (T,), generator=g),
            torch.tensor(CU, dtype=torch.int32))


def run_both(ref, ours, record, ws_long, ws_short, train: bool, rescale: bool = True):
    """Loss (and gradients) of both models on the same row and windows (in blocks of BLOCK tokens)."""
    x, y, cu = batch()
    ref.train(train), ours.train(train)
    ref.zero_grad(set_to_none=True), ours.zero_grad(set_to_none=True)
    caught = {}
    hook = ref.lm_head.register_forward_hook(lambda mod, inp, out: caught.update(z=out))
    ref_loss = ref(x, y, cu, ws_long) if record == 29 else ref(x, y, cu, ws_short, ws_long)
    hook.remove()
    ours.set_attention_windows(ws_long * BLOCK, ws_short * BLOCK, rescale_rotary=rescale)
    our_loss = ours(x[None], y[None], cu_seqlens=cu, reduction="sum" if train else "mean")
    if train:
        ref_loss.backward(), our_loss.backward()
    with torch.no_grad():
        ref_logits = 30 * torch.sigmoid(caught["z"].float() / 7.5)
        our_logits = None if train else ours(x[None], cu_seqlens=cu)
    return ref_loss.detach(), our_loss.detach(), ref_logits, our_logits


def grad_diff(ref, ours, pairs) -> tuple[float, str]:
    refp, params = dict(ref.named_parameters()), dict(ours.named_parameters())
    worst, where = 0.0, ""
    for o, s, f in pairs:
        g_ref = f(refp[s].grad)
        g_ours = params[o].grad
        assert g_ours is not None or float(g_ref.abs().max()) == 0.0, o
        d = float(((g_ours if g_ours is not None else 0) - g_ref).abs().max() / (g_ref.abs().max() + 1e-12))
        if d > worst:
            worst, where = d, o
    return worst, where


def check_step(ref, ours, pairs, record, ws_long, ws_short, label, rescale=True):
    ref_loss, our_loss, _, _ = run_both(ref, ours, record, ws_long, ws_short, train=True, rescale=rescale)
    loss_d = float((ref_loss - our_loss).abs() / ref_loss.abs())
    g_d, where = grad_diff(ref, ours, pairs)
    ref_mean, our_mean, ref_logits, our_logits = run_both(ref, ours, record, ws_long, ws_short, train=False,
                                                         rescale=rescale)
    logit_d = float((ref_logits - our_logits.view_as(ref_logits)).abs().max())
    print(f"\nrecord {record} {label}: train loss {float(ref_loss):.4f} rel diff {loss_d:.2e}; eval loss "
          f"{float(ref_mean):.5f} diff {float((ref_mean - our_mean).abs()):.2e}; logits max diff {logit_d:.2e}; "
          f"gradients max rel diff {g_d:.2e} ({where})")
    assert loss_d < 1e-5 and float((ref_mean - our_mean).abs()) < 1e-5
    assert logit_d < 1e-4
    assert g_d < 1e-4, where


def test_record29_loss_logits_and_gradients():
    m, ref, ours, pairs = build_pair(29, RECORD29)
    check_step(ref, ours, pairs, 29, 3, 1, "ws 3")
    check_step(ref, ours, pairs, 29, 5, 2, "ws 5")


@pytest.mark.parametrize("record,fields", [(46, RECORD46), (43, RECORD43)])
def test_record43_46_loss_logits_gradients_and_yarn(record, fields):
    m, ref, ours, pairs = build_pair(record, fields)
    check_step(ref, ours, pairs, record, 3, 1, "ws 3/1")  # the first call records YaRN's starting window
    ref.yarn.apply(3, 7)  # the script's schedule step: the long window 3 -> 7 blocks
    check_step(ref, ours, pairs, record, 7, 3, "ws 7/3 after YaRN")
    assert torch.equal(ours.yarn.freqs, ref.yarn.angular_freq) and ours.yarn.attn_scale == ref.yarn.attn_scale
    ref.yarn.apply(7, 11)
    check_step(ref, ours, pairs, record, 11, 5, "ws 11/5 after YaRN")
    assert torch.equal(ours.yarn.freqs, ref.yarn.angular_freq) and ours.yarn.attn_scale == ref.yarn.attn_scale
    # the final validation: a longer long window (ws_validate_post_yarn_ext) without a rescale
    check_step(ref, ours, pairs, record, 20, 5, "validation ws 20/5, no rescale", rescale=False)
    assert torch.equal(ours.yarn.freqs, ref.yarn.angular_freq)


def test_yarn_state_survives_a_state_dict_round_trip_and_is_rederivable():
    cfg = model_config(RECORD46)
    a, b, c = GPT(cfg), GPT(cfg), GPT(cfg)
    for w in (3, 7, 11, 13):
        a.set_attention_windows(w * 128, w // 2 * 128)
    b.load_state_dict(a.state_dict())  # checkpointable: buffers and the Python mirrors
    assert torch.equal(b.yarn.freqs, a.yarn.freqs) and b.yarn.attn_scale == a.yarn.attn_scale
    assert b.yarn.current_window == 13 * 128
    c.yarn.reset()  # re-derivable: replaying the schedule's windows from the start
    for w in (3, 7, 11, 13):
        c.yarn.update(w * 128)
    assert torch.equal(c.yarn.freqs, a.yarn.freqs) and c.yarn.attn_scale == a.yarn.attn_scale
    assert not torch.equal(a.yarn.freqs, GPT(cfg).yarn.freqs)  # the windows did change it


@pytest.mark.parametrize("record,fields", [(29, RECORD29), (43, RECORD43), (46, RECORD46)])
def test_parameter_count_at_world_size_8_is_the_scripts(record, fields):
    """The full-size model (12 x 768, 6 heads of 128, vocabulary 50257 -> 50304), built on the meta device."""
    full = dict(fields, n_embd=768, n_head=6, vocab_size=50257, block_size=2048)
    cfg = model_config(full)
    name = {29: "record29_fa3", 43: "record43_cautiouswd", 46: "record46_batchsizeschedule"}[record]
    m = script_module(name, world_size=8)
    m.device = torch.device("meta")
    with torch.device("meta"):
        ours = GPT(cfg)
        ref = m.GPT(50257, L, 6, 768, 2048) if record == 29 else m.GPT(50257, L, 6, 128, 768, 2048)
    script_count = sum(p.numel() for p in ref.parameters())
    counts = script_parameter_count(ours, world_size=8)
    print(f"\nrecord {record}: ours {counts['ours']:,} (scalars {counts['scalars']}), the script at world size 8 "
          f"{script_count:,} (scalars {ref.scalars.numel()})")
    assert counts["script"] == script_count
    assert ref.scalars.numel() == packed_scalar_slots(cfg, 8) == 64
