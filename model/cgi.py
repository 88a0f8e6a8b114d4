"""CGI: Rademacher channel gains on each block's two norms (model.init_cgi_*), track-3 result #46
(track3_best46_cwd_rowfloor_tailema.py, its init section; the README calls it the channel-gain split).

Block l (0-based, L blocks, width C) gets a sign vector s_l in {-1, +1}^C and starts with

    attention-norm gain = 1 - a s_l,   MLP-norm gain = 1 + a s_l          (a = init_cgi_alpha, 0.125 in #46)

so each channel leans towards one branch at init; the embedding and final norms keep gains 1.

Where the signs come from (the draw order is part of the definition: it decides the values):
- blocks l < P (P = init_cgi_pair_from_layer; every block when P is null): s_l = 2 randint{0,1}^C - 1 (fp32)
  from the default generator of the gains' device, block after block;
- blocks l >= P come in pairs (P, P+1), (P+2, P+3), ...: at the first block of a pair a private generator,
  seeded 0xA9170000 + 1009 seed + 9176 l (seed: the run's), draws for each head of D = C / n_head channels,
  in this order: B = the number of ones in randint{0,1}^D (int64); k = round(D/2 + h (B - D/2)) (Python's
  round, half to even; h = init_cgi_head_shrink), clamped to [0, D]; s's head = k ones and D - k minus ones,
  permuted by randperm(D); the partner's head = D - k ones and k minus ones, permuted by a second randperm(D).
  The second block of the pair takes the partner, so the two blocks' per-head sign means are opposite
  ((2k - D)/D and -(2k - D)/D). A pair cut by the last block leaves its partner unused.

Generators are per device (a CUDA stream differs from the CPU's): the script draws on its training GPU,
so GPT.draw_cgi_gains(seed) redraws the gains where the model lives once it is there (train.py).
"""
from __future__ import annotations

import torch

# The script's private-generator seed: PAIR_SEED_BASE + PAIR_SEED_PER_RUN * seed + PAIR_SEED_PER_LAYER * layer.
PAIR_SEED_BASE = 0xA9170000
PAIR_SEED_PER_RUN = 1009
PAIR_SEED_PER_LAYER = 9176


def rademacher(width: int, device: torch.device) -> torch.Tensor:
    """[width] fp32 signs from the default generator of `device`."""
    return torch.randint(0, 2, (width,), device=device, dtype=torch.float32) * 2 - 1


def pair_seed(seed: int, layer: int) -> int:
    """The private generator's seed of the pair starting at block `layer`; reduced mod 2^64 (what
    Generator.manual_seed accepts), which changes nothing for the small seeds runs use."""
    return (PAIR_SEED_BASE + PAIR_SEED_PER_RUN * seed + PAIR_SEED_PER_LAYER * layer) % (1 << 64)


def antithetic_pair(width: int, head_dim: int, shrink: float, seed: int, layer: int,
                    device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(s, partner), each [width] fp32 signs, for the pair starting at block `layer` (module docstring)."""
    if width % head_dim:
        raise ValueError(f"CGI pairs balance signs per head: width {width} is not a multiple of head_dim {head_dim}")
    gen = torch.Generator(device=device)
    gen.manual_seed(pair_seed(seed, layer))
    first, second = [], []
    for _ in range(width // head_dim):
        plus = int(torch.randint(0, 2, (head_dim,), device=device, generator=gen, dtype=torch.int64).sum().item())
        k = max(0, min(head_dim, int(round(head_dim / 2 + shrink * (plus - head_dim / 2)))))
        first.append(_signs(k, head_dim, device)[torch.randperm(head_dim, device=device, generator=gen)])
        second.append(_signs(head_dim - k, head_dim, device)[torch.randperm(head_dim, device=device, generator=gen)])
    return torch.cat(first), torch.cat(second)


def _signs(plus: int, n: int, device: torch.device) -> torch.Tensor:
    """`plus` ones then n - plus minus ones, fp32."""
    return torch.cat([torch.ones(plus, device=device, dtype=torch.float32),
                      -torch.ones(n - plus, device=device, dtype=torch.float32)])


def block_signs(n_layer: int, width: int, head_dim: int, pair_from: int | None, shrink: float, seed: int,
                device: torch.device) -> list[torch.Tensor]:
    """s_l for l = 0 .. n_layer-1, drawn in the script's order (module docstring)."""
    signs: list[torch.Tensor] = []
    partner = None
    for layer in range(n_layer):
        if pair_from is None or layer < pair_from:
            signs.append(rademacher(width, device))
        elif (layer - pair_from) % 2:
            signs.append(partner)
            partner = None
        else:
            s, partner = antithetic_pair(width, head_dim, shrink, seed, layer, device)
            signs.append(s)
    return signs


@torch.no_grad()
def set_cgi_gains(blocks, alpha: float, head_dim: int, pair_from: int | None, shrink: float, seed: int) -> None:
    """Draw s_l on the gains' device and set every block's ln_1 / ln_2 gains to 1 -+ alpha s_l.
    blocks: the model's blocks (each with ln_1.weight, ln_2.weight of shape [width])."""
    gain = blocks[0].ln_1.weight
    if gain.device.type == "meta":  # shapes only (tools.describe): no values to draw
        return
    signs = block_signs(len(blocks), gain.numel(), head_dim, pair_from, shrink, seed, gain.device)
    for block, s in zip(blocks, signs):
        block.ln_1.weight.copy_((1.0 - alpha * s).to(block.ln_1.weight.dtype))
        block.ln_2.weight.copy_((1.0 + alpha * s).to(block.ln_2.weight.dtype))
