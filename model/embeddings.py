"""The token-embedding side of records 29-46: the smear gate and the value-embedding layout.

Shapes: B rows, T tokens, C = n_embd.

Smear gate (records 43 and 46, by @classiclarryd): each token's embedding takes in a gated share of the
previous token's, before the embedding norm:

    e_t <- e_t + l sigmoid(w . e_t[:k]) e_{t-1}      t >= 1 of each row; e_0 unchanged
    w [1, k] (role smear_gate) and l (role scalar) start at 0, so the smear starts off.

The records run one flat packed row ([1, T]), so the smear crosses document boundaries there (a
document's first token takes in the previous document's last), as in the scripts; with B > 1 rows
each row is smeared on its own.

Value-embedding layout: which of the value_embed_tables tables each layer mixes into its values.
Record 20 (and 29): layers [0, 1, 2, 9, 10, 11] take tables 0, 1, 2, 0, 1, 2 (k-th listed layer: table
k % tables). Records 43, 46 drop layer 0's attention and keep the rest: layers [1, 2, 9, 10, 11] take
tables [1, 2, 0, 1, 2] (model.value_embed_table_ids).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from model.config import ModelConfig
from model.layers import tag_param


class SmearGate(nn.Module):
    """e [B, T, C] -> e with the previous token smeared in (see the module docstring); k = gate inputs."""

    def __init__(self, k: int):
        super().__init__()
        tag_param(self, "weight", torch.zeros(1, k), "smear_gate")
        tag_param(self, "lamb", torch.zeros(()), "scalar")

    def reset_scalars(self) -> None:
        with torch.no_grad():
            self.weight.zero_()
            self.lamb.zero_()

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        k = self.weight.size(-1)
        # the script's order: l * sigmoid(gate), then times the previous embedding
        gate = self.lamb * torch.sigmoid(F.linear(e[:, 1:, :k], self.weight.type_as(e)))
        return torch.cat([e[:, :1], e[:, 1:] + gate * e[:, :-1]], dim=1)


def value_embed_layout(cfg: ModelConfig) -> list[Optional[int]]:
    """Per layer: the value-embedding table it mixes into v, or None (length n_layer)."""
    per_layer: list[Optional[int]] = [None] * cfg.n_layer
    ids = list(cfg.value_embed_table_ids) or [k % max(cfg.value_embed_tables, 1)
                                             for k in range(len(cfg.value_embed_layers))]
    for layer, table in zip(cfg.value_embed_layers, ids):
        per_layer[layer] = table
    return per_layer
