"""Residual-stream paths of records 43 and 46: gated skips between chosen blocks, backout, and the count
of the scripts' packed scalars. (The x0 mix x <- a x + b x0 is each block's, model/block.py; dropped
attention / MLP layers are model.no_attn_layers / model.no_mlp_layers, also there.)

Shapes: x [B, T, C].

Skip gates (model.skip_pairs, records 43/46 after the U-net of @brendanh0gan): block `out` starts with

    x <- x + g_j * y_in          y_in = the output of block `in` of pair j; g_j = sigmoid(w_j) or w_j

    record 43: pairs (5,6), (4,7), (3,8), (2,9), (1,10), sigmoid, w = -1.5 (sigmoid 0.18) at init;
    record 46: the one pair (4, 7).
    (Record 29's full U-net, raw weights at 1, is model.unet_skips in model/gpt.py.)

Backout (model.backout_layer, records 43/46: block 8, l = 0.5 at init): before the final norm,

    x <- x - l * y_8             y_8 = the output of block 8

taking back what the early blocks wrote only as context for later ones.

Scalar count: the scripts pack skip weights (n_layer slots), block lambdas (2 n_layer), value lambdas
(2 n_layer), then the smear and backout lambdas into one vector padded with ones to a multiple of the
world size, including slots no layer reads. We keep one parameter per used scalar, so our count is
smaller; `script_parameter_count` gives the scripts' count at a world size.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from model.config import ModelConfig
from model.layers import tag_param


class SkipGates(nn.Module):
    """One weight per model.skip_pairs entry (role scalar), and the gate it gives."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.pairs = [tuple(p) for p in cfg.skip_pairs]
        self.sigmoid, self.init = cfg.skip_sigmoid, cfg.skip_init
        self.out_of = {out: j for j, (_, out) in enumerate(self.pairs)}  # out layer -> pair index
        self.ins = {src for src, _ in self.pairs}
        tag_param(self, "weight", torch.full((len(self.pairs),), float(cfg.skip_init)), "scalar")

    def reset_scalars(self) -> None:
        with torch.no_grad():
            self.weight.fill_(self.init)

    def gate(self, j: int) -> torch.Tensor:
        w = self.weight[j]
        return torch.sigmoid(w) if self.sigmoid else w

    def before_block(self, layer: int, x: torch.Tensor, saved: dict[int, torch.Tensor]) -> torch.Tensor:
        """x on entry to block `layer`: with its pair's gated source added if it is an out layer."""
        j = self.out_of.get(layer)
        return x if j is None else x + self.gate(j) * saved.pop(self.pairs[j][0])


class Backout(nn.Module):
    """l (role scalar, model.backout_init at init): x - l * y_backout."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.init = cfg.backout_init
        tag_param(self, "lamb", torch.tensor(float(cfg.backout_init)), "scalar")

    def reset_scalars(self) -> None:
        with torch.no_grad():
            self.lamb.fill_(self.init)

    def forward(self, x: torch.Tensor, y_backout: torch.Tensor) -> torch.Tensor:
        return x - self.lamb * y_backout


def packed_scalar_slots(cfg: ModelConfig, world_size: int) -> int:
    """Length of the scripts' `scalars` vector (records 29-46): 5 n_layer slots, + 1 for the smear lambda,
    + 1 for the backout lambda, padded to a multiple of `world_size`."""
    n = 5 * cfg.n_layer + (1 if cfg.smear_gate_dim else 0) + (1 if cfg.backout_layer is not None else 0)
    return n + (-n) % world_size


def script_parameter_count(model: nn.Module, world_size: int = 8) -> dict[str, int]:
    """{'ours': our parameters, 'scalars': ours of role scalar, 'script': what the record's script counts at
    `world_size` (our non-scalar parameters + its padded scalars vector; model.packed_scalars configs)}."""
    roles = model.param_roles()
    ours = sum(p.numel() for p in model.parameters())
    scalars = sum(p.numel() for name, p in model.named_parameters() if roles[name] == "scalar")
    return {"ours": ours, "scalars": scalars,
            "script": ours - scalars + packed_scalar_slots(model.cfg, world_size)}
