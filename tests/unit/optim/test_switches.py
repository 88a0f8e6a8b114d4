"""The hybrid optimizer's switches against hand-written references of their formulas: LANTON's
noise-adaptive layerwise rates (arXiv 2510.14009), NorMuon's per-row normalization (2510.05491),
cautious weight decay (2510.12402); their config checks, diagnostics and exact state_dict resume.

The gradients are synthetic (fixed random tensors, not functions of the weights), so with no weight
decay the dualized directions of a run with a switch and of the plain run are the same tensors; a
switch's effect is then read off the two runs' parameter steps and compared with the formula."""
import io
import math

import pytest
import torch
from omegaconf import OmegaConf

from optim import build_hybrid
from optim.hybrid_config import DualConfig, MuonConfig
from optim.maps import EmbedMap, LinearMap, linear_scale

V, D, LAYERS, STEPS, LR = 40, 16, 3, 4, 0.05
HIDDEN = {"qkv": ([3 * D, D], "attn_qkv"), "proj": ([D, D], "attn_out"), "fc": ([4 * D, D], "mlp_in"),
          "out": ([D, 4 * D], "mlp_out")}


def linear_dual_norm_estimate(R, method, steps):
    return LinearMap(DualConfig(ns_method=method, ns_steps=steps)).dual_norm_estimate(R)


def embed_dual_norm(R):
    return EmbedMap.dual_norm(R, torch.float32)


def model_params(seed=0):
    """A GPT-shaped set of parameters: token + value embeddings, LAYERS blocks, gains, a head."""
    g = torch.Generator().manual_seed(seed)
    shapes = {"wte.weight": ([V, D], "embed"), "ve.0.weight": ([V, D], "value_embed"),
              "ve.1.weight": ([V, D], "value_embed")}
    for l in range(LAYERS):
        shapes.update({f"h.{l}.{k}.weight": s for k, s in HIDDEN.items()})
        shapes[f"h.{l}.ln.weight"] = ([D], "gain")
    shapes["lm_head.weight"] = ([V, D], "head")
    named = [(n, torch.nn.Parameter(torch.randn(*s, generator=g) * 0.1)) for n, (s, _) in shapes.items()]
    return named, {n: r for n, (_, r) in shapes.items()}


def gradients(named, steps=STEPS, seed=1):
    """Per step, a gradient per parameter; each layer gets its own noise level so LANTON has work to do."""
    g = torch.Generator().manual_seed(seed)
    mean = {n: torch.randn(p.shape, generator=g) for n, p in named}
    level = {n: 0.2 + 2.0 * torch.rand((), generator=g).item() for n, _ in named}
    return [{n: mean[n] + level[n] * torch.randn(p.shape, generator=g) for n, p in named} for _ in range(steps)]


def config(**overrides):
    base = dict(lr=LR, momentum_warmup_steps=0, embed_eps=0.0, ns_method="six_step")
    return OmegaConf.structured(DualConfig(**{**base, **overrides}))


def run(cfg, grads, named=None, roles=None):
    """Steps of the optimizer on the given gradients; returns (per-step parameter deltas, optimizer)."""
    if named is None:
        named, roles = model_params()
    opt = build_hybrid(cfg, named, roles)
    deltas = []
    for step in grads:
        before = {n: p.detach().clone() for n, p in named}
        for n, p in named:
            p.grad = step[n].clone()
        opt.step()
        deltas.append({n: before[n] - p.detach() for n, p in named})
    return deltas, opt


