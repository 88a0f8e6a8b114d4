"""Each speedrun architecture switch changes the forward pass exactly as intended (tiny models, CPU)."""
import math

import pytest
import torch

from model.config import Init, MlpAct, ModelConfig, Norm, PosEmb, QKNorm, SoftCap
from model.gpt import GPT
from model.rotary import apply_rotary, rotary_frequencies
from tests.support.threads import one_thread  # noqa: F401  (autouse: one torch thread)

V = 300  # small vocabulary; 299 plays <|endoftext|> where documents matter


def tiny(**kw) -> ModelConfig:
    base = dict(n_layer=2, n_head=2, n_embd=32, vocab_size=V, bos_token=V - 1, block_size=256,
                norm=Norm.rmsnorm, norm_affine=False, bias=False, pos_emb=PosEmb.rotary,
                mlp_act=MlpAct.relu2, tie_embeddings=False)
    base.update(kw)
    return ModelConfig(**base)


def build(seed=0, **kw) -> GPT:
    torch.manual_seed(seed)
    return GPT(tiny(**kw))


def randomize(model: GPT, seed=1) -> GPT:
    """Give every zero-initialized weight random values, so no switch hides behind a zero."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim >= 2 and p.abs().sum() == 0:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model


def same_weights(dst: GPT, src: GPT) -> GPT:
    """Copy src's parameters into dst where the names match (dst may have extra scalars)."""
    dst.load_state_dict(src.state_dict(), strict=False)
    return dst


def ids(T=64, B=2, seed=0):
    return torch.randint(0, V - 1, (B, T), generator=torch.Generator().manual_seed(seed))


# ---- logit softcap ---------------------------------------------------------------------------

def test_tanh_softcap_bounds_logits_and_matches_formula():
    raw = randomize(build(zero_init_head=False))
    with torch.no_grad():
        raw.lm_head.weight.mul_(1e3)  # huge logits
    capped = same_weights(build(softcap=SoftCap.tanh, softcap_scale=30.0, softcap_div=30.0), raw)
    x = ids()
    z, zc = raw(x), capped(x)
    assert z.abs().max() > 100 and zc.abs().max() <= 30.0
    assert torch.allclose(zc, 30 * torch.tanh(z / 30), atol=1e-4)


def test_sigmoid_softcap_is_30_sigmoid_z_over_7_5():
    raw = randomize(build())
    capped = same_weights(build(softcap=SoftCap.sigmoid, softcap_scale=30.0, softcap_div=7.5), raw)
    x = ids()
    z, zc = raw(x), capped(x)
    assert zc.min() >= 0 and zc.max() <= 30
    assert torch.allclose(zc, 30 * torch.sigmoid(z / 7.5), atol=1e-5)


# ---- zero init, x0 mix, U-net, value residual / embeddings: exact reductions ------------------

def test_zero_init_makes_every_block_the_identity_and_the_head_uniform():
    cfg = dict(zero_init_proj=True, zero_init_head=True, x0_mix=True, value_residual=True, embed_norm=True)
    m = build(**cfg)
    x = torch.randn(2, 16, 32)
    from model.masks import build_masks
    masks = build_masks(m.cfg, ids(16), m.windows)
    for block in m.blocks:
        out, _ = block(x, masks, x0=torch.randn(2, 16, 32))
        assert torch.equal(out, x)
    logits = m(ids(16))
    assert torch.count_nonzero(logits) == 0  # uniform prediction: loss = ln(V)
    assert math.isclose(m(ids(16), ids(16, seed=1)).item(), math.log(V), rel_tol=1e-6)
    # ... and without the switches the same seed gives a non-identity block
    plain = build()
    assert not torch.equal(plain.blocks[0](x, masks)[0], x)


def test_switches_reduce_exactly_to_the_plain_model_at_their_neutral_values():
    plain = randomize(build(n_layer=4))
    x = ids()
    ref = plain(x)
    cases = {
        "x0_mix": (dict(x0_mix=True), lambda m: None),  # (a, b) = (1, 0) at init
        "value_residual": (dict(value_residual=True), lambda m: [b.attn.lamb.data.fill_(0.0) for b in m.blocks]),
        "unet_skips": (dict(unet_skips=True), lambda m: m.skip_weights.data.fill_(0.0)),
        "value_embeds": (dict(value_embed_tables=2, value_embed_layers=[0, 3]),
                         lambda m: [b.attn.v_lambdas.data.copy_(torch.tensor([1.0, 0.0])) for b in m.blocks]),
        "attn_scale": (dict(attn_scale=1 / math.sqrt(16)), lambda m: None),
    }
    for name, (kw, neutralize) in cases.items():
        m = same_weights(build(n_layer=4, **kw), plain)
        neutralize(m)
        assert torch.allclose(m(x), ref, atol=1e-5), name
        # away from the neutral value the forward pass changes
        with torch.no_grad():
            for n, p in m.named_parameters():
                if m.param_roles()[n] == "scalar":
                    p.add_(0.3)
        if name == "attn_scale":
            m.cfg.attn_scale = 5.0  # (tiny init: scores are small, so a large scale shows)
        assert not torch.allclose(m(x), ref, atol=1e-3), name


def test_value_embedding_tables_are_shared_in_the_012_012_pattern():
    m = build(n_layer=4, value_embed_tables=2, value_embed_layers=[0, 1, 2, 3])
    assert len(m.value_embeds) == 2
    ve = m._value_embeddings(ids(8))
    assert ve[0] is ve[2] and ve[1] is ve[3] and ve[0] is not ve[1]
    roles = m.param_roles()
    assert roles["value_embeds.0.weight"] == "value_embed" and roles["blocks.3.attn.v_lambdas"] == "scalar"


