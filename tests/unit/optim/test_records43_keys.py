"""The keys records 29-46's optimizers added to the hybrid optimizer, each against a hand-written formula:
NorMuon's records43 form (optim/stages/normuon.py), the lr-scaled decay with role_lr_mul / role_wd_mul,
Adam every k-th step on the summed gradients (and zero_grad keeping them), Adam's step_size correction, the
unit scale, the gate roles' routing and rates; and each key's bad value failing with the key's name.
(tests/records/test_records43_46_optim.py compares the whole optimizers with the scripts'.)"""
import copy
import io

import pytest
import torch
from omegaconf import OmegaConf

from optim import build_hybrid
from optim.hybrid_config import MuonConfig, rates_from_config, validate
from optim.maps import linear_scale
from optim.maps.adam import adam_direction, adam_direction_step_size
from optim.newton_schulz import orthogonalize
from optim.roles import route
from optim.stages.normuon import normuon_records_


def cfg(**kw):
    return OmegaConf.structured(MuonConfig(**{"momentum_warmup_steps": 0, **kw}))


@pytest.mark.parametrize("key,value", [("adam_every", 0), ("adam_correction", "bias"), ("adam_state_dtype", "fp16"), ("gate_map", "embed"),
                                       ("role_lr_mul", {"mlp_in": 0.0}), ("role_lr_mul", {"nope": 2.0}),
                                       ("role_wd_mul", {"attn_gate": -1.0}), ("normuon_form", "cols"),
                                       ("scale", "one")])
def test_bad_values_fail_naming_the_key(key, value):
    c = MuonConfig()
    setattr(c, key, value)
    with pytest.raises(ValueError, match=f"optim.{key}"):
        validate(c)


def test_gates_route_by_gate_map_and_take_the_hidden_rate():
    c = cfg(lr=0.03, role_lr_mul={"mlp_in": 2.0, "scalar": 0.5})
    present = {"attn_gate", "smear_gate", "mlp_in", "scalar"}
    routes = route(c, present)
    assert routes == {"attn_gate": "linear", "smear_gate": "linear", "mlp_in": "linear", "scalar": "adam"}
    rates = rates_from_config(c, routes)
    assert rates == {"attn_gate": 0.03, "smear_gate": 0.03, "mlp_in": 0.06, "scalar": 0.02}
    c.gate_map = "adam"
    assert rates_from_config(c, route(c, present))["attn_gate"] == c.scalar_lr
    c.gate_map, c.rate_mode = "linear", "mass"
    with pytest.raises(ValueError, match="optim.rate_mode=mass"):
        rates_from_config(c, route(c, present), n_layer=1)
    assert linear_scale(256, 64, "unit") == linear_scale(1, 12, "unit") == 1.0


@pytest.mark.parametrize("shape,axis", [((3, 16, 16), -2), ((64, 16), -1), ((16, 64), -2), ((1, 12), -2)])
def test_normuon_records_form_is_its_formula(shape, axis):
    g = torch.Generator().manual_seed(0)
    v = torch.rand(*shape[:-2], *((shape[-2], 1) if axis == -1 else (1, shape[-1])), generator=g)
    v0 = v.clone()
    d = torch.randn(shape, generator=g)
    out = normuon_records_(d, v, 0.9)
    want_v = 0.9 * v0 + 0.1 * (d * d).mean(dim=axis, keepdim=True)
    torch.testing.assert_close(v, want_v)
    n = d / want_v.sqrt()
    want = n * d.norm(dim=(-2, -1), keepdim=True) / n.norm(dim=(-2, -1), keepdim=True)
    torch.testing.assert_close(out, want)
    assert torch.equal(normuon_records_(torch.zeros(shape), torch.zeros_like(v), 0.9), torch.zeros(shape))


def test_step_size_correction_is_torch_adam_with_a_scaled_eps():
    g = torch.Generator().manual_seed(0)
    grads = [torch.randn(5, 7, generator=g) * 1e-4 for _ in range(3)]
    b1, b2, eps = 0.65, 0.95, 1e-5
    m1, v1, m2, v2 = (torch.zeros(5, 7) for _ in range(4))
    for t, gr in enumerate(grads, start=1):
        got = adam_direction_step_size(gr, m1, v1, t, (b1, b2), eps)
        want = adam_direction(gr, m2, v2, t, (b1, b2), eps / (1 - b2**t) ** 0.5)
        torch.testing.assert_close(got, want)


def test_decay_scaled_by_lr_with_lr_and_wd_multipliers():
    """p <- p - lr d - lr (lr / lr_mul) wd wd_mul 1[d p >= 0] p, d = U V^T (scale unit, momentum off)."""
    g = torch.Generator().manual_seed(0)
    w0, grad = torch.randn(8, 4, generator=g), torch.randn(8, 4, generator=g)
    c = cfg(lr=0.03, scale="unit", ns_method="polar_express", momentum=0.0, momentum_warmup_start=0.0, weight_decay=1.2, cautious_wd=True,
            decay_lr_scaled=True, role_lr_mul={"mlp_in": 2.0}, role_wd_mul={"mlp_in": 0.5})
    p = torch.nn.Parameter(w0.clone())
    opt = build_hybrid(c, [("fc", p)], {"fc": "mlp_in"})
    group = opt.param_groups[0]
    group["lr"] = group["initial_lr"] * 0.7  # the trainer's schedule
    p.grad = grad.clone()
    opt.step()
    lr, base = 0.06 * 0.7, 0.03 * 0.7
    d = orthogonalize(grad, "polar_express", dtype=torch.float32)
    mask = (d * w0 >= 0).float()
    want = w0 - lr * base * 1.2 * 0.5 * mask * w0 - lr * d
    torch.testing.assert_close(p.detach(), want)
    assert 0 < mask.mean() < 1


