"""The hybrid optimizer: every parameter is updated by the duality map of its ROLE.

What update a weight gets is written in one place, its map's module: find its role's map in the
routing table (optim/roles.py: e.g. attn_q -> optim.hidden_map -> "linear"), then read that map's
`direction` (optim/maps/linear.py, embed.py, adam.py): momentum, Nesterov, the duality map and the
switches that act on it, top to bottom. This class only does what spans parameters:

- builds one param group per role from the routing table, with its rate, decay and Adam betas;
- steps the momentum schedule (`beta`: warm-up and cool-down, optim/momentum_schedule.py), the same for every map;
- schedules the linear map's Newton-Schulz work: the matrices are dealt round-robin by size over the
  ranks (optim/distributed.py), each rank orthogonalizes its share with one batched call per shape
  (Q/K/V blocks included) and one all_gather brings every U V^T to every rank;
- runs the stages that span parameters (optim/stages/, registry order): the layer_rates stages (per-layer
  rate factors, e.g. LANTON) once every direction is known, the around_step stages of the linear-map
  weights (e.g. the radius pin) and the decay stage (e.g. cautious decay);
- applies p <- p (1 - lr wd) - lr d, at each layer's rate;
- keeps diagnostics (optim.diag_every), computed off the training clock by `diagnostics()`.

Param groups: one per role, each with "role", "map", "lr", "initial_lr" (the trainer sets lr = initial_lr *
schedule factor), "weight_decay", "betas" (Adam groups; "bias_correction": False on the roles of
optim.adam_no_bias_correction_roles), "names" and "step" (optimizer steps taken, which
drives the momentum warmup and Adam's bias correction and travels in state_dict()); "lr_mul" where
optim.role_lr_mul sets one. With optim.adam_every = k > 1 the Adam-routed groups step only when step % k == 0
(1-based: records 43-46's odd 0-based steps), Adam's bias correction counting its own steps (step // k), and
zero_grad() keeps their gradients in between, so each Adam step sees the sum of k steps' gradients. Under
torch.distributed (gradients already averaged by DDP) everything but Newton-Schulz runs on every rank,
which keeps the optimizer state complete and identical everywhere (any rank's state_dict() is a checkpoint).
"""
from __future__ import annotations

from typing import Any, Callable, Iterable

import torch

from optim.distributed import gather_updates, rank_and_world, shard_round_robin
from optim.hybrid_config import adam_settings, rates_from_config, validate
from optim.maps import MAPS, AdamMap, EmbedMap, LinearMap
from optim.maps.linear import block_shape
from optim.momentum_schedule import momentum_at
from optim.roles import HIDDEN_ROLES, check_roles, route
from optim.stages import active
from optim.stages.base import StepContext, plain_decay_