# ---- LANTON ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("method,tol", [("six_step", 0.01), ("polar_express", 0.08)])
def test_newton_schulz_inner_product_estimates_the_nuclear_norm(method, tol):
    g = torch.Generator().manual_seed(0)
    for shape in ([24, 96], [96, 24], [3, 16, 16], [64, 64]):
        R = torch.randn(*shape, generator=g)
        exact = math.sqrt(shape[-2] / shape[-1]) * torch.linalg.matrix_norm(R.double(), ord="nuc").sum()
        est = linear_dual_norm_estimate(R, method, None)
        assert abs(est.item() / exact.item() - 1) < tol, (shape, est.item(), exact.item())
    table = torch.randn(V, D, generator=g)
    assert embed_dual_norm(table).item() == pytest.approx(math.sqrt(D) * table.norm(dim=1).sum().item(), rel=1e-6)


def reference_lanton_factors(grads, named, roles, beta_m=0.95, beta_h=0.95):
    """LANTON's multipliers per step, from the formula with exact dual norms (SVD nuclear norms):
    R = G - B_t, n = sqrt(d_out/d_in) * sum over blocks nuclear(R_b) (embed: sqrt(d) sum_j ||r_j||),
    H <- b H + (1-b) n^2, sigma = sqrt(H / (1 - b^k)), m = (1/sigma) / mean over the role group."""
    buf = {n: torch.zeros(p.shape, dtype=torch.float64) for n, p in named}
    H = {n: 0.0 for n, _ in named}
    k = 0
    out = []
    for t, step in enumerate(grads):
        for n in buf:
            buf[n] = beta_m * buf[n] + (1 - beta_m) * step[n].double()
        factors = {n: 1.0 for n, _ in named}
        if t > 0:  # the first step gives no sample: the momentum has no history yet
            k += 1
            for n, _ in named:
                R = step[n].double() - buf[n]
                if roles[n] in ("embed", "value_embed"):
                    norm = math.sqrt(R.size(1)) * R.norm(dim=1).sum().item()
                elif roles[n] in ("attn_qkv", "attn_out", "mlp_in", "mlp_out"):
                    blocks = R.view(3, D, D) if roles[n] == "attn_qkv" else R
                    norm = math.sqrt(blocks.size(-2) / blocks.size(-1)) * \
                        torch.linalg.matrix_norm(blocks, ord="nuc").sum().item()
                else:
                    continue
                H[n] = beta_h * H[n] + (1 - beta_h) * norm ** 2
            for role in ("value_embed", "attn_qkv", "attn_out", "mlp_in", "mlp_out"):
                names = [n for n, _ in named if roles[n] == role]
                inv = {n: 1.0 / math.sqrt(H[n] / (1 - beta_h ** k)) for n in names}
                mean_inv = sum(inv.values()) / len(inv)
                factors.update({n: inv[n] / mean_inv for n in names})
        out.append(factors)
    return out


def test_lanton_rates_match_the_formula():
    named, roles = model_params()
    grads = gradients(named)
    plain, _ = run(config(), grads)
    named_l, _ = model_params()
    lant, opt = run(config(lanton=True, diag_every=1), grads, named_l, roles)
    expected = reference_lanton_factors(grads, named, roles)
    for t in range(STEPS):
        for n, _ in named:
            ratio = (lant[t][n].norm() / plain[t][n].norm()).item()
            assert ratio == pytest.approx(expected[t][n], rel=0.02, abs=1e-6), (t, n, ratio, expected[t][n])
            # a layer's step is the plain step times its factor: same direction
            torch.testing.assert_close(lant[t][n], plain[t][n] * ratio, atol=1e-6, rtol=1e-4)
    # the rates differ between layers and average to the group's rate; Adam groups are untouched
    diag = opt.diagnostics()
    mlp_in = [diag[f"lanton_lr/h.{l}.fc.weight"] for l in range(LAYERS)]
    assert sum(mlp_in) / LAYERS == pytest.approx(LR, rel=1e-5) and max(mlp_in) / min(mlp_in) > 1.2
    assert diag["lanton_lr/wte.weight"] == DualConfig.embed_lr  # a role group of one layer keeps its rate
    assert all(isinstance(v, float) and math.isfinite(v) for v in diag.values())
    assert not any("lm_head" in k or ".ln." in k for k in diag if k.startswith("lanton"))
    assert {f"lanton_noise/h.0.{k}.weight" for k in HIDDEN} <= diag.keys()


