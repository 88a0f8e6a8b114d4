"""The hybrid optimizer: role routing, fused blocks, momentum and rates, the mass rule's modular norm,
the speedrun-Muon configuration against a reference step, diagnostics, state_dict resume."""
import io
import math

import pytest
import torch
from omegaconf import OmegaConf

from optim import build_hybrid, orthogonalize
from optim.hybrid_config import DualConfig, MuonConfig, rates_from_config
from optim.maps import EmbedMap, LinearMap
from optim.mass import gpt_tree, modular_norm, update_factors

V, D = 40, 16
embed_norm, linear_norm = EmbedMap.norm, LinearMap.norm


def dualize_linear(G, scale, method):
    return LinearMap(DualConfig(scale=scale, ns_method=method)).dualize(G)


def dualize_embed(G):
    return EmbedMap(DualConfig(embed_eps=0.0)).dualize(G)


def toy_params(n_layer=2, fused=True, tied=False, seed=0):
    """(name, Parameter) list + roles of a small GPT-shaped model, with random gradients set."""
    g = torch.Generator().manual_seed(seed)
    shapes = {"wte.weight": ([V, D], "embed_head" if tied else "embed")}
    for l in range(n_layer):
        if fused:
            shapes[f"h.{l}.attn.qkv.weight"] = ([3 * D, D], "attn_qkv")
        else:
            for x in "qkv":
                shapes[f"h.{l}.attn.{x}.weight"] = ([D, D], f"attn_{x}")
        shapes[f"h.{l}.attn.proj.weight"] = ([D, D], "attn_out")
        shapes[f"h.{l}.mlp.fc.weight"] = ([4 * D, D], "mlp_in")
        shapes[f"h.{l}.mlp.proj.weight"] = ([D, 4 * D], "mlp_out")
        shapes[f"h.{l}.ln.weight"] = ([D], "gain")
    shapes["lambdas"] = ([2], "scalar")
    if not tied:
        shapes["lm_head.weight"] = ([V, D], "head")
    named, roles = [], {}
    for name, (shape, role) in shapes.items():
        p = torch.nn.Parameter(torch.randn(*shape, generator=g) * 0.1)
        p.grad = torch.randn(*shape, generator=g)
        named.append((name, p))
        roles[name] = role
    return named, roles


def cfg_of(schema, **overrides):
    cfg = OmegaConf.structured(schema)
    for k, v in overrides.items():
        OmegaConf.update(cfg, k, v, merge=False)
    return cfg


def group_of(opt, name):
    return next(g for g in opt.param_groups if name in g["names"])


def snapshot(named):
    return {n: p.detach().clone() for n, p in named}


# ---- routing -----------------------------------------------------------------------------

@pytest.mark.parametrize("schema,embed_map", [(DualConfig, "embed"), (MuonConfig, "adam")])
def test_routing_by_role(schema, embed_map):
    named, roles = toy_params()
    opt = build_hybrid(cfg_of(schema), named, roles)
    maps = {n: group_of(opt, n)["map"] for n, _ in named}
    assert maps["wte.weight"] == embed_map
    assert maps["lm_head.weight"] == "adam"
    for n, r in roles.items():
        if r in ("attn_qkv", "attn_out", "mlp_in", "mlp_out"):
            assert maps[n] == "linear", n
        if r in ("gain", "scalar"):
            assert maps[n] == "adam", n
    assert all("initial_lr" in g and g["initial_lr"] == g["lr"] for g in opt.param_groups)


def test_same_shape_different_role_gets_different_map():
    # wte and lm_head are both [V, D] with the same gradient; embed -> rows to unit RMS, head -> linear map.
    named, roles = toy_params()
    params = dict(named)
    params["lm_head.weight"].grad = params["wte.weight"].grad.clone()
    before = snapshot(named)
    opt = build_hybrid(cfg_of(DualConfig, head_map="linear", momentum=0.0), named, roles)
    opt.step()
    G = params["wte.weight"].grad
    lr_e, lr_h = group_of(opt, "wte.weight")["lr"], group_of(opt, "lm_head.weight")["lr"]
    d_embed = (before["wte.weight"] - params["wte.weight"].detach()) / lr_e
    d_head = (before["lm_head.weight"] - params["lm_head.weight"].detach()) / lr_h
    torch.testing.assert_close(d_embed, dualize_embed(G), atol=1e-5, rtol=0)
    torch.testing.assert_close(d_head, dualize_linear(G, "spectral", "polar_express"), atol=1e-5, rtol=0)
    assert (d_embed - d_head).abs().max() > 0.1


