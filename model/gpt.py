"""GPT-2 as in nanoGPT / llm.c, with every architectural choice behind a config field.

Shapes: B = batch (sequences), T = sequence length (tokens), C = n_embd,
H = n_head, D = C // H (head dim), V = padded vocabulary size.

Each parameter carries a *role* (see optim/roles.py): the module kind that decides
its norm and hence how the optimizer updates it. Roles are attached to modules
here, where the architecture is known, and read back by `param_roles()`.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from model.config import MlpAct, ModelConfig, Norm, PosEmb


def tagged(module: nn.Module, role: str) -> nn.Module:
    """Mark a module's weight with its optimizer role (biases are always role 'bias')."""
    module.weight_role = role
    return module


class RMSNorm(nn.Module):
    """x / rms(x) over the last dim, with an optional learnable gain."""

    def __init__(self, dim: int, affine: bool):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim)) if affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, (x.size(-1),), self.weight)


def make_norm(cfg: ModelConfig) -> nn.Module:
    if cfg.norm is Norm.rmsnorm:
        return tagged(RMSNorm(cfg.n_embd, cfg.norm_affine), "gain")
    return tagged(nn.LayerNorm(cfg.n_embd, elementwise_affine=cfg.norm_affine, bias=cfg.bias and cfg.norm_affine), "gain")


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        C = cfg.n_embd
        self.n_head = cfg.n_head
        if cfg.fused_qkv:
            self.qkv = tagged(nn.Linear(C, 3 * C, bias=cfg.bias), "attn_qkv")
        else:
            self.q = tagged(nn.Linear(C, C, bias=cfg.bias), "attn_q")
            self.k = tagged(nn.Linear(C, C, bias=cfg.bias), "attn_k")
            self.v = tagged(nn.Linear(C, C, bias=cfg.bias), "attn_v")
        self.proj = tagged(nn.Linear(C, C, bias=cfg.bias), "attn_out")
        self.proj.residual_out = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, T, C] -> [B, T, C], causal."""
        B, T, C = x.shape
        if hasattr(self, "qkv"):
            q, k, v = self.qkv(x).split(C, dim=2)
        else:
            q, k, v = self.q(x), self.k(x), self.v(x)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))  # [B, H, T, D]
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).contiguous().view(B, T, C))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        hidden = cfg.mlp_ratio * cfg.n_embd
        self.fc = tagged(nn.Linear(cfg.n_embd, hidden, bias=cfg.bias), "mlp_in")
        self.proj = tagged(nn.Linear(hidden, cfg.n_embd, bias=cfg.bias), "mlp_out")
        self.proj.residual_out = True
        self.act = cfg.mlp_act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc(x)
        h = F.gelu(h, approximate="tanh") if self.act is MlpAct.gelu else F.relu(h).square()
        return self.proj(h)


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.ln_1, self.attn = make_norm(cfg), CausalSelfAttention(cfg)
        self.ln_2, self.mlp = make_norm(cfg), MLP(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        cfg.check()
        self.cfg = cfg
        V, C = cfg.padded_vocab_size, cfg.n_embd
        self.wte = tagged(nn.Embedding(V, C), "embed_head" if cfg.tie_embeddings else "embed")
        if cfg.pos_emb is PosEmb.learned:
            self.wpe = tagged(nn.Embedding(cfg.block_size, C), "pos_embed")
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = make_norm(cfg)
        if not cfg.tie_embeddings:
            self.lm_head = tagged(nn.Linear(C, V, bias=False), "head")
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """GPT-2 init: N(0, 0.02) everywhere, residual projections scaled by 1/sqrt(2L)
        so the residual stream's variance does not grow with depth; zero biases."""
        std = self.cfg.init_std
        proj_std = std / math.sqrt(2 * self.cfg.n_layer) if self.cfg.scale_proj_init else std
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, 0.0, proj_std if getattr(m, "residual_out", False) else std)
                if getattr(m, "bias", None) is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.LayerNorm, RMSNorm)):
                if m.weight is not None:
                    nn.init.ones_(m.weight)
                if getattr(m, "bias", None) is not None:
                    nn.init.zeros_(m.bias)

    def param_roles(self) -> dict[str, str]:
        """Role of every parameter, keyed like `named_parameters()` (tied weights once)."""
        roles: dict[str, str] = {}
        for mod_name, module in self.named_modules():
            for p_name, _ in module.named_parameters(recurse=False):
                full = f"{mod_name}.{p_name}" if mod_name else p_name
                roles[full] = module.weight_role if p_name == "weight" else "bias"
        return {name: roles[name] for name, _ in self.named_parameters()}

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        """idx: int64 [B, T] token ids. Returns the mean cross-entropy (nats) against
        `targets` [B, T] if given, else the logits [B, T, V] in fp32."""
        T = idx.size(1)
        if T > self.cfg.block_size and self.cfg.pos_emb is PosEmb.learned:
            raise ValueError(f"sequence length {T} exceeds model.block_size={self.cfg.block_size}")
        x = self.wte(idx)
        if self.cfg.pos_emb is PosEmb.learned:
            x = x + self.wpe(torch.arange(T, device=idx.device))
        for block in self.blocks:
            x = block(x)
        x = self.ln_f(x)
        head_w = self.wte.weight if self.cfg.tie_embeddings else self.lm_head.weight
        logits = F.linear(x, head_w).float()  # fp32 logits: a bf16 softmax over 50k classes loses precision
        if targets is None:
            return logits
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))