class HybridOptimizer(torch.optim.Optimizer):
    """Role-routed optimizer. named_params: (name, param) pairs; roles: name -> role (optim.roles);
    cfg: the optim config (DualConfig / MuonConfig fields); routes: role -> "linear" | "embed" | "adam";
    rates: role -> initial lr. `build_hybrid` derives routes and rates from cfg."""

    def __init__(self, named_params: Iterable[tuple[str, torch.nn.Parameter]], roles: dict[str, str], cfg: Any,
                 routes: dict[str, str], rates: dict[str, float]):
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
        adam = adam_settings(cfg, routes)
        for role, items in by_role.items():
            route_ = routes.get(role)
            if route_ not in MAPS:
                raise ValueError(f"role {role!r} (parameter {items[0][0]!r}) has no duality map in the routing "
                                 f"table (got {route_!r}; maps: {list(MAPS)})")
            for name, p in items:
                MAPS[route_].check_shape(name, role, p)
            lr = float(rates[role])
            # Decay and betas follow the role: hidden matrices keep weight_decay on any map (track 3's AdamW).
            hidden = role in HIDDEN_ROLES
            wd = cfg.adam_weight_decay if route_ == "adam" and not hidden else cfg.weight_decay
            group = dict(params=[p for _, p in items], names=[n for n, _ in items], role=role, map=route_,
                         lr=lr, initial_lr=lr, weight_decay=wd * float((cfg.role_wd_mul or {}).get(role, 1.0)),
                         step=0)
            if role in (cfg.role_lr_mul or {}):  # the key only where set (decay_lr_scaled divides it out)
                group["lr_mul"] = float(cfg.role_lr_mul[role])
            if route_ == "adam":
                group["betas"], correct = adam[role]
                if not correct:  # the key only where it is off: every other group (and checkpoint) stays as it was
                    group["bias_correction"] = False
            groups.append(group)
        super().__init__(groups, dict(lr=0.0, weight_decay=0.0))
        self.linear, self.embed, self.adam = LinearMap(cfg), EmbedMap(cfg), AdamMap(cfg)
        self.momentum, self.warmup = cfg.momentum, (cfg.momentum_warmup_start, cfg.momentum_warmup_steps)
        self.cooldown = (cfg.momentum_cooldown_end, cfg.momentum_cooldown_steps, cfg.momentum_horizon, cfg.momentum_ramp)
        # the stages that span parameters (the per-matrix ones run inside the linear map): optim/stages/
        self.layer_rates = active(cfg, "layer_rates")
        self.around_step = active(cfg, "around_step")  # linear-map weights only
        self.decay = next(iter(active(cfg, "decay")), plain_decay_)
        self.diag_every = cfg.diag_every
        self.adam_every, self.decay_lr_scaled = cfg.adam_every, cfg.decay_lr_scaled
        self._held: set[int] = set()  # param groups (indices) whose gradients the latest step() left to accumulate
        self._pending: set[int] = set()  # those whose gradients zero_grad() kept: the next backward adds to them
        self._diag: dict[str, float] = {}
        # A diagnostics step only keeps references (the updates, one sampled Newton-Schulz input); the norms
        # and the fp64 SVDs are computed by diagnostics(), which the trainer calls off the training clock.
        self._diag_pending: tuple[list, torch.Tensor | None] | None = None
        self._diag_unread = False
        self._diag_stages: dict[str, torch.Tensor | float] = {}  # stages' diagnostics (LANTON's), 0-dim tensors

    # ---- public helpers ------------------------------------------------------------------

    def beta(self, step: int) -> float:
        """Momentum for 1-based optimizer step `step`: linear ramp from the warmup start over
        momentum_warmup_steps (as record 9: 0.85 -> 0.95 over 500 steps), then constant, then (with
        momentum_cooldown_steps) the cool-down over the horizon's last steps (optim/momentum_schedule.py)."""
        start, n = self.warmup
        end, cooldown, horizon, form = self.cooldown
        return momentum_at(step - 1, self.momentum, start, n, end, cooldown, horizon, form)

    def has_diagnostics(self) -> bool:
        """True when the latest step() was a diagnostics step (every diag_every steps, rank 0 only)
        whose diagnostics() have not been read yet."""
        return self._diag_unread

    def diagnostics(self) -> dict[str, float]:
        """Flat name -> float scalars of the latest step, or {} when it was no diagnostics step:
        `update_norm/<role>` (linear, embed maps: each map's own norm times lr, averaged over the role's
        parameters and a fused weight's blocks), `update_rms/<role>` (Adam), `ns_error`, `ns_sv_min`,
        `ns_sv_max` (one sampled matrix vs its exact polar factor) and `momentum`; with optim.lanton also
        `lanton_lr/<param name>` (that layer's rate) and `lanton_noise/<param name>` (its noise estimate,
        once it has one). The first call after the step does the work (fp64 SVDs, device syncs): call it
        outside the timed region, before the next step()."""
        if self._diag_pending is not None:
            pending, sample = self._diag_pending
            self._diag_pending = None
            sums: dict[str, list] = {}
            for key, norm, d, lr in pending:
                acc = sums.setdefault(key, [0.0, 0])
                acc[0] += float(norm(d).mean() * lr)
                acc[1] += 1
            self._diag.update({k: total / n for k, (total, n) in sums.items()})
            self._diag.update({k: float(v) for k, v in self._diag_stages.items()})
            self._diag_stages = {}
            if sample is not None:
                self._diag.update(self.linear.ns_error(sample))
        self._diag_unread = False
        return dict(self._diag)

    def state_dict(self) -> dict:
        """torch's state_dict, plus the gradients zero_grad() kept for accumulation (optim.adam_every: after an
        even step of records 43-46 the Adam groups hold one step's gradient that the next adds to), so a
        checkpoint taken between two Adam steps resumes exactly."""
        out = super().state_dict()
        if self._pending:
            out["pending_grads"] = {i: [None if p.grad is None else p.grad.detach().clone() for p in
                                        self.param_groups[i]["params"]] for i in sorted(self._pending)}
        return out

    def load_state_dict(self, state_dict: dict) -> None:
        """torch's load_state_dict, except that state tensors keep the dtype they were saved in. torch
        casts them to their parameter's dtype, so a bf16 table's fp32 moments (every map keeps fp32
        state, but Adam's with optim.adam_state_dtype=bf16) would come back bf16, and the resumed step would fail mixing them with the fp32 gradient."""
        state_dict = dict(state_dict)
        pending = state_dict.pop("pending_grads", {})
        super().load_state_dict(state_dict)
        # A gradient kept for accumulation (optim.adam_every) belongs to the state being replaced (e.g. the
        # trainer's compile warm-up, undone by loading the saved state): the loaded state has its own or none.
        for i in self._pending | self._held:
            for p in self.param_groups[i]["params"]:
                p.grad = None
        self._pending, self._held = {int(i) for i in pending}, set()
        for i, grads in pending.items():
            for p, g in zip(self.param_groups[int(i)]["params"], grads):
                p.grad = None if g is None else g.to(device=p.device, dtype=p.dtype, copy=True)
        saved_ids = [i for g in state_dict["param_groups"] for i in g["params"]]
        params = [p for g in self.param_groups for p in g["params"]]
        for i, p in zip(saved_ids, params):
            for key, value in state_dict["state"].get(i, {}).items():
                if torch.is_tensor(value) and value.is_floating_point() and value.dtype != self.state[p][key].dtype:
                    self.state[p][key] = value.to(device=p.device, copy=True)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """torch's zero_grad, except for the groups the latest step() did not step (the Adam-routed ones between
        their steps, with optim.adam_every > 1): their gradients are kept so the next backward adds to them, as
        records 43-46 zero only NorMuon's gradients after an even step. Only the first call after a step()
        keeps them: the loop calls zero_grad once per step; a second call (or one with no step() before it,
        e.g. a skipped non-finite step) clears everything, and so does load_state_dict()."""
        held, self._held = self._held, set()
        self._pending = held
        for i, group in enumerate(self.param_groups):
            if i in held:
                continue
            for p in group["params"]:
                if p.grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                else:
                    p.grad.detach_()
                    p.grad.zero_()

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
        rank, world = rank_and_world()
        diag_on = self.diag_every > 0 and t % self.diag_every == 0 and rank == 0  # rank 0 alone logs
        adam_now = t % self.adam_every == 0  # optim.adam_every: Adam's own step count is t // adam_every
        self._pending = set()
        self._held = set() if adam_now else {i for i, g in enumerate(self.param_groups) if g["map"] == "adam"}
        pending: list = []  # (key, norm function, update, lr): resolved by diagnostics()

        linear = []  # (param, group), every rank, same order
        embed = []   # (param, group, update): applied with the linear ones, once the rate factors are known
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if group["map"] == "adam":
                    if not adam_now:
                        continue
                    d = self.adam.direction(p, self.state[p], t // self.adam_every, group["betas"],
                                            group.get("bias_correction", True), group["lr"])
                    self._apply(p, group, d)
                    if diag_on:  # elementwise step: its RMS is the meaningful size
                        pending.append((f"update_rms/{group['role']}", _rms, d, group["lr"]))
                elif group["map"] == "embed":
                    embed.append((p, group, self.embed.direction(p, self.state[p], beta)))
                else:
                    linear.append((p, group))

        updates, mine, sample = self._linear_directions(linear, beta, rank, world, diag_on, t)
        factors: dict = {}  # param -> 0-dim rate factor from the layer_rates stages (absent: 1)
        if self.layer_rates:
            ctx = StepContext(self.state, linear, embed, mine, world, self.linear, self.embed,
                              self._diag_stages if diag_on else None)
            for stage in self.layer_rates:
                for p, m in stage(ctx).items():
                    factors[p] = factors[p] * m if p in factors else m
        for p, group, d in embed:
            self._apply(p, group, d, factors.get(p))
            if diag_on:
                pending.append((f"update_norm/{group['role']}", EmbedMap.norm, d, _rate(group, factors.get(p))))
        for (p, group), d in zip(linear, updates):
            self._apply(p, group, d, factors.get(p), self.around_step)
            if diag_on:
                pending.append((f"update_norm/{group['role']}", LinearMap.norm, d.view(block_shape(d.shape, group["role"])),
                                _rate(group, factors.get(p))))

        self._diag = {"momentum": beta} if diag_on else {}
        self._diag_pending = (pending, sample) if diag_on else None
        self._diag_unread = diag_on
        return loss

    def _linear_directions(self, items: list, beta: float, rank: int, world: int, diag_on: bool, t: int):
        """Every linear-map weight's direction, in `items` order, on every rank. Each weight's rule
        (LinearMap.direction, a generator) runs up to its Newton-Schulz input; this rank orthogonalizes its
        share of the inputs, batched per shape; one all_gather brings every U V^T to every rank, and each
        rule finishes with its own. Also returns the indices into `items` this rank orthogonalized (its share)
        and, on a diagnostics step, one Newton-Schulz input to check (or None)."""
        rules = [self.linear.direction(p, self.state[p], beta, group["role"], t - 1) for p, group in items]
        make_inputs = [next(rule) for rule in rules]
        deal = shard_round_robin([p.numel() for p, _ in items], world)
        if self.linear.before_ns:  # every rank runs the before_ns stages, so their state is complete everywhere
            share = set(deal[rank])
            kept = {}
            for i, make in enumerate(make_inputs):
                u = make()
                if i in share:  # another rank's input is dropped at once: one transient matrix at a time
                    kept[i] = u
            mine = [kept[i] for i in deal[rank]]
        else:
            mine = [make_inputs[i]() for i in deal[rank]]
        # the input may be the momentum buffer itself (nesterov=false), which the next step changes
        sample = mine[(t // self.diag_every) % len(mine)].clone() if diag_on and mine else None
        shapes = [block_shape(p.shape, group["role"]) for p, group in items]
        polars = gather_updates(self.linear.orthogonalize(mine), deal, shapes, rank, world)
        return [_finish(rule, polar) for rule, polar in zip(rules, polars)], deal[rank], sample

    def _apply(self, p: torch.Tensor, group: dict, d: torch.Tensor, factor: torch.Tensor | None = None,
               around: list | tuple = ()) -> None:
        """p <- p (1 - lr wd) - lr d, at the layer's rate lr * factor when a layer_rates stage gives one (0-dim
        tensor); the decay by the decay stage when one is on (optim/stages/), else p <- p (1 - lr wd).
        around: the around_step stages (linear-map weights): each sees p before the step, and what it
        returns runs after it."""
        lr, wd = group["lr"], group["weight_decay"]
        if self.decay_lr_scaled and group["map"] != "adam":  # records 43-46's NorMuon: the coefficient is lr wd
            wd = wd * (lr / group.get("lr_mul", 1.0))          # itself, at the rate before lr_mul (not DistAdam's)
        if factor is not None:
            d = d * factor
        decay = lr * wd if factor is None else lr * wd * factor
        if around:
            w = p if p.dtype in (torch.float32, torch.float64) else p.float()
            afters = [stage(w, d, lr) for stage in around]
            if wd:
                self.decay(w, d, decay, lr)
            w.add_(d.to(w.dtype), alpha=-lr)
            for after in afters:
                after()
            if w is not p:
                p.copy_(w)
            return
        if p.dtype != torch.float32 and p.dtype != torch.float64:
            # Low-precision storage (a bf16 table): decay and step in fp32, rounded once, as fused AdamW does.
            # A separate bf16 decay would be rounded away every step (1 - lr wd is within half an ulp of 1).
            w = p.float()
            if wd:
                self.decay(w, d, decay, lr)
            p.copy_(w.add_(d.float(), alpha=-lr))
            return
        if wd:
            self.decay(p, d, decay, lr)
        p.add_(d.to(p.dtype), alpha=-lr)


def _finish(rule, polar: torch.Tensor) -> torch.Tensor:
    """Send a direction generator its U V^T and return what it returns."""
    try:
        rule.send(polar)
    except StopIteration as done:
        return done.value
    raise RuntimeError("a map's direction must return after receiving its polar factor")


def _rate(group: dict, factor: torch.Tensor | None) -> float:
    """A layer's rate: its group's lr, times its layer_rates factor when there is one (a 0-dim tensor)."""
    return group["lr"] * factor if factor is not None else group["lr"]


def _rms(d: torch.Tensor) -> torch.Tensor:
    return d.pow(2).mean().sqrt()


def build_hybrid(cfg: Any, named_params: Iterable[tuple[str, torch.nn.Parameter]], roles: dict[str, str]
                 ) -> HybridOptimizer:
    """`optim=dual` / `optim=muon`: routes (optim/roles.py) and rates (optim/hybrid_config.py) from the config."""
    validate(cfg)
    check_roles(roles)
    named_params = [(n, p) for n, p in named_params if p.requires_grad]
    present = {roles[n] for n, _ in named_params if n in roles}
    routes = route(cfg, present)
    n_layer = sum(1 for n, _ in named_params if roles.get(n) == "mlp_out") or 1
    # Embedding tables are [vocab, width]: the width sets a tied table's rate on the Embed map.
    width = next((p.shape[1] for n, p in named_params if roles.get(n) in ("embed_head", "embed") and p.dim() == 2), None)
    head_d_in = next((p.shape[1] for n, p in named_params if roles.get(n) == "head" and p.dim() == 2), None)
    return HybridOptimizer(named_params, roles, cfg, routes, rates_from_config(cfg, routes, n_layer, width, head_d_in))
