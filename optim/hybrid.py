"""The hybrid optimizer: every parameter is routed by its ROLE to a duality map.

    linear  (hidden matrices; optionally the head):  Nesterov momentum -> Newton-Schulz U V^T, scaled
    embed   (token / position / value embeddings):    Nesterov momentum -> each token row to unit RMS
    adam    (gains, biases, scalars; the head by default): Adam
            (hidden matrices too with hidden_map=adam: track 3's AdamW, with their own betas and decay)

    p <- p (1 - lr wd) - lr * dualize(u),   u = (1 - beta) g + beta buf,  buf <- beta buf + (1 - beta) g
                                            (optim.momentum_form=sum: u = g + beta buf, buf <- beta buf + g)

Routing is a table role -> map built from config (optim/hybrid_config.py), never a shape test:
two weights of the same shape get different maps when they play different roles. Fused weights
(FUSED_BLOCKS, e.g. attn_qkv [3d, d] or [3, d, d]) are orthogonalized per block.

Param groups: one per role, each with "role", "map", "lr", "initial_lr" (the trainer sets
lr = initial_lr * schedule factor), "weight_decay", "betas" (Adam groups), "names" and "step" (optimizer steps taken,
which drives the momentum warmup and Adam's bias correction and travels in state_dict()).

Distributed (torch.distributed initialized, gradients already averaged by DDP): the
linear-map matrices are sorted by size and dealt round-robin, each rank orthogonalizes only its
share and one all_gather brings every update to every rank, so all ranks apply identical updates.
A rank's share is orthogonalized with one batched Newton-Schulz call per matrix shape (Q/K/V blocks
and tall matrices included), not one call per matrix.
The elementwise work (momentum, embed map, Adam) is O(params) and runs on every rank, which keeps
the optimizer state complete and identical everywhere (any rank's state_dict() is a checkpoint).

Switches, off by default: LANTON's layerwise rates (optim/lanton.py; its noise norms are sharded like
Newton-Schulz, then all-reduced), NorMuon (optim/normuon.py; after the gather, on every rank) and
cautious weight decay (optim/cautious.py, in `_apply`).
"""
from __future__ import annotations

import functools
from typing import Callable, Iterable

import torch
import torch.distributed as dist

from optim import lanton
from optim.cautious import cautious_decay_
from optim.distributed import gather_updates, rank_and_world, shard_round_robin
from optim.duality import (adam_direction, dualize_embed, dualize_linear_batched, embed_norm, exact_polar,
                           linear_norm)
