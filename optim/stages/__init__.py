"""The hybrid optimizer's stages: optional steps of the update, each switched on by one config key.

STAGES below is the registry: a stage declares itself in its own module (optim/stages/base.py says
what a declaration holds and which hook points there are) and is listed here once. From this list
the optim schema gets each stage's keys (`StageKeys`, a base of optim/hybrid_config.py's DualConfig,
so `optim.normuon=true`, `optim.normuon_beta=...` are ordinary schema keys), validation runs each
stage's checks (`check_stages`) and the optimizer picks the stages that are on (`active`).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import field, make_dataclass
from functools import partial
from typing import Any

from optim.stages import (
    cautious,
    cautious_post,
    lanton,
    normuon,
    radial,
    radius_pin,
    soap,
    uw_floor,
)
from optim.stages.base import HOOKS, RANGES, Stage

# The registry, in application order within a hook point (after_ns: NorMuon, then #46's radial brake, then
# its floor; around_step: the radius pin, then #46's cautious decay, which acts on the pinned weight).
STAGES: tuple[Stage, ...] = (soap.STAGE, normuon.STAGE, radial.STAGE, uw_floor.STAGE, lanton.STAGE,
                             radius_pin.STAGE, cautious_post.STAGE, cautious.STAGE)


def _stage_keys(stages: tuple[Stage, ...]) -> type:
    """A dataclass holding every stage's switch (bool, off) and its keys, with their defaults."""
    fields: list[tuple[str, type, Any]] = []
    for stage in stages:
        fields.append((stage.name, bool, field(default=False)))
        # a list default (e.g. a stage's roles) must be a factory: each config gets its own copy
        fields.extend((key.name, key.type, field(default_factory=partial(list, key.default)) if isinstance(
            key.default, list) else field(default=key.default)) for key in stage.keys)
    names = [name for name, _, _ in fields]
    clash = sorted({n for n in names if names.count(n) > 1})
    if clash:
        raise ValueError(f"optim stages declare the same config key twice: {clash}")
    keys = make_dataclass("StageKeys", fields)
    keys.__module__ = __name__  # pickled by reference (found as optim.stages.StageKeys), as any schema
    return keys


StageKeys = _stage_keys(STAGES)
StageKeys.__doc__ = "The switches and keys of every registered stage (optim/stages/): " + "; ".join(
    f"{s.name}: {s.doc}" for s in STAGES)


def check_stages(cfg: Any) -> None:
    """Every stage's own checks, then: at most one decay stage on (each replaces the same decay)."""
    for stage in STAGES:
        for key in stage.keys:
            value = getattr(cfg, key.name)
            if key.range is not None and not RANGES[key.range](value):
                raise ValueError(f"optim.{key.name}={value} must be {key.range}")
        if stage.check is not None:
            stage.check(cfg)
    decays = [s.name for s in STAGES if s.hook == "decay" and getattr(cfg, s.name)]
    if len(decays) > 1:
        raise ValueError(f"optim.{decays[0]} and optim.{decays[1]} both replace the weight decay: turn one off")


def active(cfg: Any, hook: str) -> list[Callable]:
    """The functions to run at `hook` for this config: those of the stages that are on, in registry order."""
    if hook not in HOOKS:
        raise ValueError(f"unknown hook {hook!r}; hooks: {HOOKS}")
    return [s.build(cfg) for s in STAGES if s.hook == hook and getattr(cfg, s.name)]


__all__ = ["STAGES", "Stage", "StageKeys", "active", "check_stages"]
