"""Track-3 result #46's Muon-side stages and keys (optim/stages/soap.py, radial.py, uw_floor.py, radius_pin.py,
cautious_post.py; optim.ns_norm, optim.update_bf16, the momentum cool-down) against formulas written here
independently, in fp64 where it helps (the script's own code: tests/records/test_track3_best46_muon.py)."""
import io
import math

import pytest
import torch
from omegaconf import OmegaConf

from optim import build_hybrid
from optim.hybrid_config import DualConfig, MuonConfig
from optim.momentum_schedule import momentum_at
from optim.newton_schulz import orthogonalize
from optim.stages.base import MatrixContext
from optim.stages.soap import STAGE as SOAP
from optim.stages.soap import trust_floor

D = 12
SHAPES = {"h.0.attn.q.weight": ([D, D], "attn_q"), "h.0.attn.proj.weight": ([D, D], "attn_out"),
          "h.0.mlp.fc.weight": ([4 * D, D], "mlp_in"), "h.0.mlp.proj.weight": ([D, 4 * D], "mlp_out"),
          "h.1.attn.qkv.weight": ([3 * D, D], "attn_qkv"), "h.0.ln.weight": ([D], "gain")}
SWITCHES = ("soap", "radial_brake", "uw_floor", "radius_pin", "cautious_wd_post")


def params(seed=0, std=0.1):
    g = torch.Generator().manual_seed(seed)
    named = [(n, torch.nn.Parameter(torch.randn(*s, generator=g) * std)) for n, (s, _) in SHAPES.items()]
    return named, {n: r for n, (_, r) in SHAPES.items()}