def test_lanton_with_momentum_zero_is_refused():
    with pytest.raises(ValueError, match="optim.lanton=true .* optim.momentum > 0"):
        named, roles = model_params()
        build_hybrid(config(lanton=True, momentum=0.0), named, roles)


# ---- NorMuon --------------------------------------------------------------------------------------

def reference_normuon(plain_updates, roles, beta=0.95, eps=1e-8, scale="spectral"):
    """NorMuon on the plain linear-map updates O_t (per block): v <- b v + (1-b) mean_cols(O^2),
    N = O / (sqrt(v) + eps), out = N * scale(r, c) sqrt(min(r, c)) / ||N||_F."""
    v, out = {}, []
    for step in plain_updates:
        res = {}
        for n, O in step.items():
            if roles[n] not in ("attn_qkv", "attn_out", "mlp_in", "mlp_out"):
                continue
            X = O.double().view(3, D, D) if roles[n] == "attn_qkv" else O.double()
            v[n] = beta * v.get(n, 0.0) + (1 - beta) * (X ** 2).mean(dim=-1)
            N = X / (v[n].sqrt().unsqueeze(-1) + eps)
            r, c = X.shape[-2:]
            target = linear_scale(r, c, scale) * math.sqrt(min(r, c))
            res[n] = (N * target / N.norm(dim=(-2, -1), keepdim=True)).reshape(O.shape)
        out.append(res)
    return out


@pytest.mark.parametrize("scale", ["spectral", "rms_match"])
def test_normuon_matches_the_formula(scale):
    named, roles = model_params()
    grads = gradients(named)
    plain, _ = run(config(scale=scale), grads)
    named_n, _ = model_params()
    normed, opt = run(config(scale=scale, normuon=True), grads, named_n, roles)
    expected = reference_normuon([{n: d / LR for n, d in s.items()} for s in plain], roles, scale=scale)
    for t in range(STEPS):
        for n, _ in named:
            if n in expected[t]:
                torch.testing.assert_close(normed[t][n].double() / LR, expected[t][n], atol=2e-5, rtol=1e-4)
            else:  # embeddings, gains, head: untouched
                torch.testing.assert_close(normed[t][n], plain[t][n], atol=0, rtol=0)
    # on the first step v is (1 - b) times each row's mean square: every row (neuron) gets the same RMS
    first = normed[0]["h.0.fc.weight"] / LR
    rms = first.pow(2).mean(dim=1).sqrt()
    assert (rms.max() / rms.min()).item() == pytest.approx(1.0, abs=1e-4)
    assert first.norm().item() == pytest.approx(linear_scale(4 * D, D, scale) * math.sqrt(D), rel=1e-5)
    assert opt.state[dict(named_n)["h.0.qkv.weight"]]["normuon_v"].shape == (3, D)


@pytest.mark.parametrize("switch", ["normuon", "lanton"])
def test_a_zero_gradient_leaves_a_layer_finite_and_unchanged(switch):
    """A layer behind a zero-initialized projection gets an all-zero gradient at first (track 3's q/k/v
    on step 1): its step must be zero, not 0 * (target / 0) = NaN (found on the track-3 proxy)."""
    named, roles = model_params()
    grads = gradients(named, steps=2)
    for step in grads:
        step["h.0.qkv.weight"].zero_()
    deltas, _ = run(config(**{switch: True}), grads, named, roles)
    for t in range(2):
        assert all(bool(torch.isfinite(d).all()) for d in deltas[t].values()), t
        assert torch.count_nonzero(deltas[t]["h.0.qkv.weight"]) == 0


# ---- cautious weight decay ------------------------------------------------------------------------

