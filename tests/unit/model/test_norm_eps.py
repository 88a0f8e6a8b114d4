"""model.norm_eps, a switch that makes record configs exact: the epsilon of every norm, QK-norm's too
(optim.momentum_form, the other: tests/unit/optim/test_momentum_form.py)."""
import pytest
import torch

from model.config import ModelConfig, Norm, PosEmb, QKNorm
from model.layers import make_norm


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