def test_fused_qkv_is_orthogonalized_per_block():
    named, roles = toy_params(n_layer=1)
    params = dict(named)
    name = "h.0.attn.qkv.weight"
    before = params[name].detach().clone()
    opt = build_hybrid(cfg_of(MuonConfig, momentum=0.0, momentum_warmup_steps=0), named, roles)
    opt.step()
    update = (before - params[name].detach()) / group_of(opt, name)["lr"]
    G = params[name].grad
    per_block = torch.cat([orthogonalize(b, "quintic") for b in G.split(D)])
    torch.testing.assert_close(update, per_block, atol=1e-5, rtol=0)
    assert (update - orthogonalize(G, "quintic") * math.sqrt(3)).abs().max() > 0.05  # not the whole-matrix map


def test_tied_embedding_needs_an_explicit_map():
    named, roles = toy_params(tied=True)
    with pytest.raises(ValueError, match="optim.tied_map"):
        build_hybrid(cfg_of(DualConfig, tied_map=None), named, roles)
    opt = build_hybrid(cfg_of(DualConfig, tied_map="embed"), named, roles)
    assert group_of(opt, "wte.weight")["map"] == "embed"
    opt = build_hybrid(cfg_of(DualConfig, tied_map="linear"), named, roles)
    assert group_of(opt, "wte.weight")["map"] == "linear"


def test_a_tied_table_on_the_embed_map_steps_by_one_over_width():
    # As the head, a row moved by RMS r moves its logit by up to r * width: the rate is
    # tied_embed_lr_times_width / width, read off the table's [vocab, width] shape.
    named, roles = toy_params(tied=True)
    opt = build_hybrid(cfg_of(DualConfig, tied_map="embed", tied_embed_lr_times_width=3.2), named, roles)
    assert group_of(opt, "wte.weight")["lr"] == pytest.approx(3.2 / D)
    # The largest logit change of one step is then rate * width, whatever the width.
    for width in (64, 768):
        rate = rates_from_config(cfg_of(DualConfig, tied_map="embed"), {"embed_head": "embed"}, 1, width)["embed_head"]
        assert rate * width == pytest.approx(DualConfig.tied_embed_lr_times_width)
    # An explicit per-role rate still wins; Adam and the linear map keep the head's rate.
    opt = build_hybrid(cfg_of(DualConfig, tied_map="embed", role_lr={"embed_head": 0.01}), named, roles)
    assert group_of(opt, "wte.weight")["lr"] == pytest.approx(0.01)
    opt = build_hybrid(cfg_of(DualConfig, tied_map="adam", head_lr=0.007), named, roles)
    assert group_of(opt, "wte.weight")["lr"] == pytest.approx(0.007)


def test_head_lr_times_width_sets_the_heads_adam_rate_by_one_over_its_input_width():
    # A sign-like step of lr per entry moves a logit by up to lr * d_in: the rule keeps that product fixed.
    for d_in in (16, 128):
        named, roles = toy_params()
        named = [(n, torch.nn.Parameter(torch.zeros(V, d_in))) if n == "lm_head.weight" else (n, p) for n, p in named]
        opt = build_hybrid(cfg_of(DualConfig, head_lr_times_width=0.512, head_lr=0.9), named, roles)
        assert group_of(opt, "lm_head.weight")["lr"] * d_in == pytest.approx(0.512)
        assert group_of(opt, "lambdas")["lr"] == pytest.approx(DualConfig.scalar_lr)  # nothing else moves
    named, roles = toy_params()
    assert group_of(build_hybrid(cfg_of(DualConfig), named, roles), "lm_head.weight")["lr"] == DualConfig.head_lr
    with pytest.raises(ValueError, match="optim.head_lr_times_width"):
        build_hybrid(cfg_of(DualConfig, head_lr_times_width=0.5, head_map="linear"), named, roles)
    with pytest.raises(ValueError, match="optim.head_lr_times_width=0"):
        build_hybrid(cfg_of(DualConfig, head_lr_times_width=0.0), named, roles)