def test_cautious_weight_decay_matches_the_formula():
    named, roles = model_params()
    start = {n: p.detach().clone() for n, p in named}
    grads = gradients(named, steps=1)
    plain, opt = run(config(), grads)  # no decay: the update directions u alone
    lr_of = {n: g["lr"] for g in opt.param_groups for n in g["names"]}
    named_c, _ = model_params()
    wd, adam_wd = 0.3, 0.2
    cautious, _ = run(config(weight_decay=wd, adam_weight_decay=adam_wd, cautious_wd=True), grads, named_c, roles)
    named_d, _ = model_params()
    decoupled, _ = run(config(weight_decay=wd, adam_weight_decay=adam_wd), grads, named_d, roles)
    for n, p0 in start.items():
        lr = lr_of[n]
        u = plain[0][n] / lr
        lam = adam_wd if roles[n] in ("gain", "head") else wd
        mask = (u * p0 >= 0).float()
        expected = lr * (u + lam * mask * p0)  # w_t - w_{t+1} = lr (u + wd 1[u w >= 0] w)
        torch.testing.assert_close(cautious[0][n], expected, atol=1e-6, rtol=1e-5, msg=n)
        assert 0.2 < mask.mean() < 0.8  # both kinds of coordinate are present
        # where they disagree the weight is not decayed; plain decoupled decay touches every coordinate
        off = mask == 0
        torch.testing.assert_close(cautious[0][n][off], plain[0][n][off], atol=1e-6, rtol=1e-5)
        assert (decoupled[0][n][off] - plain[0][n][off]).abs().max() > 1e-4


def test_switch_configs_fail_naming_the_fix():
    named, roles = model_params()
    with pytest.raises(ValueError, match="optim.cautious_wd=true .* optim.weight_decay"):
        build_hybrid(config(cautious_wd=True), named, roles)
    for key, value in (("lanton_beta", 1.0), ("normuon_beta", -0.1), ("normuon_eps", 0.0)):
        with pytest.raises(ValueError, match=f"optim.{key}="):
            build_hybrid(config(**{key: value}), named, roles)
    # every switch is off by default, in both configurations
    for schema in (DualConfig, MuonConfig):
        cfg = schema()
        assert not (cfg.lanton or cfg.normuon or cfg.cautious_wd)


# ---- checkpoints ----------------------------------------------------------------------------------

def test_state_dict_round_trip_keeps_every_switch_state():
    cfg = config(lanton=True, normuon=True, cautious_wd=True, weight_decay=0.1, momentum_warmup_steps=3)
    grads = gradients(model_params()[0], steps=5)
    named_a, roles = model_params()
    _, opt_a = run(cfg, grads[:3], named_a, roles)
    buffer = io.BytesIO()
    torch.save(({n: p.detach() for n, p in named_a}, opt_a.state_dict()), buffer)
    buffer.seek(0)
    weights, state = torch.load(buffer, weights_only=True)
    some = opt_a.state[dict(named_a)["h.1.out.weight"]]
    assert {"lanton_noise_sq", "lanton_samples", "normuon_v"} <= some.keys() and some["lanton_samples"] == 2
    assert {"lanton_noise_sq", "lanton_samples"} <= opt_a.state[dict(named_a)["ve.0.weight"]].keys()
    named_b, _ = model_params(seed=7)
    for n, p in named_b:
        p.data.copy_(weights[n])
    opt_b = build_hybrid(cfg, named_b, roles)
    opt_b.load_state_dict(state)
    rest_a, _ = run_on(opt_a, named_a, grads[3:])
    rest_b, _ = run_on(opt_b, named_b, grads[3:])
    for (n, pa), (_, pb) in zip(named_a, named_b):
        torch.testing.assert_close(pb.detach(), pa.detach(), atol=0, rtol=0)


def run_on(opt, named, grads):
    for step in grads:
        for n, p in named:
            p.grad = step[n].clone()
        opt.step()
    return named, opt
