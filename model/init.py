"""Weight initialization schemes (model.init), then the zero-init switches.

- gpt2:           N(0, init_std) for every Linear and Embedding; residual output projections
                  N(0, init_std / sqrt(2L)) when scale_proj_init (GPT-2 / nanoGPT / llm.c).
- pytorch:        PyTorch's own defaults, which records 2-12 used: Linear weights (and biases)
                  U(+-1/sqrt(fan_in)), Embedding N(0, 1). A tied table is initialized as the
                  head Linear, U(+-1/sqrt(C)), because those records tie by handing the head's
                  weight to the embedding.
- scaled_uniform: record 20: Linear U(+-sqrt(3) * 0.5 / sqrt(fan_in)) (std 0.5/sqrt(fan_in)),
                  Embedding N(0, 1).
- scaled_normal:  track 3: Linear N(0, init_fan_in_var / fan_in) (0.33: std 0.574/sqrt(fan_in)),
                  biases 0, Embedding N(0, 1).
- constructor:    track-3 result #46 (track3_best46_cwd_rowfloor_tailema.py), a script that seeds, builds its
                  model and never re-initializes: every Linear and Embedding keeps what its constructor drew,
                  i.e. torch's own formulas (weight kaiming_uniform a=sqrt(5): U(+-b), b = sqrt(3) gain /
                  sqrt(fan_in), gain = sqrt(2 / (1 + 5)), which is 1/sqrt(fan_in) up to the last ulp; bias
                  U(+-1/sqrt(fan_in)); Embedding N(0, 1); a tied table keeps the Embedding's N(0, 1)), one draw
                  per tensor in construction order. Our construction order is the script's (table, then per
                  block q, k, v, attention out, fc, MLP out, weight before bias; the head last; norms draw
                  nothing), so the same seed gives the same tensors. At construction nothing is redrawn (a
                  redraw would consume the generator twice); a later reset_parameters() redraws with torch's
                  own reset_parameters, module by module.
Always: norm gains 1, norm biases 0, learnable scalars at their documented start values. Then
zero_init_proj zeroes the attention and MLP output projections (every block starts as the
identity) and zero_init_head zeroes the untied LM head and its bias (first prediction uniform);
init_fc_depth_scale a scales block l's mlp.fc weight by 1 - a l / (L - 1) (1 for a single block; bias
unscaled; #46: 0.30, so 1.0 ... 0.7); init_cgi_alpha sets the blocks' norm gains (model/cgi.py), drawing
its signs last, with the run's seed.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from model.cgi import set_cgi_gains
from model.config import Init, ModelConfig
from model.layers import RMSNorm


def _uniform_fan_in(t: torch.Tensor, fan_in: int, gain: float) -> None:
    bound = gain / math.sqrt(fan_in)
    nn.init.uniform_(t, -bound, bound)


@torch.no_grad()
def init_weights(model: nn.Module, cfg: ModelConfig, fresh: bool = False, seed: int | None = None) -> None:
    """(Re)initialize every parameter of a GPT `model` built from `cfg`. fresh: the modules were just
    constructed (init=constructor keeps their draws); seed: the run's seed for CGI's private generators
    (None: torch.initial_seed(), the seed train.py gave torch.manual_seed)."""
    std = cfg.init_std
    proj_std = std / math.sqrt(2 * cfg.n_layer) if cfg.scale_proj_init else std
    tied = getattr(model, "wte", None) if cfg.tie_embeddings else None
    for m in model.modules():
        if cfg.init is Init.constructor and isinstance(m, (nn.Linear, nn.Embedding)):
            if not fresh:
                m.reset_parameters()
        elif isinstance(m, nn.Linear):
            fan_in = m.in_features
            if cfg.init is Init.gpt2:
                nn.init.normal_(m.weight, 0.0, proj_std if getattr(m, "residual_out", False) else std)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif cfg.init is Init.scaled_normal:
                nn.init.normal_(m.weight, 0.0, math.sqrt(cfg.init_fan_in_var / fan_in))
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            else:
                gain = 1.0 if cfg.init is Init.pytorch else math.sqrt(3) * 0.5
                _uniform_fan_in(m.weight, fan_in, gain)
                if m.bias is not None:
                    _uniform_fan_in(m.bias, fan_in, 1.0) if cfg.init is Init.pytorch else nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            if cfg.init is Init.gpt2:
                nn.init.normal_(m.weight, 0.0, std)
            elif m is tied and cfg.init is Init.pytorch:
                _uniform_fan_in(m.weight, cfg.n_embd, 1.0)
            else:
                nn.init.normal_(m.weight, 0.0, 1.0)
        elif isinstance(m, (nn.LayerNorm, RMSNorm)):
            if m.weight is not None:
                nn.init.ones_(m.weight)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
        if hasattr(m, "reset_scalars"):
            m.reset_scalars()
    if cfg.zero_init_proj:
        for m in model.modules():
            if isinstance(m, nn.Linear) and getattr(m, "residual_out", False):
                nn.init.zeros_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
    if cfg.zero_init_head and not cfg.tie_embeddings:
        nn.init.zeros_(model.lm_head.weight)
        if model.lm_head.bias is not None:
            nn.init.zeros_(model.lm_head.bias)
    if cfg.init_fc_depth_scale:
        last = cfg.n_layer - 1
        for layer, block in enumerate(model.blocks):
            if not block.has_mlp:  # model.no_mlp_layers
                continue
            # the script's expression and order (ramp first), so the fp32 products are its own
            block.mlp.fc.weight.mul_(1.0 - cfg.init_fc_depth_scale * (layer / last if last else 0.0))
    if cfg.init_cgi_alpha:
        set_cgi_gains(model.blocks, cfg.init_cgi_alpha, cfg.head_dim, cfg.init_cgi_pair_from_layer,
                      cfg.init_cgi_head_shrink, torch.initial_seed() if seed is None else seed)
