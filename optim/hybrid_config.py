"""Config schemas for the hybrid optimizer (`optim=dual`, ours) and the speedrun's Muon (`optim=muon`).

Both are configurations of one class (optim/hybrid.py): a routing table role -> duality map
("linear" = Newton-Schulz orthogonalized, "embed" = per-token-row normalization, "adam") plus a
rate per role. They differ only in defaults.

Learning rates and sweeps
-------------------------
`optim.lr` is the base rate; the trainer multiplies every group's `initial_lr` by the schedule.
- rate_mode=manual (speedrun style): `optim.lr` is the rate of the hidden matrices (every
  role routed to the linear map except the head). The other rates are ABSOLUTE fields
  (`embed_lr`, `head_lr`, `scalar_lr`), as the records state them, so a sweep over `optim.lr`
  sweeps the hidden-matrix rate alone and leaves embeddings, head and scalars fixed.
  `role_lr.ROLE=x` overrides any single role with an absolute rate.
- rate_mode=mass (modular norm): every role routed to a duality map (linear or embed) gets
  `optim.lr * fraction(role)` with the fractions derived in optim/mass.py from the masses below
  (embed 1/7, head 1/7, attn-out & MLP 5/21, Q/K/V 5/7 by default, independent of depth), so a
  sweep over `optim.lr` moves all of them together and the whole update has modular norm lr.
  Roles routed to Adam (scalars, gains, the head by default) keep their absolute rates: Adam's
  elementwise step has no place in the modular norm.
Units differ by map: a linear-map rate is the update's RMS->RMS operator norm (spectral scale),
an embed-map rate is the RMS each touched token row moves, an Adam rate is Adam's usual step.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from optim.duality import LINEAR_SCALES
from optim.mass import mass_rule_fractions
from optim.newton_schulz import METHODS
from optim.roles import ALL_ROLES, EMBED_ROLES, HIDDEN_ROLES, VECTOR_ROLES

MAPS = ("linear", "embed", "adam")
MOMENTUM_FORMS = ("ema", "sum")


@dataclass
class HybridConfig:
    """Fields shared by `optim=dual` and `optim=muon` (see the module docstring for rates)."""
    name: str = "dual"
    lr: float = 0.05                  # base rate: hidden matrices (manual) or global modular-norm lr (mass)
    rate_mode: str = "manual"         # manual | mass
    # routing: which duality map each role family uses
    embed_map: str = "embed"          # embed | adam   (roles embed, pos_embed, value_embed)
    head_map: str = "adam"            # adam | linear  (untied head)
    hidden_map: str = "linear"        # linear | adam  (hidden matrices; adam: track 3's AdamW result, rate optim.lr,
                                      # decay optim.weight_decay, betas hidden_adam_betas)
    tied_map: Optional[str] = None    # embed | linear | adam: REQUIRED if the model ties embed and head
    # linear map (hidden matrices, and the head if routed there)
    scale: str = "spectral"           # spectral sqrt(d_out/d_in) | muon sqrt(max(1,rows/cols)) | rms_match
    ns_method: str = "polar_express"  # cubic | quintic | polar_express | six_step
    ns_steps: Optional[int] = None    # None: the method's default (12 / 5 / 5 / 6)
    # momentum for the linear and embed maps
    momentum: float = 0.95
    nesterov: bool = True
    momentum_warmup_start: float = 0.85  # beta ramps linearly from this to `momentum` ...
    momentum_warmup_steps: int = 0       # ... over this many steps (0 = no warmup)
    # ema: buf <- beta buf + (1 - beta) g, Nesterov direction (1 - beta) g + beta buf (records 20+);
    # sum: buf <- beta buf + g, direction g + beta buf (records 4-12's Muon). Under a constant beta the two
    # differ by the factor 1 - beta, which the maps normalize away; while beta ramps they differ.
    momentum_form: str = "ema"
    weight_decay: float = 0.0         # decoupled, p <- p (1 - lr wd), linear and embed maps
    embed_eps: float = 0.0            # embed map: relative row-RMS floor damping rare-token rows
    # absolute rates (manual mode; Adam-routed roles in mass mode)
    embed_lr: float = 0.6
    head_lr: float = 0.008
    scalar_lr: float = 0.04           # gains, biases, scalars
    role_lr: dict[str, float] = field(default_factory=dict)  # absolute per-role override, e.g. role_lr.attn_out=0.02
    # A tied table on the Embed map (tied_map=embed) is also the LM head: a token row moved by RMS r
    # moves that token's logit by up to r * width (the final norm's output has RMS 1 per coordinate),
    # so its rate shrinks as 1/width, muP's rule for an output layer. Rate = this / n_embd (manual mode).
    tied_embed_lr_times_width: float = 3.2
    # Adam path
    adam_betas: list[float] = field(default_factory=lambda: [0.8, 0.95])
    adam_eps: float = 1e-10
    adam_weight_decay: float = 0.0    # decoupled, the Adam-routed roles except hidden matrices (hidden_map=adam)
    hidden_adam_betas: Optional[list[float]] = None  # hidden matrices on Adam; null = adam_betas
    # mass rule (rate_mode=mass)
    embed_mass: float = 1.0
    blocks_mass: float = 5.0
    head_mass: float = 1.0
    # diagnostics: every K steps per-role update norms + Newton-Schulz error on a sampled matrix (0 = off)
    diag_every: int = 0
    # switches, all off by default (each module's docstring gives its formula and paper)
    lanton: bool = False              # noise-adaptive layerwise rates within each role group (optim/lanton.py)
    lanton_beta: float = 0.95         # EMA of each layer's squared dual-norm noise
    normuon: bool = False             # per-row second-moment normalization of linear-map updates (optim/normuon.py)
    normuon_beta: float = 0.95        # EMA of each row's mean square
    normuon_eps: float = 1e-8
    cautious_wd: bool = False         # decay only where update and weight agree in sign (optim/cautious.py)

    def check(self) -> None:
        """Range checks the types cannot express (called by harness.config.load_config)."""
        validate(self)


@dataclass
class DualConfig(HybridConfig):
    """Ours: Embed map for embeddings (relative floor 0.01 for rare rows), spectral-scaled Polar Express
    for hidden matrices, Adam for the head and scalars, Muon's momentum warmup; manual rates by default
    (rate_mode=mass splits one global lr by the modular-norm mass rule instead)."""
    name: str = "dual"
    lr: float = 0.05
    rate_mode: str = "manual"
    embed_eps: float = 0.01
    momentum_warmup_steps: int = 300


@dataclass
class MuonConfig(HybridConfig):
    """The speedrun's Muon as in records 12-20: quintic NS x5, Muon's scale, Nesterov 0.95 with warmup
    from 0.85 over 300 steps, Adam (0.8, 0.95), eps 1e-10 for embed 0.6 / head 0.008 / scalars 0.04."""
    name: str = "muon"
    lr: float = 0.05
    rate_mode: str = "manual"
    embed_map: str = "adam"
    scale: str = "muon"
    ns_method: str = "quintic"
    ns_steps: Optional[int] = 5
    momentum_warmup_steps: int = 300


def _get(cfg: Any, key: str, default: Any = None) -> Any:
    return cfg.get(key, default) if hasattr(cfg, "get") else getattr(cfg, key, default)


def _choice(cfg: Any, key: str, allowed: tuple[str, ...] | list[str]) -> str:
    value = _get(cfg, key)
    if value not in allowed:
        raise ValueError(f"optim.{key}={value!r} is not one of {list(allowed)}")
    return value


def validate(cfg: Any) -> None:
    """Fail fast, naming the config key, on values the schema's types cannot catch."""
    _choice(cfg, "rate_mode", ("manual", "mass"))
    _choice(cfg, "embed_map", ("embed", "adam"))
    _choice(cfg, "head_map", ("adam", "linear"))
    _choice(cfg, "hidden_map", ("linear", "adam"))
    if _get(cfg, "hidden_map") == "adam" and _get(cfg, "rate_mode") != "manual":
        raise ValueError("optim.hidden_map=adam needs optim.rate_mode=manual (Adam's step has no place in the "
                         "modular norm's mass rule)")
    if _get(cfg, "tied_map") is not None:
        _choice(cfg, "tied_map", MAPS)
    _choice(cfg, "scale", LINEAR_SCALES)
    _choice(cfg, "ns_method", tuple(METHODS))
    _choice(cfg, "momentum_form", MOMENTUM_FORMS)
    if _get(cfg, "ns_steps") is not None and _get(cfg, "ns_steps") < 1:
        raise ValueError(f"optim.ns_steps={_get(cfg, 'ns_steps')} must be >= 1 (or null for the method's default)")
    for key in ("momentum", "momentum_warmup_start"):
        if not 0.0 <= _get(cfg, key) < 1.0:
            raise ValueError(f"optim.{key}={_get(cfg, key)} must be in [0, 1)")
    for key in ("adam_betas", "hidden_adam_betas"):
        betas = _get(cfg, key)
        if betas is not None and (len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas)):
            raise ValueError(f"optim.{key}={list(betas)} must be two numbers in [0, 1)")
    for key in ("lr", "embed_lr", "head_lr", "scalar_lr", "weight_decay", "adam_weight_decay", "embed_eps",
                "adam_eps", "momentum_warmup_steps", "diag_every", "tied_embed_lr_times_width"):
        if _get(cfg, key) < 0:
            raise ValueError(f"optim.{key}={_get(cfg, key)} must be >= 0")
    for key in ("embed_mass", "blocks_mass", "head_mass"):
        if _get(cfg, key) <= 0:
            raise ValueError(f"optim.{key}={_get(cfg, key)} must be > 0")
    _check_switches(cfg)
    for role, rate in dict(_get(cfg, "role_lr") or {}).items():
        if role not in ALL_ROLES:
            raise ValueError(f"optim.role_lr.{role}: unknown role; known roles: {sorted(ALL_ROLES)}")
        if rate < 0:
            raise ValueError(f"optim.role_lr.{role}={rate} must be >= 0")


