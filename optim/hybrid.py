"""The hybrid optimizer: every parameter is routed by its ROLE to a duality map.

    linear  (hidden matrices; optionally the head):  Nesterov momentum -> Newton-Schulz U V^T, scaled
    embed   (token / position / value embeddings):    Nesterov momentum -> each token row to unit RMS
    adam    (gains, biases, scalars; the head by default): Adam
            (hidden matrices too with hidden_map=adam: track 3's AdamW, with their own betas and decay)

    p <- p (1 - lr wd) - lr * dualize(u),   u = (1 - beta) g + beta buf,  buf <- beta buf + (1 - beta) g

Routing is a table role -> map built from config (optim/hybrid_config.py), never a shape test:
two weights of the same shape get different maps when they play different roles. Fused weights
(FUSED_BLOCKS, e.g. attn_qkv [3d, d] or [3, d, d]) are orthogonalized per block.

Param groups: one per role, each with "role", "map", "lr", "initial_lr" (the trainer sets
lr = initial_lr * schedule factor), "weight_decay", "betas" (Adam groups), "names" and "step" (optimizer steps taken,
which drives the momentum warmup and Adam's bias correction and travels in state_dict()).

Distributed (torch.distributed initialized, gradients already averaged by DDP): the
linear-map matrices are sorted by size and dealt round-robin, each rank orthogonalizes only its
share and one all_gather brings every update to every rank, so all ranks apply identical updates.
The elementwise work (momentum, embed map, Adam) is O(params) and runs on every rank, which keeps
the optimizer state complete and identical everywhere (any rank's state_dict() is a checkpoint).
"""
from __future__ import annotations

from typing import Callable, Iterable

import torch
import torch.distributed as dist

from optim.distributed import gather_updates, rank_and_world, shard_round_robin
from optim.duality import (adam_direction, dualize_embed, dualize_linear, embed_norm, exact_polar,
                           linear_norm)
from optim.newton_schulz import orthogonalize
from optim.hybrid_config import rates_from_config, routes_from_config, validate
from optim.roles import FUSED_BLOCKS, HIDDEN_ROLES, check_roles

MAP_NAMES = ("linear", "embed", "adam")