def test_adam_every_two_steps_on_the_summed_gradient_and_zero_grad_keeps_it():
    g = torch.Generator().manual_seed(0)
    named = [("w", torch.nn.Parameter(torch.randn(8, 4, generator=g))),
             ("s", torch.nn.Parameter(torch.randn(3, generator=g)))]
    roles = {"w": "mlp_out", "s": "scalar"}
    opt = build_hybrid(cfg(adam_every=2, adam_betas=[0.65, 0.95], adam_eps=1e-8, adam_correction="step_size"),
                       named, roles)
    w, s = (p for _, p in named)
    s0, grads = s.detach().clone(), [torch.randn(3, generator=g) for _ in range(4)]
    m, v = torch.zeros(3), torch.zeros(3)
    want = s0.clone()
    for step, gr in enumerate(grads):  # 0-based steps 0..3: Adam on 1 and 3
        w.grad = torch.randn(8, 4, generator=g)
        s.grad = gr.clone() if s.grad is None else s.grad + gr
        opt.step()
        opt.zero_grad(set_to_none=True)
        assert w.grad is None and (s.grad is None) == (step % 2 == 1)
        if step % 2 == 1:
            summed = grads[step - 1] + gr
            want -= 0.04 * adam_direction_step_size(summed, m, v, (step + 1) // 2, (0.65, 0.95), 1e-8)
        torch.testing.assert_close(s.detach(), want)
    assert not torch.equal(want, s0)
    before = copy.deepcopy(opt.state_dict())
    w.grad, s.grad = torch.ones(8, 4), torch.ones(3)
    opt.step()  # an even 0-based step: Adam holds its gradient ...
    opt.zero_grad()
    opt.zero_grad()  # ... for one zero_grad only (a skipped step's second call clears it)
    assert s.grad is None
    for _ in range(2):  # 1-based steps 6 (Adam's) and 7 (held)
        w.grad, s.grad = torch.ones(8, 4), torch.ones(3)
        opt.step()
        opt.zero_grad()
    assert s.grad is not None
    held = opt.state_dict()  # a checkpoint here carries the kept gradient ...
    assert torch.equal(held["pending_grads"][[g["role"] for g in opt.param_groups].index("scalar")][0], s.grad)
    opt.load_state_dict(before)  # ... a state from before it (the compile warm-up undone) does not
    assert s.grad is None
    opt.load_state_dict(held)
    assert torch.equal(s.grad, torch.ones(3))


@pytest.mark.parametrize("checkpoint_after", [4, 3])  # after an Adam step; between two (a kept gradient)
def test_record43_keys_resume_exactly_from_a_state_dict(checkpoint_after):
    """Records 43-46's keys together: a state_dict taken after an Adam step, loaded into a fresh optimizer,
    continues exactly (NorMuon's "normuon_v_long", the groups' lr_mul, Adam's step parity)."""
    c = cfg(lr=0.03, ns_method="polar_express", scale="unit", role_lr_mul={"mlp_in": 2.0}, normuon=True,
            normuon_form="records43", weight_decay=1.2, cautious_wd=True, decay_lr_scaled=True, adam_every=2,
            adam_betas=[0.65, 0.95], adam_eps=1e-8, adam_correction="step_size")
    shapes = {"fc": ((32, 8), "mlp_in"), "proj": ((8, 32), "mlp_out"), "gate": ((2, 12), "attn_gate"),
              "s": ((5,), "scalar")}
    g = torch.Generator().manual_seed(0)
    start = {n: torch.randn(s, generator=g) for n, (s, _) in shapes.items()}
    grads = [{n: torch.randn(s, generator=g) for n, (s, _) in shapes.items()} for _ in range(6)]
    roles = {n: r for n, (_, r) in shapes.items()}

    def run(params, opt, steps):
        for gr in steps:
            for n, p in params.items():
                p.grad = gr[n].clone() if p.grad is None else p.grad + gr[n]
            opt.step()
            opt.zero_grad()

    a = {n: torch.nn.Parameter(w.clone()) for n, w in start.items()}
    opt_a = build_hybrid(c, list(a.items()), roles)
    run(a, opt_a, grads[:checkpoint_after])
    buf = io.BytesIO()
    torch.save(opt_a.state_dict(), buf)  # a checkpoint: state_dict() holds the live tensors
    buf.seek(0)
    b = {n: torch.nn.Parameter(p.detach().clone()) for n, p in a.items()}
    opt_b = build_hybrid(c, list(b.items()), roles)
    opt_b.load_state_dict(torch.load(buf))
    assert {grp["role"]: grp.get("lr_mul") for grp in opt_b.param_groups}["mlp_in"] == 2.0
    assert opt_b.state[b["fc"]]["normuon_v_long"].shape == (32, 1)
    run(a, opt_a, grads[checkpoint_after:])
    run(b, opt_b, grads[checkpoint_after:])
    for n in shapes:
        assert torch.equal(a[n].detach(), b[n].detach()), n
