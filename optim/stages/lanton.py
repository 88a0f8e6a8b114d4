"""Noise-adaptive layerwise learning rates (switch `optim.lanton`), after LANTON: Hao, Gong, Xu, Wang
& Liu, "Noise-Adaptive Layerwise Learning Rates: Accelerating Geometry-Aware Optimization for Deep
Neural Network Training", arXiv 2510.14009.

The paper's idea: layers that share a norm (a role group here) need not share a rate. Estimate each
layer's gradient noise online, measured in the dual norm of the layer's own LMO / duality map, and
give the less noisy layers of a group the larger share of the group's step. What we could read of
the paper (its abstract and secondary summaries of Algorithm 1: per-layer momentum
B_t = b1 B_{t-1} + (1 - b1) G_t, the gradient variance estimated online in the dual norm of the
layer's LMO, time-varying layerwise rates within each group, ~4% overhead over D-Muon) fixes the
ingredients; Algorithm 1's exact noise sample and rate formula were not in the copies available to
us, so those two lines below are our reading, chosen so the switch only redistributes a group's rate:

  noise sample   R_t = G_t - B_t            (gradient minus the updated momentum buffer, fp32;
                                             = beta (G_t - B_{t-1}): the gradient's deviation from its
                                             running mean; a factor common to a whole step)
  dual norm      n_t = ||R_t||_*            linear map: sqrt(d_out/d_in) * nuclear(R_t), summed over
                                             the blocks of a fused weight, with nuclear(R) estimated
                                             without an SVD as <R, orthogonalize(R)> (the same
                                             Newton-Schulz as the update: LinearMap.noise_sample);
                                             embed map: sqrt(d) * sum_j ||r_j||_2 (exact, elementwise:
                                             EmbedMap.noise_sample)
  estimate       H_t = b H_{t-1} + (1 - b) n_t^2,   sigma = sqrt(H_t / (1 - b^k))   (k samples; b =
                                             optim.lanton_beta; the first step a layer is seen gives no
                                             sample: its momentum has no history yet)
  rate           lr_l = lr_group * m_l,     m_l = (1 / sigma_l) / mean_{j in group}(1 / sigma_j)

So within a role group (e.g. the n_layer MLP-in matrices) the rates average to the group's own rate
(the lr sweep keeps its meaning) and are redistributed in inverse proportion to each layer's noise
(m_l <= group size). A group of one layer, or a group with no samples yet, keeps m = 1; a layer with
zero measured noise (no gradient) keeps m = 1 and is left out of the mean. Roles on Adam are not
touched (Adam already adapts per coordinate). Decoupled weight decay uses the layer's rate too.

Cost per step, per layer on the linear map: one extra Newton-Schulz on R_t (the same cost as the
update's own, so the orthogonalization work doubles; sharded round-robin like the update) and
O(params) elementwise work; embed map: O(params). One all_reduce of a vector holding one float per linear-map layer
brings the sharded norms to every rank, so every rank holds identical state. No extra tensor state:
two scalars per layer ("lanton_noise_sq", "lanton_samples") in the optimizer's state_dict. The stage
acts at the `layer_rates` hook (optim/stages/base.py).
"""
from __future__ import annotations

from functools import partial

import torch
import torch.distributed as dist

from optim.stages.base import Key, Stage, StepContext


def observe(state: dict, sample: torch.Tensor | None, beta: float, device: torch.device) -> None:
    """Fold one dual-norm noise sample into a layer's state (EMA of its square). The first call for a
    layer only starts its count at 0 and ignores `sample` (its momentum has no history yet); every rank
    sees the same state, so every rank makes the same choice."""
    if "lanton_noise_sq" not in state:
        state["lanton_noise_sq"] = torch.zeros((), dtype=torch.float32, device=device)
        state["lanton_samples"] = 0
        return
    if sample is None:
        return
    h = state["lanton_noise_sq"]
    h.lerp_(sample.to(h.device, torch.float32).square(), 1 - beta)
    state["lanton_samples"] += 1


def noise_estimate(state: dict, beta: float) -> torch.Tensor | None:
    """Bias-corrected noise level sigma = sqrt(H / (1 - beta^k)) (0-dim), or None before the first sample."""
    k = state.get("lanton_samples", 0)
    if not k:
        return None
    return (state["lanton_noise_sq"] / (1 - beta ** k)).sqrt()


def group_factors(sigmas: list[torch.Tensor | None]) -> list[torch.Tensor | None]:
    """m_l = (1 / sigma_l) / mean(1 / sigma_j) over the layers of one role group that have a positive
    noise estimate; None (factor 1) for the others. Computed without a host sync (0-dim tensors)."""
    live = [s for s in sigmas if s is not None]
    if len(live) < 2:
        return [None] * len(sigmas)
    stacked = torch.stack(live)
    positive = stacked > 0
    inv = torch.where(positive, 1.0 / stacked.clamp_min(torch.finfo(stacked.dtype).tiny), 0.0)
    count = positive.sum().clamp_min(1)
    factors = torch.where(positive, inv * count / inv.sum().clamp_min(torch.finfo(stacked.dtype).tiny), 1.0)
    out, i = [], 0
    for s in sigmas:
        if s is None:
            out.append(None)
        else:
            out.append(factors[i])
            i += 1
    return out