def _check_switches(cfg: Any) -> None:
    for key in ("lanton_beta", "normuon_beta"):
        if not 0.0 <= _get(cfg, key, 0.0) < 1.0:
            raise ValueError(f"optim.{key}={_get(cfg, key)} must be in [0, 1)")
    if not _get(cfg, "normuon_eps", 1e-8) > 0:
        raise ValueError(f"optim.normuon_eps={_get(cfg, 'normuon_eps')} must be > 0")
    if _get(cfg, "lanton", False) and not _get(cfg, "momentum") > 0:
        raise ValueError("optim.lanton=true measures each layer's noise against its momentum: it needs "
                         f"optim.momentum > 0 (got {_get(cfg, 'momentum')})")
    if _get(cfg, "lanton", False) and _get(cfg, "momentum_form", "ema") != "ema":
        raise ValueError("optim.lanton=true measures noise as gradient minus the momentum average: it needs "
                         f"optim.momentum_form=ema (got {_get(cfg, 'momentum_form')!r}, a running sum)")
    if _get(cfg, "cautious_wd", False) and not (_get(cfg, "weight_decay") > 0 or _get(cfg, "adam_weight_decay") > 0):
        raise ValueError("optim.cautious_wd=true masks a weight decay, but optim.weight_decay and "
                         "optim.adam_weight_decay are both 0: set one of them > 0 (or drop cautious_wd)")


