"""AdamW baseline (`optim=adamw`): its schema and its builder, one torch AdamW with decay split by role."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from optim.roles import VECTOR_ROLES


@dataclass
class AdamWConfig:
    """AdamW on every parameter (the llm.c / record 2 baseline).

    Weight decay applies to matrices and embeddings only; gains, biases and
    scalars are never decayed (decaying a norm gain towards 0 fights the norm).
    """

    name: str = "adamw"
    lr: float = 6e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    eps: float = 1e-8
    weight_decay: float = 0.1
    fused: bool = True  # the fused CUDA kernel when on GPU; ignored on CPU

    def check(self) -> None:
        if self.lr < 0:
            raise ValueError(f"optim.lr must be >= 0 (got {self.lr})")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"optim.betas must be two numbers in [0, 1) (got {list(self.betas)})")
        if self.eps <= 0 or self.weight_decay < 0:
            raise ValueError(f"optim.eps must be > 0 and optim.weight_decay >= 0 (got {self.eps}, {self.weight_decay})")


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