def share_sharded(values: list[torch.Tensor | None], device: torch.device, world: int) -> list[torch.Tensor | None]:
    """Every linear-map layer's noise sample on every rank. Each rank filled only the entries of its own
    Newton-Schulz share (None elsewhere); one all_reduce(SUM) of the vector (zeros elsewhere) makes them
    identical everywhere. Entries of layers seen for the first time come back as 0 and are ignored by
    `observe`, whose choice depends only on the state every rank shares."""
    if world == 1 or not values:
        return values
    vec = torch.zeros(len(values), dtype=torch.float32, device=device)
    for i, v in enumerate(values):
        if v is not None:
            vec[i] = v.to(device)
    dist.all_reduce(vec)
    return list(vec.unbind())


def seen(state: dict) -> bool:
    """True once `observe` has started this layer's count: from then on each step gives a sample."""
    return "lanton_noise_sq" in state


def layer_factors(states: dict, linear_items: list, linear_noise: list, embed_items: list, embed_noise: list,
                  beta: float, world: int, diag: dict | None) -> dict:
    """One optimizer step's LANTON bookkeeping, on every rank: share the linear-map samples (`linear_noise`,
    this rank's Newton-Schulz share filled, None elsewhere), fold them and the embed-map samples (every
    table, exact) into every layer's state and return each layer's rate multiplier within its role group
    as {param: 0-dim tensor} (absent: factor 1). linear_items: [(param, group)]; embed_items: [(param,
    group, update)]; samples come from each map's `noise_sample` (None for a layer not `seen` yet).
    diag, when given, gets "lanton_lr/<name>" (the layer's rate) and "lanton_noise/<name>" (sigma), as
    0-dim tensors or floats (no host sync here)."""
    device = linear_items[0][0].device if linear_items else None
    linear_noise = share_sharded(linear_noise, device, world)
    members: dict[int, tuple[dict, list]] = {}
    for (p, group), sample in zip(linear_items, linear_noise):
        observe(states[p], sample, beta, p.device)
        members.setdefault(id(group), (group, []))[1].append(p)
    for (p, group, _), sample in zip(embed_items, embed_noise):
        observe(states[p], sample, beta, p.device)
        members.setdefault(id(group), (group, []))[1].append(p)
    factors = {}
    for group, params in members.values():
        sigmas = [noise_estimate(states[p], beta) for p in params]
        names = dict(zip(map(id, group["params"]), group["names"]))
        for p, sigma, m in zip(params, sigmas, group_factors(sigmas)):
            if m is not None:
                factors[p] = m
            if diag is not None:  # 0-dim tensors: the caller turns them into floats off the training clock
                diag[f"lanton_lr/{names[id(p)]}"] = group["lr"] * m if m is not None else group["lr"]
                if sigma is not None:
                    diag[f"lanton_noise/{names[id(p)]}"] = sigma
    return factors


def _layer_rates(ctx: StepContext, beta: float) -> dict:
    """The stage at the layer_rates hook: each layer's noise sample (the linear-map ones on this rank's
    Newton-Schulz share only), then `layer_factors`."""
    linear_noise: list = [None] * len(ctx.linear)
    for i in ctx.mine:
        p, group = ctx.linear[i]
        if seen(ctx.states[p]):
            linear_noise[i] = ctx.linear_map.noise_sample(p, ctx.states[p], group["role"])
    embed_noise = [ctx.embed_map.noise_sample(p, ctx.states[p]) if seen(ctx.states[p]) else None
                   for p, _, _ in ctx.embed]
    return layer_factors(ctx.states, ctx.linear, linear_noise, ctx.embed, embed_noise, beta, ctx.world, ctx.diag)


def _check(cfg) -> None:
    if cfg.lanton and not cfg.momentum > 0:
        raise ValueError("optim.lanton=true measures each layer's noise against its momentum: it needs "
                         f"optim.momentum > 0 (got {cfg.momentum})")
    if cfg.lanton and cfg.momentum_form != "ema":
        raise ValueError("optim.lanton=true measures noise as gradient minus the momentum average: it needs "
                         f"optim.momentum_form=ema (got {cfg.momentum_form!r}, a running sum)")


STAGE = Stage(
    name="lanton", hook="layer_rates",
    doc="noise-adaptive layerwise rates within each role group (optim/stages/lanton.py)",
    keys=(Key("lanton_beta", float, 0.95, "EMA of each layer's squared dual-norm noise", range="in [0, 1)"),),
    check=_check,
    build=lambda cfg: partial(_layer_rates, beta=cfg.lanton_beta))
