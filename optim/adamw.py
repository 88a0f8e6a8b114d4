"""AdamW baseline: one torch AdamW, decay split by parameter role."""
from __future__ import annotations

import torch

from optim.config import AdamWConfig
from optim.roles import VECTOR_ROLES


def build_adamw(cfg: AdamWConfig, named_params: list[tuple[str, torch.nn.Parameter]],
                roles: dict[str, str]) -> torch.optim.Optimizer:
    """Two param groups: decayed (matrices, embeddings, head) and not decayed (gains, biases, scalars)."""
    decay = [p for n, p in named_params if roles[n] not in VECTOR_ROLES]
    no_decay = [p for n, p in named_params if roles[n] in VECTOR_ROLES]
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay, "role": "matrices"},
        {"params": no_decay, "weight_decay": 0.0, "role": "vectors"},
    ]
    groups = [g for g in groups if g["params"]]
    fused = cfg.fused and all(p.is_cuda for g in groups for p in g["params"])
    opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, fused=fused)
    for g in opt.param_groups:
        g["initial_lr"] = cfg.lr
    return opt
