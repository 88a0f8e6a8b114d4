"""optim.momentum_form, a switch that makes record configs exact: Muon's momentum as a running sum or an EMA
(model.norm_eps, the other: tests/unit/model/test_norm_eps.py)."""
import math

import pytest
import torch
from omegaconf import OmegaConf

from optim import build_hybrid
from optim.hybrid_config import MuonConfig, validate


def _steps(form: str, betas_of_step, grads):
    """Parameters after len(grads) Muon steps of one 6x4 matrix (no warmup: beta set per step)."""
    cfg = OmegaConf.structured(MuonConfig(momentum_form=form, momentum_warmup_steps=0, lr=0.1))
    p = torch.nn.Parameter(torch.zeros(6, 4, dtype=torch.float64))
    opt = build_hybrid(cfg, [("w", p)], {"w": "mlp_in"})
    dirs = []
    for t, g in enumerate(grads):
        opt.beta = lambda step, t=t: betas_of_step(t)
        p.grad = g.clone()
        opt.step()
        dirs.append(opt.state[p]["momentum_buffer"].clone())
    return p.detach().clone(), dirs


def test_sum_form_is_a_running_sum_and_differs_from_ema_while_beta_ramps():
    gen = torch.Generator().manual_seed(0)
    grads = [torch.randn(6, 4, generator=gen, dtype=torch.float64) for _ in range(4)]
    ramp = lambda t: 0.85 + 0.1 * t / 3
    _, bufs = _steps("sum", ramp, grads)
    expect = torch.zeros(6, 4, dtype=torch.float64)
    for t, g in enumerate(grads):
        expect = ramp(t) * expect + g
        torch.testing.assert_close(bufs[t], expect.float(), rtol=1e-6, atol=1e-7)
    p_sum, _ = _steps("sum", ramp, grads)
    p_ema, _ = _steps("ema", ramp, grads)
    assert (p_sum - p_ema).abs().max() > 1e-5  # the buffers weigh old gradients differently
    const = lambda t: 0.95
    p_sum, _ = _steps("sum", const, grads)
    p_ema, _ = _steps("ema", const, grads)
    torch.testing.assert_close(p_sum, p_ema, rtol=0, atol=1e-6)  # constant beta: a scale, orthogonalized away
    assert math.isclose(float(p_sum.abs().max()), float(p_ema.abs().max()), rel_tol=1e-5)


def test_bad_momentum_form_names_the_key():
    with pytest.raises(ValueError, match="optim.momentum_form='avg' is not one of"):
        validate(OmegaConf.structured(MuonConfig(momentum_form="avg")))