class HybridOptimizer(torch.optim.Optimizer):
    """Role-routed optimizer. named_params: (name, param) pairs; roles: name -> role (optim.roles);
    routes: role -> "linear" | "embed" | "adam"; rates: role -> initial lr. See module docstring."""

    def __init__(self, named_params: Iterable[tuple[str, torch.nn.Parameter]], roles: dict[str, str],
                 routes: dict[str, str], rates: dict[str, float], *, scale: str = "spectral",
                 ns_method: str = "quintic", ns_steps: int | None = None, momentum: float = 0.95,
                 nesterov: bool = True, momentum_warmup_start: float = 0.85, momentum_warmup_steps: int = 0,
                 weight_decay: float = 0.0, adam_betas: tuple[float, float] = (0.9, 0.95),
                 adam_eps: float = 1e-8, adam_weight_decay: float = 0.0, embed_eps: float = 0.0,
                 diag_every: int = 0, process_group: dist.ProcessGroup | None = None,
                 hidden_adam_betas: tuple[float, float] | None = None):
        check_roles(roles)
        by_role: dict[str, list[tuple[str, torch.nn.Parameter]]] = {}
        for name, p in named_params:
            if not p.requires_grad:
                continue
            if name not in roles:
                raise ValueError(f"parameter {name!r} has no role: the model's param_roles() must tag every parameter")
            by_role.setdefault(roles[name], []).append((name, p))
        if not by_role:
            raise ValueError("HybridOptimizer got no trainable parameters")
        groups = []
        for role, items in by_role.items():
            route = routes.get(role)
            if route not in MAP_NAMES:
                raise ValueError(f"role {role!r} (parameter {items[0][0]!r}) has no duality map in the routing "
                                 f"table (got {route!r}; maps: {list(MAP_NAMES)})")
            for name, p in items:
                _check_shape(name, role, route, p)
            lr = float(rates[role])
            # Decay and betas follow the role: hidden matrices keep weight_decay on any map (track 3's AdamW).
            hidden = role in HIDDEN_ROLES
            group = dict(params=[p for _, p in items], names=[n for n, _ in items], role=role, map=route,
                         lr=lr, initial_lr=lr,
                         weight_decay=adam_weight_decay if route == "adam" and not hidden else weight_decay, step=0)
            if route == "adam":
                group["betas"] = tuple(hidden_adam_betas if hidden and hidden_adam_betas else adam_betas)
            groups.append(group)
        defaults = dict(lr=0.0, weight_decay=0.0)
        super().__init__(groups, defaults)
        self.scale, self.ns_method, self.ns_steps = scale, ns_method, ns_steps
        self.momentum, self.nesterov = momentum, nesterov
        self.warmup = (momentum_warmup_start, momentum_warmup_steps)
        self.adam_betas, self.adam_eps, self.embed_eps = tuple(adam_betas), adam_eps, embed_eps
        self.diag_every, self.process_group = diag_every, process_group
        self._diag: dict[str, float] = {}

    # ---- public helpers ------------------------------------------------------------------

    def beta(self, step: int) -> float:
        """Momentum for 1-based optimizer step `step`: linear ramp from the warmup start over
        momentum_warmup_steps (as record 9: 0.85 -> 0.95 over 500 steps), then constant."""
        start, n = self.warmup
        if n <= 0:
            return self.momentum
        frac = min(1.0, (step - 1) / n)
        return (1 - frac) * start + frac * self.momentum

    def diagnostics(self) -> dict[str, float]:
        """Scalars to log after the latest step: filled every diag_every steps, else empty."""
        return dict(self._diag)

    # ---- the step -------------------------------------------------------------------------

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            group["step"] += 1
        t = self.param_groups[0]["step"]
        beta = self.beta(t)
        diag_on = self.diag_every > 0 and t % self.diag_every == 0
        diag: dict[str, float] = {}

        linear_items = []  # (param, group), every rank, same order
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if group["map"] == "adam":
                    d = self._adam(p, group, t)
                    if diag_on:  # elementwise step: its RMS is the meaningful size
                        _accumulate(diag, f"update_rms/{group['role']}", d.pow(2).mean().sqrt() * group["lr"])
                    continue
                buf = self._momentum_buffer(p, beta)  # every rank: keeps the state complete everywhere
                if group["map"] == "embed":
                    d = dualize_embed(self._direction(p, buf, beta), self.embed_eps)
                    self._apply(p, group, d)
                    if diag_on:
                        _accumulate(diag, f"update_norm/{group['role']}", embed_norm(d) * group["lr"])
                else:
                    linear_items.append((p, group))

        rank, world = rank_and_world(self.process_group)
        order = shard_round_robin([p.numel() for p, _ in linear_items], world)
        mine = order[rank]
        outputs, sample = [], None
        for k, i in enumerate(mine):  # only this rank's share: the Newton-Schulz work is split
            p, group = linear_items[i]
            u = self._direction(p, self.state[p]["momentum_buffer"], beta)
            outputs.append(self._dualize_linear(u, group["role"]))
            if diag_on and rank == 0 and k == (t // self.diag_every) % len(mine):
                sample = (group, u)
        if sample is not None:
            diag.update(self._ns_error(*sample))
        updates = gather_updates(outputs, order, [p.shape for p, _ in linear_items], rank, world,
                                 self.process_group)
        for (p, group), d in zip(linear_items, updates):
            self._apply(p, group, d)
            if diag_on and rank == 0:
                _accumulate(diag, f"update_norm/{group['role']}",
                            _linear_norm_blocks(d, group["role"]) * group["lr"])

        if diag_on:
            diag = {k: (v[0] / v[1] if isinstance(v, list) else v) for k, v in diag.items()}
            diag["momentum"] = beta
        self._diag = diag
        return loss

    # ---- pieces ---------------------------------------------------------------------------

    def _momentum_buffer(self, p: torch.Tensor, beta: float) -> torch.Tensor:
        """buf <- beta buf + (1 - beta) g, in fp32 whatever the parameter's dtype."""
        state = self.state[p]
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = torch.zeros_like(p, dtype=torch.float32)
        buf = state["momentum_buffer"]
        buf.lerp_(p.grad.float(), 1 - beta)
        return buf

    def _direction(self, p: torch.Tensor, buf: torch.Tensor, beta: float) -> torch.Tensor:
        """What gets dualized: Nesterov's (1 - beta) g + beta buf, or the buffer itself."""
        return p.grad.float().lerp(buf, beta) if self.nesterov else buf

    def _dualize_linear(self, u: torch.Tensor, role: str) -> torch.Tensor:
        """Linear map of u, per block for fused roles; fp32 result of u's shape."""
        blocks = FUSED_BLOCKS.get(role, 1)
        x = u.view(blocks, u.size(0) // blocks, u.size(1)) if (blocks > 1 and u.ndim == 2) else u
        d = dualize_linear(x, self.scale, self.ns_method, self.ns_steps)
        return d.reshape(u.shape).float()

    def _apply(self, p: torch.Tensor, group: dict, d: torch.Tensor) -> None:
        lr, wd = group["lr"], group["weight_decay"]
        if p.dtype != torch.float32 and p.dtype != torch.float64:
            # Low-precision storage (a bf16 table): decay and step in fp32, rounded once, as fused AdamW does.
            # A separate bf16 decay would be rounded away every step (1 - lr wd is within half an ulp of 1).
            p.copy_(p.float().mul_(1 - lr * wd).add_(d.float(), alpha=-lr))
            return
        if wd:
            p.mul_(1 - lr * wd)
        p.add_(d.to(p.dtype), alpha=-lr)

    def _adam(self, p: torch.Tensor, group: dict, t: int) -> torch.Tensor:
        state = self.state[p]
        if "exp_avg" not in state:
            state["exp_avg"] = torch.zeros_like(p, dtype=torch.float32)
            state["exp_avg_sq"] = torch.zeros_like(p, dtype=torch.float32)
        betas = group.get("betas", self.adam_betas)  # checkpoints from before per-group betas have none
        d = adam_direction(p.grad.float(), state["exp_avg"], state["exp_avg_sq"], t, betas, self.adam_eps)
        self._apply(p, group, d)
        return d

    def _ns_error(self, group: dict, u: torch.Tensor) -> dict[str, float]:
        """Relative error of Newton-Schulz against the exact polar factor on one matrix, and the
        range of the singular values it produced (ideal: all 1)."""
        blocks = FUSED_BLOCKS.get(group["role"], 1)
        x = u.view(blocks, u.size(0) // blocks, u.size(1))[0] if (blocks > 1 and u.ndim == 2) else u
        x = x.reshape(-1, *x.shape[-2:])[0]
        ns = orthogonalize(x, self.ns_method, self.ns_steps).double()
        ref = exact_polar(x.double())
        s = torch.linalg.svdvals(ns)
        k = min(x.shape)
        return {"ns_error": float((ns - ref).norm() / ref.norm().clamp_min(1e-30)),
                "ns_sv_min": float(s[:k].min()), "ns_sv_max": float(s.max())}


def _check_shape(name: str, role: str, route: str, p: torch.Tensor) -> None:
    if route == "embed" and p.ndim != 2:
        raise ValueError(f"parameter {name!r} (role {role!r}) is routed to the embed map but has shape "
                         f"{tuple(p.shape)}; the embed map needs a [vocab, d] table")
    if route == "linear":
        blocks = FUSED_BLOCKS.get(role, 1)
        ok = p.ndim == 2 or (p.ndim == 3 and blocks > 1 and p.size(0) == blocks)
        if not ok or (p.ndim == 2 and p.size(0) % blocks):
            raise ValueError(f"parameter {name!r} (role {role!r}) is routed to the linear map but has shape "
                             f"{tuple(p.shape)}; expected [d_out, d_in]" +
                             (f" with d_out divisible by {blocks} or [{blocks}, d, d_in]" if blocks > 1 else ""))


def _linear_norm_blocks(d: torch.Tensor, role: str) -> float:
    """RMS->RMS norm of a linear update, averaged over the blocks of a fused weight."""
    blocks = FUSED_BLOCKS.get(role, 1)
    x = d.view(blocks, d.size(0) // blocks, d.size(1)) if (blocks > 1 and d.ndim == 2) else d
    return float(linear_norm(x).mean())


def _accumulate(diag: dict, key: str, value) -> None:
    """Running mean over a role's parameters: diag[key] = [sum, count]. Norms are each map's own
    (linear: RMS->RMS operator norm, embed: largest row RMS); Adam's are update RMS."""
    acc = diag.setdefault(key, [0.0, 0])
    acc[0] += float(value)
    acc[1] += 1


def build_hybrid(cfg, named_params: Iterable[tuple[str, torch.nn.Parameter]], roles: dict[str, str]) -> HybridOptimizer:
    """`optim=dual` / `optim=muon`: routes and rates from the config (optim/hybrid_config.py)."""
    validate(cfg)
    named_params = [(n, p) for n, p in named_params if p.requires_grad]
    present = {roles[n] for n, _ in named_params if n in roles}
    routes = routes_from_config(cfg, present)
    n_layer = sum(1 for n, _ in named_params if roles.get(n) == "mlp_out") or 1
    # Embedding tables are [vocab, width]: the width sets a tied table's rate on the Embed map.
    width = next((p.shape[1] for n, p in named_params if roles.get(n) in ("embed_head", "embed") and p.dim() == 2), None)
    rates = rates_from_config(cfg, routes, n_layer, width)
    return HybridOptimizer(
        named_params, roles, routes, rates, scale=cfg.scale, ns_method=cfg.ns_method, ns_steps=cfg.ns_steps,
        momentum=cfg.momentum, nesterov=cfg.nesterov, momentum_warmup_start=cfg.momentum_warmup_start,
        momentum_warmup_steps=cfg.momentum_warmup_steps, weight_decay=cfg.weight_decay,
        adam_betas=tuple(cfg.adam_betas), adam_eps=cfg.adam_eps, adam_weight_decay=cfg.adam_weight_decay,
        embed_eps=cfg.embed_eps, diag_every=cfg.diag_every,
        hidden_adam_betas=tuple(cfg.hidden_adam_betas) if cfg.hidden_adam_betas else None)
