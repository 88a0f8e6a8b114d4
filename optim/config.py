"""Optimizer configuration schemas (Hydra group `optim`).

Each optimizer has its own schema so a key that belongs to another optimizer is
rejected at start. Every schema has `name` (the builder to use, see
`optim.OPTIMIZERS`) and `lr` (the base learning rate, scaled each step by the
trainer's schedule).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from optim.hybrid_config import DualConfig, MuonConfig


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


OPTIM_SCHEMAS: dict[str, type] = {"adamw_schema": AdamWConfig, "muon_schema": MuonConfig,
                                  "dual_schema": DualConfig}