def test_bad_parameters_and_configs_fail_naming_the_fix():
    named, roles = toy_params()
    with pytest.raises(ValueError, match="has no role"):
        build_hybrid(cfg_of(DualConfig), named, {k: v for k, v in roles.items() if k != "lambdas"})
    with pytest.raises(ValueError, match="unknown role 'mlp'"):
        build_hybrid(cfg_of(DualConfig), named, {**roles, "lambdas": "mlp"})
    with pytest.raises(ValueError, match="embed map needs a"):
        build_hybrid(cfg_of(DualConfig), named, {**roles, "lambdas": "embed"})
    for key, value, pattern in [("rate_mode", "auto", "optim.rate_mode='auto'"),
                                ("ns_method", "svd", "optim.ns_method='svd'"),
                                ("scale", "fro", "optim.scale='fro'"),
                                ("momentum", 1.0, "optim.momentum=1.0"),
                                ("adam_betas", [0.9], "optim.adam_betas"),
                                ("role_lr", {"mlp": 0.1}, "optim.role_lr.mlp")]:
        with pytest.raises(ValueError, match=pattern.replace("[", r"\[")):
            build_hybrid(cfg_of(DualConfig, **{key: value}), named, roles)


# ---- rates ---------------------------------------------------------------------------------

def test_manual_rates_and_role_override():
    named, roles = toy_params()
    cfg = cfg_of(MuonConfig, lr=0.03, role_lr={"attn_out": 0.01})
    opt = build_hybrid(cfg, named, roles)
    lrs = {g["role"]: g["initial_lr"] for g in opt.param_groups}
    assert lrs == {"embed": 0.6, "attn_qkv": 0.03, "attn_out": 0.01, "mlp_in": 0.03, "mlp_out": 0.03,
                   "gain": 0.04, "scalar": 0.04, "head": 0.008}


@pytest.mark.parametrize("n_layer", [1, 3])
def test_mass_rates_are_depth_independent(n_layer):
    named, roles = toy_params(n_layer=n_layer)
    opt = build_hybrid(cfg_of(DualConfig, lr=0.21, rate_mode="mass"), named, roles)
    lrs = {g["role"]: g["initial_lr"] for g in opt.param_groups}
    assert lrs["embed"] == pytest.approx(0.03) and lrs["attn_out"] == pytest.approx(0.05)
    assert lrs["attn_qkv"] == pytest.approx(0.15) and lrs["mlp_in"] == pytest.approx(0.05)
    assert lrs["head"] == 0.008 and lrs["gain"] == 0.04  # Adam-routed: absolute


@pytest.mark.parametrize("method,lo,hi", [("six_step", 0.99, 1.0 + 1e-5), ("quintic", 0.67, 1.21)])
def test_mass_rule_update_has_modular_norm_lr(method, lo, hi):
    """Whole model: every atom's step lr * factor * (unit-norm direction) => modular norm == lr."""
    n_layer, lr = 3, 0.3
    named, roles = toy_params(n_layer=n_layer, fused=False)
    before = snapshot(named)
    cfg = cfg_of(DualConfig, lr=lr, rate_mode="mass", head_map="linear", ns_method=method)
    build_hybrid(cfg, named, roles).step()
    delta = {n: before[n] - p.detach() for n, p in named}
    norms = {"embed": embed_norm(delta["wte.weight"]).item(), "head": linear_norm(delta["lm_head.weight"]).item()}
    for l in range(n_layer):
        for atom, pname in [("attn_q", "attn.q"), ("attn_k", "attn.k"), ("attn_v", "attn.v"),
                            ("attn_out", "attn.proj"), ("mlp_in", "mlp.fc"), ("mlp_out", "mlp.proj")]:
            norms[f"{l}.{atom}"] = linear_norm(delta[f"h.{l}.{pname}.weight"]).item()
    tree = gpt_tree(n_layer)
    assert norms.keys() == update_factors(tree).keys()
    assert lo * lr <= modular_norm(tree, norms) <= hi * lr
    # and every atom individually sits at lr in the modular norm (not just the largest one)
    factors = update_factors(tree)
    assert all(lo * lr <= norms[n] / factors[n] <= hi * lr for n in norms)


