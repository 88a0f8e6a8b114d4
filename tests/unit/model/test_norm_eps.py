"""The switches that make record configs exact: model.norm_eps and optim.momentum_form."""
import math

import pytest
import torch
from omegaconf import OmegaConf

from model.config import ModelConfig, Norm, PosEmb, QKNorm
from model.layers import make_norm
from optim import build_hybrid
from optim.hybrid_config import MuonConfig, validate


def test_norm_eps_is_the_epsilon_of_every_norm():
    x = torch.randn(3, 5, 8, dtype=torch.float64) * 1e-3  # small activations: eps matters
    rms = make_norm(ModelConfig(norm=Norm.rmsnorm, norm_affine=False, norm_eps=1e-6), 8)
    torch.testing.assert_close(rms(x), x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6), rtol=1e-12, atol=0)
    default = make_norm(ModelConfig(norm=Norm.rmsnorm, norm_affine=False), 8)
    assert default.eps is None and not torch.allclose(default(x), rms(x), rtol=1e-6, atol=0)
    assert make_norm(ModelConfig(norm=Norm.layernorm, norm_eps=1e-6), 8).eps == 1e-6
    assert make_norm(ModelConfig(norm=Norm.layernorm), 8).eps == 1e-5
    with pytest.raises(ValueError, match="model.norm_eps must be > 0 or null"):
        ModelConfig(norm_eps=0.0).check()


def test_qk_norm_uses_norm_eps():
    from model.attention import CausalSelfAttention
    torch.manual_seed(0)
    outs = []
    for eps in (None, 1e-2):
        cfg = ModelConfig(n_layer=1, n_head=2, n_embd=8, qk_norm=QKNorm.before_rope, pos_emb=PosEmb.rotary, bias=False,
                          norm_eps=eps)
        attn = CausalSelfAttention(cfg, 0)
        torch.manual_seed(1)
        for p in attn.parameters():
            torch.nn.init.normal_(p, std=0.05)
        from model.masks import AttentionMasks
        outs.append(attn(torch.randn(1, 6, 8, generator=torch.Generator().manual_seed(2)), AttentionMasks())[0])
    assert (outs[0] - outs[1]).abs().max() > 1e-4


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