def test_unet_skip_weights_start_at_one_and_pair_mirrored_layers():
    m = build(n_layer=4, unet_skips=True)
    assert torch.equal(m.skip_weights.data, torch.ones(2))
    with pytest.raises(ValueError, match="n_layer=3 must be even"):
        build(n_layer=3, unet_skips=True)


def test_residual_attention_scale_is_one_over_sqrt_2L():
    plain = randomize(build(n_layer=3))
    scaled = same_weights(build(n_layer=3, scale_attn_residual=True), plain)
    for m in (plain, scaled):
        torch.nn.init.zeros_(m.blocks[0].mlp.proj.weight)  # isolate the attention branch
    from model.masks import build_masks
    x = torch.randn(2, 16, 32)
    masks = build_masks(plain.cfg, ids(16), plain.windows)
    d_plain = plain.blocks[0](x, masks)[0] - x
    d_scaled = scaled.blocks[0](x, masks)[0] - x
    assert torch.allclose(d_scaled, d_plain / math.sqrt(6), atol=1e-6)


def test_layers_without_attention_have_no_attention_parameters():
    full, cut = build(n_layer=3), build(n_layer=3, no_attn_layers=[1])
    n = lambda m: sum(p.numel() for p in m.parameters())
    assert n(full) - n(cut) == 4 * 32 * 32
    assert not any(k.startswith("blocks.1.attn") for k in cut.param_roles())
    assert cut(ids()).shape == (2, 64, V)


def test_vocab_padding_of_the_head_only():
    m = build(pad_vocab_to=128, pad_embeddings=False)
    assert m.wte.weight.shape[0] == V and m.lm_head.weight.shape[0] == 384
    assert m(ids()).shape[-1] == 384
    with pytest.raises(ValueError, match="pad_embeddings=false needs model.tie_embeddings=false"):
        build(pad_vocab_to=128, pad_embeddings=False, tie_embeddings=True)


# ---- rotary and QK-norm ---------------------------------------------------------------------

@pytest.mark.parametrize("half", [False, True])
def test_rotary_scores_depend_only_on_relative_position(half):
    D = 16
    f = rotary_frequencies(D, 1024.0 if half else 1e4, half)
    q, k = torch.randn(1, 1, 1, D), torch.randn(1, 1, 1, D)

    def score(t, s):  # <rot(q, t), rot(k, s)>
        T = max(t, s) + 1
        rq = apply_rotary(q.expand(1, T, 1, D).contiguous(), f)[0, t, 0]
        rk = apply_rotary(k.expand(1, T, 1, D).contiguous(), f)[0, s, 0]
        return (rq * rk).sum()

    assert torch.allclose(score(5, 2), score(45, 42), atol=1e-4)
    assert torch.allclose(score(7, 7), (q * k).sum(), atol=1e-5)
    assert not torch.allclose(score(5, 2), score(5, 4), atol=1e-3)
    if half:  # 4 real frequencies from 1 down to 1/1024, then 4 zeros: half of each head is position-free
        assert torch.allclose(f, torch.tensor([1, 1024 ** -(1 / 3), 1024 ** -(2 / 3), 1 / 1024, 0, 0, 0, 0.]))
        rq = apply_rotary(q.expand(1, 50, 1, D).contiguous(), f)
        assert torch.allclose(rq[0, 49, 0, [4, 5, 6, 7, 12, 13, 14, 15]], q[0, 0, 0, [4, 5, 6, 7, 12, 13, 14, 15]])
    else:
        assert torch.allclose(f, 1e4 ** (-torch.arange(0, D, 2) / D))


def test_qk_norm_changes_attention_and_commutes_with_rotary():
    plain = randomize(build())
    x = ids()
    outs = {mode: same_weights(build(qk_norm=mode), plain)(x) for mode in QKNorm}
    assert not torch.allclose(outs[QKNorm.none], outs[QKNorm.before_rope], atol=1e-3)
    # Rotation preserves each head vector's norm, so rms_norm before or after it gives the same q, k:
    # the two placements differ only by rounding (they are distinct switches for bf16 fidelity).
    assert torch.allclose(outs[QKNorm.before_rope], outs[QKNorm.after_rope], atol=1e-5)


def test_learned_positions_are_replaced_by_rotary():
    assert "wpe.weight" not in build().param_roles()
    assert build(pos_emb=PosEmb.learned).param_roles()["wpe.weight"] == "pos_embed"


# ---- init schemes ---------------------------------------------------------------------------

def test_init_schemes_follow_their_definitions():
    torch.manual_seed(0)
    big = dict(n_embd=256, n_head=4, vocab_size=2000, bos_token=1999)
    pt = GPT(tiny(init=Init.pytorch, **big))
    fc = pt.blocks[0].mlp.fc.weight
    assert fc.abs().max() <= 1 / math.sqrt(256) and math.isclose(fc.std().item(), 1 / math.sqrt(3 * 256), rel_tol=0.02)
    assert math.isclose(pt.wte.weight.std().item(), 1.0, rel_tol=0.02)  # untied table: nn.Embedding's N(0, 1)
    tied = GPT(tiny(init=Init.pytorch, tie_embeddings=True, **big))
    assert tied.wte.weight.abs().max() <= 1 / math.sqrt(256)  # tied: initialized as the head Linear
    su = GPT(tiny(init=Init.scaled_uniform, **big))
    w = su.blocks[0].attn.qkv.weight
    assert math.isclose(w.std().item(), 0.5 / math.sqrt(256), rel_tol=0.02)
    assert w.abs().max() <= math.sqrt(3) * 0.5 / math.sqrt(256)
