"""EMA-Nesterov (optim/lookahead.py; track-3 result #46) against its formulas written out independently:
the jump's window and coefficient (the lr ratio the previous step set), the displacement EMA updated every
step, a skipped step, the resume, the keys' checks and the wrapping by build_optimizer."""
from __future__ import annotations

import pytest
import torch

from optim import build_optimizer
from optim.hybrid_config import DualConfig
from optim.lookahead import EMANesterov, check_lookahead

START, END, EMA, COEF = 3, 7, 0.9, 0.5


def _setup(seed: int = 0):
    torch.manual_seed(seed)
    a, b = torch.nn.Parameter(torch.randn(4, 3)), torch.nn.Parameter(torch.randn(5).to(torch.bfloat16))
    inner = torch.optim.SGD([{"params": [a], "role": "embed", "lr": 0.1, "initial_lr": 0.1},
                             {"params": [b], "role": "bias", "lr": 0.2, "initial_lr": 0.2}], momentum=0.5)
    return [a, b], inner


def _grad(p: torch.Tensor, t: int) -> torch.Tensor:
    return (torch.sin(p.float() * (t + 1)) + 0.1).to(p.dtype)  # depends on the (shifted) weights


def _lr(t: int) -> float:
    return 0.1 * (1.0 - t / 20)


def _run(params, opt, steps, first=0):
    for t in range(first, steps):
        opt.pre_forward()
        for p in params:
            p.grad = _grad(p.detach(), t)
        opt.param_groups[0]["lr"] = _lr(t)
        opt.step()


def test_jump_window_coefficient_and_buffer_against_the_formulas():
    params, inner = _setup()
    opt = EMANesterov(inner, COEF, EMA, START, END, "embed")
    # Independent: plain SGD on copies, the wrapper's rule written out in fp64 for the fp32 tensor.
    ref_params, ref_inner = _setup()
    w0 = ref_params[0].detach().double().clone()
    prev, buf, ratio = w0.clone(), torch.zeros_like(w0), 1.0
    for t in range(10):
        opt.pre_forward()
        s = COEF * ratio if START <= t < END else 0.0
        assert opt.last_coefficient == pytest.approx(s, rel=1e-15)
        with torch.no_grad():
            for p, q in zip(ref_params, opt.params):
                p.add_(buf.to(p.dtype) if p.dim() == 2 else torch.zeros_like(p), alpha=s)
        for p in params + ref_params:
            p.grad = _grad(p.detach(), t)
        opt.param_groups[0]["lr"] = ref_inner.param_groups[0]["lr"] = _lr(t)
        opt.step()
        ref_inner.step()
        w = ref_params[0].detach().double()
        buf = buf + (1 - EMA) * ((w - prev) - buf)
        prev, ratio = w.clone(), _lr(t) / 0.1
        assert torch.allclose(params[0].double(), w, rtol=0, atol=1e-6), t
        assert torch.allclose(opt.buf[0].double(), buf, rtol=0, atol=1e-6), t
        assert torch.equal(opt.prev[0], params[0].detach()) and opt.prev[1].dtype == torch.bfloat16
    assert opt.steps == 10


def test_resume_inside_the_window_equals_the_uninterrupted_run():
    params, inner = _setup()
    opt = EMANesterov(inner, COEF, EMA, START, END, "embed")
    _run(params, opt, 10)
    params2, inner2 = _setup()
    opt2 = EMANesterov(inner2, COEF, EMA, START, END, "embed")
    _run(params2, opt2, 5)
    state = opt2.state_dict()
    params3, inner3 = _setup(seed=1)  # other weights: everything comes from the checkpoint
    with torch.no_grad():
        for p, q in zip(params3, params2):
            p.copy_(q)
    opt3 = EMANesterov(inner3, COEF, EMA, START, END, "embed")
    opt3.load_state_dict(state)
    for g in opt3.param_groups:  # the trainer resets the groups' lr from the config after a load
        g["lr"] = g["initial_lr"]
    _run(params3, opt3, 10, first=5)
    assert all(torch.equal(a, b) for a, b in zip(params, params3))
    assert all(torch.equal(a, b) for a, b in zip(opt.buf, opt3.buf))


def test_a_skipped_step_keeps_its_jump_once():
    params, inner = _setup()
    opt = EMANesterov(inner, COEF, EMA, 0, 10, None)
    _run(params, opt, 2)
    opt.pre_forward()
    shifted = params[0].detach().clone()
    opt.pre_forward()  # the step was dropped (train.nonfinite=skip): no second jump
    assert torch.equal(params[0], shifted) and opt.steps == 2


def test_step_without_pre_forward_is_refused():
    params, inner = _setup()
    with pytest.raises(RuntimeError, match="pre_forward"):
        EMANesterov(inner, COEF, EMA, START, END, "embed").step()


def test_keys_are_checked_and_off_by_default():
    cfg = DualConfig()
    assert cfg.lookahead == 0.0
    for key, value in (("lookahead", -1.0), ("lookahead_ema", 1.0), ("lookahead_start", 5000),
                       ("lookahead_lr_role", "nope")):
        with pytest.raises(ValueError, match=f"optim.{key}"):
            check_lookahead(DualConfig(**{key: value}))


def test_build_optimizer_wraps_only_when_on():
    model = torch.nn.Linear(4, 4)
    named = list(model.named_parameters())
    roles = {"weight": "attn_q", "bias": "bias"}
    assert not isinstance(build_optimizer(DualConfig(), named, roles), EMANesterov)
    opt = build_optimizer(DualConfig(lookahead=0.3, lookahead_lr_role="attn_q"), named, roles)
    assert isinstance(opt, EMANesterov) and opt.param_groups[opt.role_index]["role"] == "attn_q"
    assert opt.param_groups is opt.inner.param_groups
    with pytest.raises(ValueError, match="optim.lookahead_lr_role='embed'"):
        build_optimizer(DualConfig(lookahead=0.3), named, roles)  # this model has no embedding group