def test_trainer_schedule_scales_the_step():
    name = "h.0.mlp.fc.weight"
    steps = {}
    for factor in (1.0, 0.5):
        named, roles = toy_params()
        before = dict(named)[name].detach().clone()
        opt = build_hybrid(cfg_of(DualConfig), named, roles)
        for g in opt.param_groups:
            g["lr"] = g["initial_lr"] * factor  # what the trainer does every step
        opt.step()
        steps[factor] = before - dict(named)[name].detach()
    torch.testing.assert_close(steps[0.5], 0.5 * steps[1.0], atol=1e-7, rtol=0)


# ---- Muon: the speedrun's update, step by step ---------------------------------------------

def reference_muon(W, grads, lr, warmup_steps):
    """Records 9-20: momentum warmup 0.85 -> 0.95, buf.lerp_(g, 1-b), Nesterov g.lerp(buf, b),
    quintic NS x5, update * sqrt(max(1, rows/cols)), no weight decay."""
    W, buf = W.clone(), torch.zeros_like(W)
    for step, g in enumerate(grads):
        frac = min(step / warmup_steps, 1)
        beta = (1 - frac) * 0.85 + frac * 0.95
        buf.lerp_(g, 1 - beta)
        u = g.lerp(buf, beta)
        W -= lr * orthogonalize(u, "quintic", 5) * max(1, W.size(0) / W.size(1)) ** 0.5
    return W


def test_muon_config_matches_the_speedrun_update():
    gen = torch.Generator().manual_seed(1)
    grads_fc = [torch.randn(4 * D, D, generator=gen) for _ in range(4)]
    grads_proj = [torch.randn(D, 4 * D, generator=gen) for _ in range(4)]
    named, roles = toy_params(n_layer=1)
    params = dict(named)
    start = {n: params[n].detach().clone() for n in ("h.0.mlp.fc.weight", "h.0.mlp.proj.weight")}
    opt = build_hybrid(cfg_of(MuonConfig, momentum_warmup_steps=3), named, roles)
    for gf, gp in zip(grads_fc, grads_proj):
        params["h.0.mlp.fc.weight"].grad = gf
        params["h.0.mlp.proj.weight"].grad = gp
        opt.step()
    torch.testing.assert_close(params["h.0.mlp.fc.weight"].detach(),
                               reference_muon(start["h.0.mlp.fc.weight"], grads_fc, 0.05, 3), atol=1e-6, rtol=0)
    torch.testing.assert_close(params["h.0.mlp.proj.weight"].detach(),
                               reference_muon(start["h.0.mlp.proj.weight"], grads_proj, 0.05, 3), atol=1e-6, rtol=0)


def test_muon_adam_part_is_torch_adam_with_record_hyperparameters():
    named, roles = toy_params(n_layer=1)
    params = dict(named)
    ref = {n: torch.nn.Parameter(params[n].detach().clone()) for n in ("wte.weight", "lm_head.weight", "lambdas")}
    ref_opt = torch.optim.Adam([{"params": [ref["wte.weight"]], "lr": 0.6},
                                {"params": [ref["lm_head.weight"]], "lr": 0.008},
                                {"params": [ref["lambdas"]], "lr": 0.04}], betas=(0.8, 0.95), eps=1e-10)
    opt = build_hybrid(cfg_of(MuonConfig), named, roles)
    for n in ref:
        ref[n].grad = params[n].grad.clone()
    for _ in range(3):
        opt.step()
        ref_opt.step()
    for n in ref:
        torch.testing.assert_close(params[n].detach(), ref[n].detach(), atol=1e-6, rtol=0)


