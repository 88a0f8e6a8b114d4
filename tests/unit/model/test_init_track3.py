"""Track-3 result #46's initialization and norm switches (model.init=constructor, model.init_fc_depth_scale,
model.init_cgi_*, model.norm_fp32_gain) against independent formulas, on tiny CPU models. The comparison
with the script's own init code is tests/records/test_track3_best46_pieces.py."""
import math

import pytest
import torch
import torch.nn.functional as F

from model.cgi import PAIR_SEED_BASE
from model.config import Init, MlpAct, ModelConfig, Norm, PosEmb
from model.gpt import GPT
from model.layers import make_norm

C, V = 64, 128  # width (two heads of 32), vocabulary


def track3_like(**kw) -> ModelConfig:
    """The track-3 model's structure at tiny size: separate q, k, v, every Linear with a bias, head bias."""
    base = dict(n_layer=2, n_head=2, n_embd=C, vocab_size=V, block_size=64, norm=Norm.rmsnorm, bias=True,
                head_bias=True, fused_qkv=False, tie_embeddings=False, pos_emb=PosEmb.rotary,
                mlp_act=MlpAct.relu2, embed_norm=True, init=Init.constructor)
    base.update(kw)
    return ModelConfig(**base)


def build(seed: int = 0, **kw) -> GPT:
    torch.manual_seed(seed)
    return GPT(track3_like(**kw))


def kaiming_bound(fan_in: int) -> float:
    """torch's kaiming_uniform_ bound for a = sqrt(5), in its float order: sqrt(3) * gain / sqrt(fan_in)."""
    gain = math.sqrt(2.0 / (1 + math.sqrt(5) ** 2))
    return math.sqrt(3.0) * (gain / math.sqrt(fan_in))


def expected_draws(seed: int, n_layer: int) -> list[torch.Tensor]:
    """The constructor-default tensors in construction order, drawn here from the formulas alone."""
    torch.manual_seed(seed)
    out = [torch.empty(V, C).normal_(0.0, 1.0)]
    shapes = [(C, C)] * 4 + [(4 * C, C), (C, 4 * C)]  # q, k, v, attention out, fc, MLP out
    for _ in range(n_layer):
        for rows, fan_in in shapes:
            out.append(torch.empty(rows, fan_in).uniform_(-kaiming_bound(fan_in), kaiming_bound(fan_in)))
            out.append(torch.empty(rows).uniform_(-1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in)))
    out.append(torch.empty(V, C).uniform_(-kaiming_bound(C), kaiming_bound(C)))  # the head and its bias
    out.append(torch.empty(V).uniform_(-1 / math.sqrt(C), 1 / math.sqrt(C)))
    return out


def drawn_params(model: GPT) -> list[torch.Tensor]:
    """Our parameters that draw at construction, in the same order (norm gains draw nothing)."""
    return [p.detach() for n, p in model.named_parameters() if ".ln_" not in n and not n.startswith("ln_")]


def test_constructor_init_is_torchs_defaults_drawn_once_in_construction_order():
    model = build(seed=7)
    after_ours = torch.randn(4)
    mine, expected = drawn_params(model), expected_draws(7, n_layer=2)
    after_expected = torch.randn(4)
    assert len(mine) == len(expected)
    for p, e in zip(mine, expected):
        assert torch.equal(p, e)
    assert torch.equal(after_ours, after_expected)  # one draw per tensor: the generator is where the formulas left it
    assert all((p == 1).all() for n, p in model.named_parameters() if "ln_" in n)
    # q, k, v, fc biases are not zero (the script keeps them), and the weights have std 1/sqrt(3 fan_in)
    fc = model.blocks[0].mlp.fc
    assert fc.bias.abs().min() > 0 and fc.bias.abs().max() <= 1 / math.sqrt(C)
    assert math.isclose(fc.weight.std().item(), 1 / math.sqrt(3 * C), rel_tol=0.03)
    # torch's bound is 1/sqrt(fan_in) only up to the last ulp, which is why init=pytorch is not this init
    assert kaiming_bound(768) != 1 / math.sqrt(768) and math.isclose(kaiming_bound(768), 1 / math.sqrt(768), rel_tol=1e-15)


def test_constructor_init_redraws_on_reset_and_differs_from_init_pytorch():
    model = build(seed=7)
    before = [p.clone() for p in drawn_params(model)]
    model.reset_parameters()
    assert all(not torch.equal(a, b) for a, b in zip(before, drawn_params(model)))
    redrawn = drawn_params(build(seed=7, init=Init.pytorch))  # draws twice (constructor, then its own pass)
    assert not torch.equal(redrawn[1], before[1])


def test_fc_depth_scale_multiplies_each_blocks_fc_weight_only():
    L, a = 4, 0.3
    plain, scaled = build(seed=3, n_layer=L), build(seed=3, n_layer=L, init_fc_depth_scale=a)
    factors = [1.0 - a * (l / (L - 1)) for l in range(L)]
    assert factors[0] == 1.0 and math.isclose(factors[-1], 0.7, rel_tol=1e-15)
    for l in range(L):
        w0, w1 = plain.blocks[l].mlp.fc.weight, scaled.blocks[l].mlp.fc.weight
        assert torch.equal(w1, w0 * torch.tensor(factors[l], dtype=torch.float32))
        assert torch.equal(plain.blocks[l].mlp.fc.bias, scaled.blocks[l].mlp.fc.bias)
    others = [(n, p) for n, p in scaled.named_parameters() if "mlp.fc.weight" not in n]
    ref = dict(plain.named_parameters())
    assert all(torch.equal(p, ref[n]) for n, p in others)
    one = build(seed=3, n_layer=1, init_fc_depth_scale=a)  # a single block: no ramp
    assert torch.equal(one.blocks[0].mlp.fc.weight, build(seed=3, n_layer=1).blocks[0].mlp.fc.weight)


