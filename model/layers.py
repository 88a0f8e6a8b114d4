"""Small building blocks shared by the model files: role tags, norms, the MLP.

Each parameter carries a *role* (see optim/roles.py): the module kind that decides
its norm and hence how the optimizer updates it. `tagged` marks a module's weight;
`tag_param` marks any other parameter of a module (scalars, lambdas, skip weights).
`GPT.param_roles()` reads the tags back and refuses untagged parameters.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from model.config import MlpAct, ModelConfig, Norm


def tagged(module: nn.Module, role: str, bias_role: str | None = None) -> nn.Module:
    """Mark a module's weight with its optimizer role, and its bias with `bias_role` (default 'bias')."""
    module.weight_role = role
    if bias_role is not None:
        module.bias_role = bias_role
    return module


def tag_param(module: nn.Module, name: str, value: torch.Tensor, role: str) -> nn.Parameter:
    """Register `value` as parameter `name` of `module` with its optimizer role."""
    param = nn.Parameter(value)
    module.register_parameter(name, param)
    if "param_role_tags" not in module.__dict__:
        module.param_role_tags = {}
    module.param_role_tags[name] = role
    return param


def role_of(module: nn.Module, name: str) -> str | None:
    """The role tagged on `module`'s own parameter `name`, or None when it was never tagged."""
    tags = module.__dict__.get("param_role_tags", {})
    if name in tags:
        return tags[name]
    if name == "weight":
        return getattr(module, "weight_role", None)
    if name == "bias":
        return getattr(module, "bias_role", "bias")
    return None


class _AlgebraicSoftcap(torch.autograd.Function):
    """y = s z / sqrt(z^2 + d^2), with dy/dz = s d^2 / (z^2 + d^2)^(3/2) = s d^2 r^3 (r = rsqrt(z^2 + d^2)).

    One saved tensor and ~9 passes over the [tokens, vocab] logits instead of autograd's ~20: on CPU
    at small width these elementwise passes, not the head's matmul, dominate the step (2.4x faster
    softcap + cross-entropy at 1024 x 50304). Under torch.compile the plain expression is used instead."""

    @staticmethod
    def forward(ctx, z: torch.Tensor, scale: float, div: float) -> torch.Tensor:
        r = z.square().add_(div * div).rsqrt_()
        ctx.save_for_backward(r)
        ctx.k = scale * div * div
        return z.mul(scale).mul_(r)  # (s z) r: the reference's order, so the forward is bitwise the same

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (r,) = ctx.saved_tensors
        return r.square().mul_(r).mul_(grad).mul_(ctx.k), None, None


def algebraic_softcap(z: torch.Tensor, scale: float, div: float) -> torch.Tensor:
    """scale * z / sqrt(z^2 + div^2) (track 3: 15, 15): smooth like tanh, |y| < scale, slope scale/div at 0."""
    if torch.compiler.is_compiling():  # inductor fuses the plain expression with the loss and picks what to save
        return scale * z * torch.rsqrt(z.square() + div * div)
    return _AlgebraicSoftcap.apply(z, scale, div)


class RMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps) over the last dim, with an optional learnable gain.
    eps None: torch's default, the eps of x's dtype. fp32_gain (model.norm_fp32_gain, track-3 result #46):
    normalize fp32(x) (eps None: fp32's), multiply by the gain in its own (fp32) dtype, round once to x's
    dtype; without it a bf16 stream takes the gain rounded to bf16. In fp32 the two are the same."""

    def __init__(self, dim: int, affine: bool, eps: float | None = None, fp32_gain: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim)) if affine else None
        self.eps = eps
        self.fp32_gain = fp32_gain

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        if self.fp32_gain:
            y = F.rms_norm(x.float(), (x.size(-1),), eps=self.eps)
            return (y if w is None else y * w).to(x.dtype)
        # a bf16 stream (model.embed_bf16) takes the gain in its dtype: the fused kernel needs one
        return F.rms_norm(x, (x.size(-1),), w if w is None or w.dtype == x.dtype else w.to(x.dtype), self.eps)


def make_norm(cfg: ModelConfig, dim: int | None = None) -> nn.Module:
    """The configured norm over `dim` features (default n_embd); its gain has role 'gain'."""
    dim = dim or cfg.n_embd
    if cfg.norm is Norm.rmsnorm:
        return tagged(RMSNorm(dim, cfg.norm_affine, cfg.norm_eps, cfg.norm_fp32_gain), "gain")
    eps = 1e-5 if cfg.norm_eps is None else cfg.norm_eps  # nn.LayerNorm's own default
    return tagged(nn.LayerNorm(dim, eps=eps, elementwise_affine=cfg.norm_affine, bias=cfg.bias and cfg.norm_affine),
                  "gain")


class MLP(nn.Module):
    """x [B, T, C] -> proj(act(fc(x))) [B, T, C]; hidden width mlp_ratio * C."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        hidden = cfg.mlp_ratio * cfg.n_embd
        self.fc = tagged(nn.Linear(cfg.n_embd, hidden, bias=cfg.bias), "mlp_in")
        self.proj = tagged(nn.Linear(hidden, cfg.n_embd, bias=cfg.bias), "mlp_out")
        self.proj.residual_out = True
        self.act = cfg.mlp_act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc(x)
        if self.act is MlpAct.relu2:
            h = F.relu(h).square()
        else:
            h = F.gelu(h, approximate="tanh" if self.act is MlpAct.gelu else "none")
        return self.proj(h)