def test_momentum_warmup_and_weight_decay():
    named, roles = toy_params(n_layer=1)
    opt = build_hybrid(cfg_of(MuonConfig, momentum_warmup_steps=300), named, roles)
    assert opt.beta(1) == pytest.approx(0.85) and opt.beta(151) == pytest.approx(0.90)
    assert opt.beta(301) == pytest.approx(0.95) and opt.beta(10_000) == pytest.approx(0.95)
    assert build_hybrid(cfg_of(DualConfig, momentum_warmup_steps=0), named, roles).beta(1) == 0.95  # no warmup
    # decoupled weight decay: a zero gradient leaves p * (1 - lr * wd) on the linear map
    name = "h.0.attn.proj.weight"
    p = dict(named)[name]
    p.grad = torch.zeros_like(p)
    before = p.detach().clone()
    opt = build_hybrid(cfg_of(MuonConfig, weight_decay=0.1), named, roles)
    opt.step()
    torch.testing.assert_close(p.detach(), before * (1 - 0.05 * 0.1), atol=1e-7, rtol=0)


# ---- diagnostics and resume ----------------------------------------------------------------

def test_diagnostics_every_k_steps():
    named, roles = toy_params()
    assert build_hybrid(cfg_of(DualConfig), named, roles).diagnostics() == {}
    opt = build_hybrid(cfg_of(DualConfig, diag_every=2), named, roles)
    opt.step()
    assert not opt.has_diagnostics() and opt.diagnostics() == {}
    opt.step()
    assert opt.has_diagnostics()  # step 2 kept the updates; the norms and SVDs run in diagnostics()
    diag = opt.diagnostics()
    assert not opt.has_diagnostics() and opt.diagnostics() == diag  # read once, same values after
    assert 0.0 < diag["ns_error"] < 0.2 and 0.8 < diag["ns_sv_max"] < 1.2  # polar express
    lr_out = group_of(opt, "h.0.attn.proj.weight")["lr"]
    assert diag["update_norm/attn_out"] == pytest.approx(lr_out, rel=0.15)
    assert diag["update_norm/embed"] == pytest.approx(group_of(opt, "wte.weight")["lr"], rel=1e-5)
    assert {"update_rms/head", "update_rms/gain", "momentum"} <= diag.keys()
    assert all(isinstance(v, float) and math.isfinite(v) for v in diag.values())
    opt.step()
    assert not opt.has_diagnostics() and opt.diagnostics() == {}


@pytest.mark.parametrize("table_dtype", [torch.float32, torch.bfloat16])  # bf16: track 3's token table
def test_state_dict_resume_is_exact(table_dtype):
    def params(seed=0):
        named, roles = toy_params(seed=seed)
        named[0][1].data = named[0][1].data.to(table_dtype)  # wte.weight; its Adam moments stay fp32
        return named, roles

    def run(n_steps, named, roles, opt=None):
        opt = opt or build_hybrid(cfg_of(MuonConfig, momentum_warmup_steps=5), named, roles)
        gen = torch.Generator().manual_seed(len(opt.state))
        for _, p in named:
            p.grad = torch.zeros_like(p)
        for _ in range(n_steps):
            for _, p in named:
                p.grad.copy_(torch.randn(p.shape, generator=gen))
            opt.step()
        return opt

    # checkpoint after 2 steps (serialized, as the trainer's checkpoint is), restore into fresh
    # objects, continue 2 steps: identical to never stopping.
    named_b, roles = params()
    opt_b = run(2, named_b, roles)
    buffer = io.BytesIO()
    torch.save(({n: p.detach() for n, p in named_b}, opt_b.state_dict()), buffer)
    buffer.seek(0)
    saved = torch.load(buffer)
    named_c, _ = params(seed=9)
    for n, p in named_c:
        p.data.copy_(saved[0][n])
    opt_c = build_hybrid(cfg_of(MuonConfig, momentum_warmup_steps=5), named_c, roles)
    opt_c.load_state_dict(saved[1])
    assert opt_c.param_groups[0]["step"] == 2
    # torch's load_state_dict casts state to its parameter's dtype; ours keeps what was saved
    state_b, state_c = opt_b.state_dict()["state"], opt_c.state_dict()["state"]
    assert {i: {k: v.dtype for k, v in s.items() if torch.is_tensor(v)} for i, s in state_c.items()} == \
        {i: {k: v.dtype for k, v in s.items() if torch.is_tensor(v)} for i, s in state_b.items()}
    run(2, named_b, roles, opt_b)
    run(2, named_c, roles, opt_c)
    for (n, pb), (_, pc) in zip(named_b, named_c):
        torch.testing.assert_close(pc.detach(), pb.detach(), atol=0, rtol=0)
