"""Arms of the optimizer benchmark (benchmarks/optim/run.py): named override sets over a base experiment.

An arm is a list of train.py overrides applied after the base (`experiment=...` and the benchmark's
common settings). The built-in table covers issue 13: the baselines, `dual`, one ablation per
difference between `dual` and Muon (each ONE change of `optim=dual`, tested in
tests/unit/benchmarks/test_optim_ablations.py to change only that), and `dual` plus each switch alone and together.

A value "@ARM" copies that arm's resolved value of the same key (so "(d) Muon's head and scalar
rates" follows whatever the base experiment gives Muon). `resolve_arms` composes every arm's full
config with Hydra exactly as train.py would, validates it (a bad arm fails before any run starts,
naming the arm), and marks an arm whose composed config equals an earlier arm's as an alias of it:
it is reported, not run twice.
"""
from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass, field

from common.paths import REPO as ROOT

# name -> (overrides on top of the base experiment, what the arm measures). The "muon" and "adamw" arms
# are the generic presets; on track 3 the benchmark redefines them as the scripts' own optimizers
# (--arm muon=optim=track3_muon, see README), and every ablation follows them through "@muon".
ARMS: dict[str, tuple[list[str], str]] = {
    "adamw": (["optim=adamw"], "AdamW baseline"),
    "muon": (["optim=muon"], "tuned Muon: the reference"),
    "dual": (["optim=dual"], "modular dualization (ours)"),
    "dual-adam-embed": (["optim=dual", "optim.embed_map=adam", "optim.embed_lr=@muon"],
                        "(a) Adam on the embeddings at Muon's rate, not the Embed map"),
    "dual-muon-scale": (["optim=dual", "optim.scale=@muon"], "(b) Muon's scale sqrt(max(1, d_out/d_in)), not sqrt(d_out/d_in)"),
    "dual-muon-ns": (["optim=dual", "optim.ns_method=@muon", "optim.ns_steps=@muon"],
                     "(c) Muon's Newton-Schulz iteration, not Polar Express"),
    "dual-muon-rates": (["optim=dual", "optim.head_lr=@muon", "optim.scalar_lr=@muon"],
                        "(d) Muon's head and scalar (gain, bias) rates"),
    "dual-muon-wd": (["optim=dual", "optim.weight_decay=@muon", "optim.adam_weight_decay=@muon"],
                     "(e) Muon's weight decay (linear/embed maps and Adam groups)"),
    "dual-muon-warmup": (["optim=dual", "optim.momentum_warmup_steps=@muon"], "(f) Muon's momentum warmup"),
    "dual-lanton": (["optim=dual", "optim.lanton=true"], "dual + noise-adaptive layerwise rates (LANTON)"),
    "dual-normuon": (["optim=dual", "optim.normuon=true"], "dual + NorMuon's per-row normalization"),
    "dual-cwd": (["optim=dual", "optim.weight_decay=@muon", "optim.adam_weight_decay=@muon", "optim.cautious_wd=true"],
                 "dual + Muon's weight decay, made cautious (compare with (e))"),
    "dual-all": (["optim=dual", "optim.lanton=true", "optim.normuon=true", "optim.weight_decay=@muon",
                  "optim.adam_weight_decay=@muon", "optim.cautious_wd=true"],
                 "dual + all three switches (cautious decay at Muon's decay)"),
}
ABLATIONS = {"a": "dual-adam-embed", "b": "dual-muon-scale", "c": "dual-muon-ns", "d": "dual-muon-rates",
             "e": "dual-muon-wd", "f": "dual-muon-warmup"}


@dataclass
class Arm:
    name: str
    overrides: list[str]                 # final overrides (references resolved, extras appended)
    description: str = ""
    config: dict = field(default_factory=dict)  # the composed run config (plain containers)
    alias_of: str | None = None          # an earlier arm with the identical composed config


def parse_arm_specs(specs: list[str]) -> dict[str, tuple[list[str], str]]:
    """--arm 'NAME=override;override' entries -> table entries (a built-in name is redefined)."""
    table = {}
    for spec in specs:
        name, sep, rest = spec.partition("=")
        overrides = [o.strip() for o in rest.split(";") if o.strip()]
        if not sep or not name or not overrides or not name.replace("-", "").replace("_", "").isalnum():
            raise SystemExit(f"--arm {spec!r}: expected NAME=override;override... with NAME of letters, digits, - and _")
        table[name] = (overrides, "user-defined: " + " ".join(overrides))
    return table


def extras_for(name: str, extra: list[str]) -> list[str]:
    """The --extra 'GLOB:override' entries whose glob matches the arm name, in order."""
    out = []
    for item in extra:
        pattern, sep, override = item.partition(":")
        if not sep or not override:
            raise SystemExit(f"--extra {item!r}: expected GLOB:override, e.g. 'dual*:optim.weight_decay=0.05'")
        if fnmatch.fnmatchcase(name, pattern):
            out.append(override)
    return out


def compose(overrides: list[str]) -> dict:
    """The run config train.py would get from these overrides, validated, as plain containers.
    Raises ValueError (one line, naming the key) on a bad override or value."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from harness.config.schema import load_config, register_configs

    register_configs()
    try:
        with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
            cfg = hydra_compose("config", overrides=list(overrides))
        load_config(cfg)
    except (HydraException, OmegaConfBaseException, ValueError) as e:
        raise ValueError(str(e).strip().splitlines()[0]) from None
    return OmegaConf.to_container(cfg, resolve=True)


def _value(config: dict, dotted: str):
    node = config
    for part in dotted.split("."):
        node = node[part]
    return node


def _as_override_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, str)) or value is None:
        return "null" if value is None else repr(value) if isinstance(value, float) else str(value)
    return json.dumps(value)


def resolve_arms(names: list[str], base: list[str], table: dict[str, tuple[list[str], str]],
                 extra: list[str]) -> list[Arm]:
    """Compose and validate every named arm over the base overrides; resolve "@ARM" values (ARM is
    composed too, even if not benchmarked); mark aliases. SystemExit naming the arm on any error."""
    unknown = [n for n in names if n not in table]
    if unknown:
        raise SystemExit(f"unknown arm(s) {unknown}: known {list(table)} (or define one with --arm NAME=...)")
    cache: dict[str, Arm] = {}

    def build(name: str, stack: tuple[str, ...] = ()) -> Arm:
        if name in cache:
            return cache[name]
        if name in stack:
            raise SystemExit(f"arm {name!r}: circular @ reference through {list(stack)}")
        if name not in table:
            raise SystemExit(f"arm {stack[-1]!r} refers to @{name}, which is not an arm: known {list(table)}")
        overrides = []
        for ov in table[name][0] + extras_for(name, extra):
            key, sep, value = ov.partition("=")
            if sep and value.startswith("@"):
                source = build(value[1:], stack + (name,))
                value = _as_override_value(_value(source.config, key.lstrip("+~")))
                ov = f"{key}={value}"
            overrides.append(ov)
        try:
            config = compose(base + overrides)
        except ValueError as e:
            raise SystemExit(f"arm {name!r} ({' '.join(overrides)}): {e}") from None
        cache[name] = Arm(name, overrides, table[name][1], config)
        return cache[name]

    arms = [build(n) for n in names]
    seen: dict[str, str] = {}
    for arm in arms:
        key = json.dumps(arm.config, sort_keys=True, default=str)
        arm.alias_of = seen.get(key)
        seen.setdefault(key, arm.name)
    return arms