def routes_from_config(cfg: Any, present: set[str]) -> dict[str, str]:
    """Role -> map ("linear" | "embed" | "adam") for every role present in the model."""
    routes: dict[str, str] = {}
    for role in present:
        if role in EMBED_ROLES:
            routes[role] = _get(cfg, "embed_map")
        elif role in HIDDEN_ROLES:
            routes[role] = _get(cfg, "hidden_map")
        elif role == "head":
            routes[role] = _get(cfg, "head_map")
        elif role in VECTOR_ROLES:
            routes[role] = "adam"
        elif role == "embed_head":
            tied = _get(cfg, "tied_map")
            if tied is None:
                raise ValueError("the model ties its token embedding and LM head (role 'embed_head'), which cannot "
                                 "follow both the Embed and the Linear duality map: set optim.tied_map to one of "
                                 f"{list(MAPS)} (or untie them with model.tie_embeddings=false)")
            routes[role] = tied
    return routes


def rates_from_config(cfg: Any, routes: dict[str, str], n_layer: int = 1, width: int | None = None) -> dict[str, float]:
    """Role -> initial learning rate, following optim.rate_mode (see the module docstring).

    width: the model's embedding width (n_embd), needed for a tied table on the Embed map."""
    lr = float(_get(cfg, "lr"))
    absolute = {"head": _get(cfg, "head_lr"), **{r: _get(cfg, "embed_lr") for r in EMBED_ROLES},
                **{r: _get(cfg, "scalar_lr") for r in VECTOR_ROLES}}
    # A tied table follows the head's rate on Adam or the linear map; on the Embed map its rate is
    # set per unit of width (see tied_embed_lr_times_width): an untied table's embed_lr (0.6) would
    # move a 768-wide head's logits by hundreds of nats in one step.
    absolute["embed_head"] = _get(cfg, "head_lr")
    if routes.get("embed_head") == "embed":
        if not width:
            raise ValueError("a tied embedding/head on the Embed map needs the model width to set its rate")
        absolute["embed_head"] = _get(cfg, "tied_embed_lr_times_width") / width
    rates: dict[str, float] = {}
    if _get(cfg, "rate_mode") == "mass":
        inputs = tuple(r for r in ("embed", "pos_embed", "value_embed") if r in routes) or ("embed",)
        frac = mass_rule_fractions(max(1, n_layer), inputs, embed_mass=_get(cfg, "embed_mass"),
                                   blocks_mass=_get(cfg, "blocks_mass"), head_mass=_get(cfg, "head_mass"))
        if "embed_head" in routes:
            frac["embed_head"] = frac["embed"] if routes["embed_head"] == "embed" else frac["head"]
        for role, m in routes.items():
            rates[role] = lr * frac[role] if m != "adam" else float(absolute[role])
    else:
        for role in routes:
            rates[role] = lr if role in HIDDEN_ROLES else float(absolute[role])
    for role, rate in dict(_get(cfg, "role_lr") or {}).items():
        if role in rates:
            rates[role] = float(rate)
    return rates