from optim.newton_schulz import orthogonalize
from optim.normuon import normuon_
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
                 momentum_form: str = "ema",
                 weight_decay: float = 0.0, adam_betas: tuple[float, float] = (0.9, 0.95),
                 adam_eps: float = 1e-8, adam_weight_decay: float = 0.0, embed_eps: float = 0.0,
                 diag_every: int = 0, process_group: dist.ProcessGroup | None = None,
                 hidden_adam_betas: tuple[float, float] | None = None, lanton: bool = False,
                 lanton_beta: float = 0.95, normuon: bool = False, normuon_beta: float = 0.95,
                 normuon_eps: float = 1e-8, cautious_wd: bool = False):
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
        if momentum_form not in ("ema", "sum"):
            raise ValueError(f"momentum_form={momentum_form!r} must be 'ema' or 'sum'")
        self.momentum, self.nesterov, self.momentum_form = momentum, nesterov, momentum_form
        self.warmup = (momentum_warmup_start, momentum_warmup_steps)
        self.adam_betas, self.adam_eps, self.embed_eps = tuple(adam_betas), adam_eps, embed_eps
        self.diag_every, self.process_group = diag_every, process_group
        # switches (off by default): optim/lanton.py, optim/normuon.py, optim/cautious.py
        self.lanton, self.lanton_beta = lanton, lanton_beta
        self.normuon, self.normuon_beta, self.normuon_eps = normuon, normuon_beta, normuon_eps
        self.cautious_wd = cautious_wd
        self._diag: dict[str, float] = {}
        # A diagnostics step only keeps references (the updates, one sampled direction); the norms and
        # the fp64 SVDs are computed by diagnostics(), which the trainer calls off the training clock.
        self._diag_pending: tuple[list, tuple | None] | None = None
        self._diag_unread = False
        self._diag_lanton: dict[str, torch.Tensor | float] = {}  # LANTON's per-layer rates and noise, 0-dim tensors

    # ---- public helpers ------------------------------------------------------------------

    def beta(self, step: int) -> float:
        """Momentum for 1-based optimizer step `step`: linear ramp from the warmup start over
        momentum_warmup_steps (as record 9: 0.85 -> 0.95 over 500 steps), then constant."""
        start, n = self.warmup
        if n <= 0:
            return self.momentum
        frac = min(1.0, (step - 1) / n)
        return (1 - frac) * start + frac * self.momentum

    def has_diagnostics(self) -> bool:
        """True when the latest step() was a diagnostics step (every diag_every steps, rank 0 only)
        whose diagnostics() have not been read yet."""
        return self._diag_unread

    def diagnostics(self) -> dict[str, float]:
        """Flat name -> float scalars of the latest step, or {} when it was no diagnostics step:
        `update_norm/<role>` (linear, embed maps: each map's own norm times lr), `update_rms/<role>`
        (Adam), `ns_error`, `ns_sv_min`, `ns_sv_max` (one sampled matrix vs its exact polar factor)
        and `momentum`; with optim.lanton also `lanton_lr/<param name>` (that layer's rate) and
        `lanton_noise/<param name>` (its noise estimate, once it has one). The first call after the step does the work (fp64 SVDs, device syncs): call
        it outside the timed region, before the next step()."""
        if self._diag_pending is not None:
            pending, sample = self._diag_pending
            self._diag_pending = None
            diag: dict = {}
            for key, norm, d, lr in pending:
                _accumulate(diag, key, norm(d) * lr)
            self._diag.update({k: v[0] / v[1] for k, v in diag.items()})
            self._diag.update({k: float(v) for k, v in self._diag_lanton.items()})
            self._diag_lanton = {}
            if sample is not None:
                self._diag.update(self._ns_error(*sample))
        self._diag_unread = False
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
        rank, world = rank_and_world(self.process_group)
        diag_on = self.diag_every > 0 and t % self.diag_every == 0 and rank == 0  # rank 0 alone logs
        pending: list = []  # (key, norm function, update, lr): resolved by diagnostics()

        linear_items = []  # (param, group), every rank, same order
        embed_items = []   # (param, group, update): applied with the linear ones, once LANTON's rates are known
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if group["map"] == "adam":
                    d = self._adam(p, group, t)
                    if diag_on:  # elementwise step: its RMS is the meaningful size
                        pending.append((f"update_rms/{group['role']}", _rms, d, group["lr"]))
                    continue
                buf = self._momentum_buffer(p, beta)  # every rank: keeps the state complete everywhere
                if group["map"] == "embed":
                    embed_items.append((p, group, dualize_embed(self._direction(p, buf, beta), self.embed_eps)))
                else:
                    linear_items.append((p, group))

        order = shard_round_robin([p.numel() for p, _ in linear_items], world)
        mine = order[rank]
        dirs, sample = [], None
        noise: list = [None] * len(linear_items)  # LANTON's samples for this rank's share
        for k, i in enumerate(mine):  # only this rank's share: the Newton-Schulz work is split
            p, group = linear_items[i]
            dirs.append(self._direction(p, self.state[p]["momentum_buffer"], beta))
            if self.lanton and "lanton_noise_sq" in self.state[p]:
                noise[i] = self._linear_noise(p, group["role"])
            if diag_on and k == (t // self.diag_every) % len(mine):
                sample = (group, dirs[-1].clone())  # the direction may be the momentum buffer itself (nesterov=false)
        outputs = self._dualize_linear_many(dirs, [linear_items[i][1]["role"] for i in mine])
        updates = gather_updates(outputs, order, [p.shape for p, _ in linear_items], rank, world,
                                 self.process_group)
        factors = lanton.layer_factors(self.state, linear_items, noise, embed_items, self.lanton_beta, world,
                                       self.process_group, self._diag_lanton if diag_on else None) if self.lanton else {}
        for p, group, d in embed_items:
            self._apply(p, group, d, factors.get(p))
            if diag_on:
                pending.append((f"update_norm/{group['role']}", embed_norm, d, _rate(group, factors.get(p))))
        for (p, group), d in zip(linear_items, updates):
            if self.normuon:
                d = self._normuon(p, group["role"], d)
            self._apply(p, group, d, factors.get(p))
            if diag_on:
                pending.append((f"update_norm/{group['role']}", functools.partial(_linear_norm_blocks, role=group["role"]),
                                d, _rate(group, factors.get(p))))

        self._diag = {"momentum": beta} if diag_on else {}
        self._diag_pending = (pending, sample) if diag_on else None
        self._diag_unread = diag_on
        return loss

    # ---- pieces ---------------------------------------------------------------------------

    def _momentum_buffer(self, p: torch.Tensor, beta: float) -> torch.Tensor:
        """buf <- beta buf + (1 - beta) g (ema) or beta buf + g (sum), in fp32 whatever the parameter's dtype."""
        state = self.state[p]
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = torch.zeros_like(p, dtype=torch.float32)
        buf = state["momentum_buffer"]
        if self.momentum_form == "sum":
            buf.mul_(beta).add_(p.grad.float())
        else:
            buf.lerp_(p.grad.float(), 1 - beta)
        return buf

    def _direction(self, p: torch.Tensor, buf: torch.Tensor, beta: float) -> torch.Tensor:
        """What gets dualized: Nesterov's (1 - beta) g + beta buf (sum: g + beta buf), or the buffer itself."""
        if not self.nesterov:
            return buf
        if self.momentum_form == "sum":
            return p.grad.float().add(buf, alpha=beta)
        return p.grad.float().lerp(buf, beta)

    def _dualize_linear(self, u: torch.Tensor, role: str) -> torch.Tensor:
        """Linear map of u, per block for fused roles; fp32 result of u's shape."""
        return self._dualize_linear_many([u], [role])[0]

    def _dualize_linear_many(self, us: list[torch.Tensor], roles: list[str]) -> list[torch.Tensor]:
        """Linear map of each u (per block for fused roles), Newton-Schulz batched over same-shape
        matrices: one call per shape instead of one per matrix. fp32 results of the u's shapes."""
        views = []
        for u, role in zip(us, roles):
            blocks = FUSED_BLOCKS.get(role, 1)
            views.append(u.view(blocks, u.size(0) // blocks, u.size(1)) if (blocks > 1 and u.ndim == 2) else u)
        ds = dualize_linear_batched(views, self.scale, self.ns_method, self.ns_steps)
        return [d.reshape(u.shape).float() for d, u in zip(ds, us)]

    def _apply(self, p: torch.Tensor, group: dict, d: torch.Tensor, factor: torch.Tensor | None = None) -> None:
        """p <- p (1 - lr wd) - lr d, at the layer's rate lr * factor when LANTON gives one (0-dim tensor);
        with cautious_wd the decay only where d and p agree in sign."""
        lr, wd = group["lr"], group["weight_decay"]
        if factor is not None:
            d = d * factor
        decay = lr * wd if factor is None else lr * wd * factor
        if p.dtype != torch.float32 and p.dtype != torch.float64:
            # Low-precision storage (a bf16 table): decay and step in fp32, rounded once, as fused AdamW does.
            # A separate bf16 decay would be rounded away every step (1 - lr wd is within half an ulp of 1).
            w = p.float()
            if wd and self.cautious_wd:
                cautious_decay_(w, d, decay)
            elif wd:
                w.mul_(1 - decay)
            p.copy_(w.add_(d.float(), alpha=-lr))
            return
        if wd:
            if self.cautious_wd:
                cautious_decay_(p, d, decay)
            else:
                p.mul_(1 - decay)
        p.add_(d.to(p.dtype), alpha=-lr)

    def _blocks(self, x: torch.Tensor, role: str) -> torch.Tensor:
        """x viewed as [blocks, d_out / blocks, d_in] for a fused 2-D weight, else x itself."""
        blocks = FUSED_BLOCKS.get(role, 1)
        return x.view(blocks, x.size(0) // blocks, x.size(1)) if (blocks > 1 and x.ndim == 2) else x

    def _linear_noise(self, p: torch.Tensor, role: str) -> torch.Tensor:
        """LANTON's sample for a linear-map layer: dual norm of G - B_t, per block (optim/lanton.py)."""
        residual = p.grad.float() - self.state[p]["momentum_buffer"]
        return lanton.linear_dual_norm_estimate(self._blocks(residual, role), self.ns_method, self.ns_steps)

    def _normuon(self, p: torch.Tensor, role: str, d: torch.Tensor) -> torch.Tensor:
        """NorMuon's per-row normalization of a linear-map update, per block (optim/normuon.py)."""
        out = normuon_(self._blocks(d, role), self.state[p], self.normuon_beta, self.normuon_eps, self.scale)
        return out.reshape(d.shape)

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


def _rate(group: dict, factor: torch.Tensor | None) -> float:
    """A layer's rate: its group's lr, times LANTON's multiplier when there is one (a 0-dim tensor under LANTON)."""
    return group["lr"] * factor if factor is not None else group["lr"]


def _rms(d: torch.Tensor) -> torch.Tensor:
    return d.pow(2).mean().sqrt()


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
        momentum_warmup_steps=cfg.momentum_warmup_steps, momentum_form=cfg.momentum_form,
        weight_decay=cfg.weight_decay,
        adam_betas=tuple(cfg.adam_betas), adam_eps=cfg.adam_eps, adam_weight_decay=cfg.adam_weight_decay,
        embed_eps=cfg.embed_eps, diag_every=cfg.diag_every,
        hidden_adam_betas=tuple(cfg.hidden_adam_betas) if cfg.hidden_adam_betas else None,
        lanton=cfg.lanton, lanton_beta=cfg.lanton_beta, normuon=cfg.normuon, normuon_beta=cfg.normuon_beta,
        normuon_eps=cfg.normuon_eps, cautious_wd=cfg.cautious_wd)