def cgi_model(seed: int = 0, **kw) -> GPT:
    return build(seed=seed, **{**dict(n_layer=6, init_cgi_alpha=0.125, init_cgi_pair_from_layer=2,
                                      init_cgi_head_shrink=0.5), **kw})


def signs_of(model: GPT) -> list[torch.Tensor]:
    return [(1.0 - b.ln_1.weight.detach()) / 0.125 for b in model.blocks]


def test_cgi_gains_are_antithetic_per_channel_and_leave_outer_norms_alone():
    model = cgi_model()
    for b in model.blocks:
        assert set(b.ln_1.weight.tolist()) <= {0.875, 1.125}
        assert torch.equal(b.ln_1.weight + b.ln_2.weight, torch.full((C,), 2.0))
    assert (model.ln_e.weight == 1).all() and (model.ln_f.weight == 1).all()
    # every other parameter is what the init without CGI gives
    plain = dict(build(seed=0, n_layer=6).named_parameters())
    assert all(torch.equal(p, plain[n]) for n, p in model.named_parameters() if ".ln_" not in n)


def test_cgi_unpaired_blocks_take_the_default_generators_next_draws():
    build(seed=0, n_layer=6)  # the same init without CGI: the generator now stands where CGI starts
    expected = [torch.randint(0, 2, (C,), dtype=torch.float32) * 2 - 1 for _ in range(2)]
    got = signs_of(cgi_model())
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])
    unpaired = signs_of(cgi_model(init_cgi_pair_from_layer=None))  # null: every block from the default generator
    assert torch.equal(unpaired[1], expected[1]) and not torch.equal(unpaired[2], got[2])


@pytest.mark.parametrize("seed", [0, 5])
def test_cgi_pairs_balance_heads_and_mirror_each_other(seed):
    D = C // 2
    signs = signs_of(cgi_model(seed=seed))
    for first in (2, 4):
        s, partner = signs[first].view(2, D), signs[first + 1].view(2, D)
        assert torch.equal(s.sum(1), -partner.sum(1))  # opposite per-head means
        # the first head's + count: the private generator's first draw, pulled halfway to D/2
        gen = torch.Generator().manual_seed(PAIR_SEED_BASE + 1009 * seed + 9176 * first)
        ones = int(torch.randint(0, 2, (D,), generator=gen, dtype=torch.int64).sum())
        assert int((s[0] > 0).sum()) == round(D / 2 + 0.5 * (ones - D / 2))
        assert int((partner[0] > 0).sum()) == D - round(D / 2 + 0.5 * (ones - D / 2))
    balanced = signs_of(cgi_model(seed=seed, init_cgi_head_shrink=0.0))
    assert all((balanced[l].view(2, D).sum(1) == 0).all() for l in range(2, 6))
    other_seed = signs_of(cgi_model(seed=seed + 1))
    assert not torch.equal(other_seed[2], signs[2])


def test_cgi_pair_cut_by_the_last_block_and_redraw_on_the_models_device():
    odd = signs_of(cgi_model(n_layer=5))  # pairs (2, 3), then 4 alone: its partner is unused
    assert torch.equal(odd[2].sum().abs(), signs_of(cgi_model())[2].sum().abs())
    build(seed=0, n_layer=6)
    state = torch.get_rng_state()  # where the CGI draws start
    model = cgi_model()
    with torch.no_grad():
        for b in model.blocks:
            b.ln_1.weight.fill_(1.0)
    torch.set_rng_state(state)
    model.draw_cgi_gains(0)
    assert all(torch.equal(a, b) for a, b in zip(signs_of(model), signs_of(cgi_model())))


@pytest.mark.parametrize("key, value, message", [
    ("init_fc_depth_scale", 1.5, "model.init_fc_depth_scale"),
    ("init_cgi_alpha", 1.0, "model.init_cgi_alpha"),
    ("init_cgi_alpha", -0.1, "model.init_cgi_alpha"),
    ("init_cgi_head_shrink", 2.0, "model.init_cgi_head_shrink"),
    ("init_cgi_pair_from_layer", -1, "model.init_cgi_pair_from_layer"),
    ("norm_affine", False, "model.norm_affine"),
])
def test_bad_init_values_name_their_key(key, value, message):
    kw = {"init_cgi_alpha": 0.125, key: value}
    with pytest.raises(ValueError, match=message):
        track3_like(**kw).check()


def test_fp32_gain_norm_rounds_once_after_the_fp32_gain():
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(4, 16, C, generator=g) * 3).to(torch.bfloat16)
    gain = 1 + torch.randn(C, generator=g) * 2**-9  # most of these round to other values in bf16
    fp32, cast = (make_norm(track3_like(norm_fp32_gain=flag), C) for flag in (True, False))
    with torch.no_grad():
        fp32.weight.copy_(gain)
        cast.weight.copy_(gain)
    xd = x.double()
    exact = xd * torch.rsqrt(xd.pow(2).mean(-1, keepdim=True) + torch.finfo(torch.float32).eps) * gain.double()
    out = fp32(x)
    assert out.dtype == torch.bfloat16
    assert ((out.double() - exact).abs() <= exact.abs() * 2**-8).all()  # one bf16 rounding of the exact value
    assert torch.equal(out, (F.rms_norm(x.float(), (C,)) * gain).to(torch.bfloat16))
    assert not torch.equal(out, cast(x))  # the default takes the gain rounded to bf16
    x32 = x.float()
    assert torch.equal(fp32(x32), cast(x32))  # in fp32 the two modes are one
    with pytest.raises(ValueError, match="model.norm_fp32_gain"):
        ModelConfig(norm=Norm.layernorm, norm_fp32_gain=True).check()
