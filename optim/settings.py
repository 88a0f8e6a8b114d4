"""Every param group's effective settings, one flat record per group, from the optimizer and its config:
what `python -m tools.describe` can print per group, and what a record's optimizer is read against its
script's (records 29-46: configs/optim/record29.yaml, record43.yaml, record46.yaml; the scripts' NorMuon /
Muon and DistAdam settings are per parameter: lr x lr_mul, wd x wd_mul, betas, eps, which steps).

`group_settings(cfg, optimizer)` -> [{key: value}], one dict per param group, in group order, with:
    role, map, tensors, elements   the group (optim/roles.py's role; "linear" | "embed" | "adam")
    lr                             the initial rate, role_lr_mul included (the trainer scales it by the schedule)
    lr_mul                         optim.role_lr_mul's factor (1.0 when unset)
    weight_decay                   the group's coefficient (role_wd_mul included)
    decay                          "none" | "decoupled" | the decay stage's name (e.g. "cautious_wd"), with
                                   " x lr/lr_mul" under optim.decay_lr_scaled (records 43-46: ~lr^2)
    linear and embed maps:         momentum ("0.95 nesterov, 0.85->0.95 over 300, ->0.85 over last 50 of 2245")
    linear map:                    ns ("polar_express x5"), scale, update ("fp32" | "bf16"), stages (the
                                   per-matrix stages that are on, e.g. "normuon(records43)"), every (1)
    adam map:                      betas, eps, correction ("torch" | "step_size" | "none"), every (adam_every),
                                   state (the moments' dtype, "fp32" | "bf16")
Values are plain Python numbers and strings. Only the role-routed optimizer (optim/hybrid.py) has groups of
this kind; any other optimizer's groups get role/lr/weight_decay/betas/eps as torch keeps them.
"""
from __future__ import annotations

from typing import Any

import torch

from optim.newton_schulz import schedule
from optim.stages import STAGES


def _momentum(cfg: Any) -> str:
    text = f"{cfg.momentum:g}" + (" nesterov" if cfg.nesterov else "")
    if cfg.momentum_warmup_steps:
        text += f", {cfg.momentum_warmup_start:g}->{cfg.momentum:g} over {cfg.momentum_warmup_steps}"
    if cfg.momentum_cooldown_steps:
        text += (f", ->{cfg.momentum_cooldown_end:g} over last {cfg.momentum_cooldown_steps} of "
                 f"{cfg.momentum_horizon}")
    return text


def _decay(cfg: Any, group: dict) -> str:
    if not group.get("weight_decay"):
        return "none"
    name = next((s.name for s in STAGES if s.hook == "decay" and getattr(cfg, s.name)), "decoupled")
    return name + (" x lr/lr_mul" if cfg.decay_lr_scaled and group["map"] != "adam" else "")


def group_settings(cfg: Any, optimizer: torch.optim.Optimizer) -> list[dict[str, Any]]:
    """One record per param group (see the module docstring). cfg: the optim config the optimizer was built from."""
    groups = getattr(optimizer, "inner", optimizer).param_groups  # optim.lookahead wraps the optimizer
    out = []
    for i, g in enumerate(groups):
        rec: dict[str, Any] = {"role": g.get("role", str(i)), "map": g.get("map", type(optimizer).__name__),
                               "tensors": len(g["params"]), "elements": sum(p.numel() for p in g["params"]),
                               "lr": float(g.get("initial_lr", g["lr"])), "lr_mul": float(g.get("lr_mul", 1.0)),
                               "weight_decay": float(g.get("weight_decay", 0.0))}
        if "map" not in g:  # a torch optimizer (optim=adamw)
            rec.update({k: g[k] for k in ("betas", "eps") if k in g})
            out.append(rec)
            continue
        rec["decay"] = _decay(cfg, g)
        if g["map"] == "adam":
            correction = cfg.adam_correction if g.get("bias_correction", True) else "none"
            rec.update(betas=tuple(float(b) for b in g["betas"]), eps=float(cfg.adam_eps), correction=correction,
                       every=int(cfg.adam_every), state=cfg.adam_state_dtype)
        else:
            rec["momentum"] = _momentum(cfg)
        if g["map"] == "linear":
            per_matrix = [s for s in STAGES if s.hook in ("before_ns", "after_ns") and getattr(cfg, s.name)]
            rec.update(ns=f"{cfg.ns_method} x{len(schedule(cfg.ns_method, cfg.ns_steps))}", scale=cfg.scale,
                       update="bf16" if cfg.update_bf16 else "fp32", every=1,
                       stages=", ".join(s.name + (f"({cfg.normuon_form})" if s.name == "normuon" else "")
                                          for s in per_matrix) or "none")
        out.append(rec)
    return out