def grads(steps, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [{n: torch.randn(*s, generator=g) for n, (s, _) in SHAPES.items()} for _ in range(steps)]


def config(**overrides):
    base = {"lr": 0.05, "momentum_warmup_steps": 0, "ns_method": "track3", "ns_steps": 12}
    return OmegaConf.structured(MuonConfig(**{**base, **overrides}))


def step_all(opt, named, grads_):
    for step in grads_:
        for n, p in named:
            p.grad = step[n].clone()
        opt.step()


def one_step(cfg, seed=0, std=0.1):
    """(weights before, weights after) of one step from the same weights and gradient."""
    named, roles = params(seed, std)
    before = {n: p.detach().clone() for n, p in named}
    step_all(build_hybrid(cfg, named, roles), named, grads(1))
    return before, {n: p.detach().clone() for n, p in named}


# ---- Newton-Schulz input norm and the momentum schedule -------------------------------------------

@pytest.mark.parametrize("shape", [(8, 20), (20, 8)])
def test_gram_norm_divides_by_the_schatten_4_norm(shape):
    G = torch.randn(*shape, generator=torch.Generator().manual_seed(2))
    s = torch.linalg.svdvals(G.double())
    got = orthogonalize(G, "track3", steps=0, dtype=torch.float32, norm="gram")
    torch.testing.assert_close(got.double(), G.double() / s.pow(4).sum().pow(0.25), rtol=1e-6, atol=0)
    fro = orthogonalize(G, "track3", steps=0, dtype=torch.float32)  # the default is still ||X||_F + 1e-7
    torch.testing.assert_close(fro.double(), G.double() / (s.square().sum().sqrt() + 1e-7), rtol=1e-6, atol=0)
    assert torch.equal(orthogonalize(torch.zeros(*shape), "track3", norm="gram"), torch.zeros(*shape))


def test_momentum_cooldown_and_both_ramp_forms():
    # #46: 0.85 -> 0.95 over 300 steps, 0.95 -> 0.85 over the last 200 of 2900, written as offsets
    kw = {"momentum": 0.95, "warmup_start": 0.85, "warmup_steps": 300, "cooldown_end": 0.85, "cooldown_steps": 200,
          "horizon": 2900}
    for t in (0, 1, 150, 299, 300, 2700, 2701, 2800, 2899):
        expect = 0.85 + (t / 300) * (0.95 - 0.85) if t < 300 else (
            0.95 - ((t - 2700) / 200) * (0.95 - 0.85) if t > 2700 else 0.95)
        assert momentum_at(t, form="offset", **kw) == expect, t
        assert abs(momentum_at(t, **kw) - expect) < 1e-15, t  # blend: the same up to one rounding
    assert momentum_at(2899, form="offset", **kw) == pytest.approx(0.8505, abs=1e-15)
    # without a cool-down the harness' warm-up is what it was: (1 - f) start + f momentum, f = (step - 1) / n
    opt = build_hybrid(config(momentum_warmup_steps=7), *params())
    for step in range(1, 12):
        f = min(1.0, (step - 1) / 7)
        assert opt.beta(step) == (1 - f) * 0.85 + f * 0.95


# ---- SOAP ---------------------------------------------------------------------------------------

def soap_fn(**overrides):
    return SOAP.build(config(soap=True, **overrides))


def test_soap_first_step_passes_u_and_takes_the_eigenbasis_then_preconditions():
    gen = torch.Generator().manual_seed(3)
    m, n = 6, 10
    g0, g1, u1 = (torch.randn(m, n, generator=gen) for _ in range(3))
    fn, state = soap_fn(), {}
    u0 = torch.randn(m, n, generator=gen)
    out0 = fn(u0, MatrixContext(state, "mlp_in", 1.0, grad=g0, step=0))
    assert torch.equal(out0, u0) and torch.equal(state["soap_V"], torch.zeros(m, n)) and state["soap_step"] == 1
    L0 = 0.1 * g0.double() @ g0.double().T
    torch.testing.assert_close(state["soap_L"].double(), L0, rtol=1e-5, atol=1e-6)
    QL, QR = state["soap_QL"].double(), state["soap_QR"].double()
    eig = torch.diag(QL.T @ L0 @ QL)
    assert torch.all(eig[:-1] >= eig[1:] - 1e-5)  # descending
    torch.testing.assert_close(QL.T @ L0 @ QL, torch.diag(eig), atol=1e-5, rtol=0)
    # step 1 preconditions with step 0's basis (fp64 formula), then refreshes it by one QR step
    out1 = fn(u1.clone(), MatrixContext(state, "mlp_in", 1.0, grad=g1, step=1))
    P = QL.T @ u1.double() @ QR
    V = 0.1 * P.square()
    expect = QL @ (P / V.clamp_min(1e-16).sqrt()) @ QR.T

    def s4(x):
        return torch.linalg.svdvals(x).pow(4).sum().pow(0.25)
    expect = expect * s4(u1.double()) / s4(expect)
    torch.testing.assert_close(out1.double(), expect, rtol=1e-4, atol=1e-5)
    L1 = 0.9 * L0 + 0.1 * g1.double() @ g1.double().T
    order = torch.argsort(torch.diag(QL.T @ L1 @ QL), descending=True)
    q_new, _ = torch.linalg.qr(L1 @ QL[:, order])
    torch.testing.assert_close(state["soap_QL"].double().abs(), q_new.abs(), atol=1e-4, rtol=0)
    assert state["soap_step"] == 2


def test_trust_gate_schedule_and_blend():
    assert [trust_floor(t, 0.45, 1375, 1625) for t in (0, 1374, 1375, 1500, 1624, 1625, 2000)] == \
        [0.45, 0.45, 0.45, 0.45 * 125 / 250, 0.45 * 1 / 250, 0.0, 0.0]
    gen = torch.Generator().manual_seed(4)
    g = torch.randn(D, D, generator=gen)
    fn, state = soap_fn(), {}
    fn(torch.randn(D, D, generator=gen), MatrixContext(state, "attn_out", 1.0, grad=g, step=0))
    u = torch.randn(D, D, generator=gen) + g  # aligned with g
    for t, (lo, hi) in ((5, (0.45, 0.85)), (2000, (0.0, 1.0))):
        st = {k: v.clone() if torch.is_tensor(v) else v for k, v in state.items()}
        got = fn(u.clone(), MatrixContext(st, "attn_out", 1.0, grad=g, step=t))
        st2 = {k: v.clone() if torch.is_tensor(v) else v for k, v in state.items()}
        soap = soap_fn(soap_blend_roles=[], soap_trust_roles=[])(u.clone(), MatrixContext(st2, "attn_out", 1.0, grad=g, step=t))

        def cos(a, b):
            return float((a.double() * b.double()).sum() / (a.double().norm() * b.double().norm()))
        agree = min(max((cos(soap, u) - 0.2) / 0.8, 0), 1)
        align = min(max(cos(soap, g) / max(cos(u, g), 1e-8), 0), 1)
        a = min(max(agree * align, lo), hi)
        mixed = u.double() + (soap.double() - u.double()) * a
        s4 = lambda x: torch.linalg.svdvals(x).pow(4).sum().pow(0.25)
        torch.testing.assert_close(got.double(), mixed * s4(u.double()) / s4(mixed), rtol=1e-4, atol=1e-6)


# ---- after Newton-Schulz and around the step ------------------------------------------------------

def test_radial_brake_floor_pin_and_post_pin_decay_match_their_formulas():
    """One step of each combination from the same d: d comes from the plain run (switches off). Weights of
    std 0.8, so that the floors lift some matrices and rows and leave others."""
    lr, lifted = 0.05, set()
    before, plain = one_step(config(), std=0.8)
    runs = {}
    for n, (shape, role) in SHAPES.items():
        if role == "gain":
            continue
        W = before[n].double()
        u = (before[n] - plain[n]).double() / lr
        c = float((u * W).sum() / (W * W).sum())
        u_rad = u - c * W + (0.5 if c < 0 else 1.0) * c * W
        r, q = W.norm(dim=1, keepdim=True), u_rad.norm(dim=1, keepdim=True)
        u_row = u_rad * torch.clamp(0.3825 * r / q, min=1.0)
        ratio = float(u_rad.norm() / W.norm())
        u_sc = u_rad * (0.3825 / ratio if ratio < 0.3825 else 1.0)
        r0 = float(W.norm())
        target = r0 - lr * float((u_row * W).sum()) / r0
        pinned = (W - lr * u_row) * target / float((W - lr * u_row).norm())
        decayed = pinned * (1 - lr * 0.025 * (u_row * W > 0).double())
        cases = {"radial": (dict(radial_brake=True), W - lr * u_rad),
                 "scalar floor": (dict(radial_brake=True, uw_floor=True), W - lr * u_sc),
                 "row floor": (dict(radial_brake=True, uw_floor=True, uw_floor_per_row=True), W - lr * u_row),
                 "pin": (dict(radial_brake=True, uw_floor=True, uw_floor_per_row=True, radius_pin=True), pinned),
                 "pin + cwd": (dict(radial_brake=True, uw_floor=True, uw_floor_per_row=True, radius_pin=True,
                                    cautious_wd_post=True), decayed)}
        for name, (on, expect) in cases.items():
            if name not in runs:
                runs[name] = one_step(config(**on), std=0.8)[1]
            torch.testing.assert_close(runs[name][n].double(), expect, rtol=0, atol=2e-6, msg=f"{name}: {n}")
        lifted |= {"matrix"} if ratio < 0.3825 else set()
        lifted |= {"row"} if (q < 0.3825 * r).any() else set()
        lifted |= {"row kept"} if (q > 0.3825 * r).any() else set()
    assert lifted == {"matrix", "row", "row kept"}, lifted  # the floors acted, and not on everything


def test_update_bf16_rounds_the_update():
    before, after = one_step(config(update_bf16=True, radial_brake=True, uw_floor=True, uw_floor_per_row=True))
    for n, (_, role) in SHAPES.items():
        if role != "gain":
            u = (before[n] - after[n]) / 0.05
            assert torch.equal(u.bfloat16().float(), u) or (u.bfloat16().float() - u).abs().max() < 1e-6 * u.abs().max()


def test_everything_off_by_default_and_bad_values_name_the_key():
    for schema in (DualConfig, MuonConfig):
        cfg = schema()
        assert not any(getattr(cfg, s) for s in SWITCHES) and cfg.ns_norm == "fro" and not cfg.update_bf16
        assert cfg.momentum_cooldown_steps == 0 and cfg.momentum_ramp == "blend"
    named, roles = params()
    for key, value in (("soap_beta", 1.0), ("soap_freq", 0), ("soap_trust_cap", 1.5), ("uw_floor_target", 0.0),
                       ("radial_outward", -1.0), ("cautious_wd_post_rate", -0.1), ("ns_norm", "spectral"),
                       ("momentum_ramp", "cubic"), ("soap_roles", ["gain"])):
        with pytest.raises(ValueError, match=f"optim.{key}"):
            build_hybrid(config(**{key: value}), named, roles)
    with pytest.raises(ValueError, match="optim.momentum_horizon"):
        build_hybrid(config(momentum_cooldown_steps=10), named, roles)


def test_state_dict_round_trip_with_every_stage_on():
    """Resume after 3 steps (past step 0's eigh and one refresh) == running on: SOAP's V, L, R, Q_L, Q_R and
    step count travel in state_dict(), a fused weight's blocks included."""
    cfg = config(**{s: True for s in SWITCHES}, uw_floor_per_row=True, update_bf16=True, ns_norm="gram",
                 momentum_warmup_steps=2, momentum_cooldown_steps=2, momentum_horizon=6, momentum_ramp="offset")
    gs = grads(6)
    named_a, roles = params()
    opt_a = build_hybrid(cfg, named_a, roles)
    step_all(opt_a, named_a, gs[:3])
    buffer = io.BytesIO()
    torch.save(({n: p.detach() for n, p in named_a}, opt_a.state_dict()), buffer)
    buffer.seek(0)
    weights, state = torch.load(buffer, weights_only=True)
    qkv = opt_a.state[dict(named_a)["h.1.attn.qkv.weight"]]
    assert {"soap_QL_0", "soap_QR_2", "soap_V_1", "soap_L_0"} <= qkv.keys() and qkv["soap_step"] == 3
    named_b, _ = params(seed=9)
    for n, p in named_b:
        p.data.copy_(weights[n])
    opt_b = build_hybrid(cfg, named_b, roles)
    opt_b.load_state_dict(state)
    step_all(opt_a, named_a, gs[3:])
    step_all(opt_b, named_b, gs[3:])
    for (n, pa), (_, pb) in zip(named_a, named_b):
        torch.testing.assert_close(pb.detach(), pa.detach(), atol=0, rtol=0)
    assert all(math.isfinite(float(p.detach().abs().sum())) for _, p in named_a)
