"""Config schemas for the hybrid optimizer (`optim=dual`, ours) and the speedrun's Muon (`optim=muon`).

Both are configurations of one class (optim/hybrid.py): a routing table role -> duality map
("linear" = Newton-Schulz orthogonalized, "embed" = per-token-row normalization, "adam"; optim/roles.py)
plus a rate per role. These dataclasses are THE defaults: configs/optim/{dual,muon}.yaml only name
their schema, and presets and experiment files state only what differs from them.

Learning rates and sweeps
-------------------------
`optim.lr` is the base rate; the trainer multiplies every group's `initial_lr` by the schedule.
- rate_mode=manual (speedrun style): `optim.lr` is the rate of the hidden matrices (every
  role routed to the linear map except the head). The other rates are ABSOLUTE fields
  (`embed_lr`, `head_lr`, `scalar_lr`), as the records state them, so a sweep over `optim.lr`
  sweeps the hidden-matrix rate alone and leaves embeddings, head and scalars fixed.
  `role_lr.ROLE=x` overrides any single role with an absolute rate; `role_lr_mul.ROLE=k` then multiplies
  it (the records' per-parameter lr_mul, in both modes), so a sweep over `optim.lr` still moves it.
- rate_mode=mass (modular norm): every role routed to a duality map (linear or embed) gets
  `optim.lr * fraction(role)` with the fractions derived in optim/mass.py from the masses below
  (embed 1/7, head 1/7, attn-out & MLP 5/21, Q/K/V 5/7 by default, at any depth), so a sweep over
  `optim.lr` moves all of them together. The fractions are modula's for residuals
  (1 - 1/2L) x + (1/2L) f(x), where they make the split depth-independent and the whole update's
  modular norm lr; our models run x + f(norm(x)), for which they are a principled default split,
  not a depth-independence guarantee.
  Roles routed to Adam (scalars, gains, the head by default) keep their absolute rates: Adam's
  elementwise step has no place in the modular norm. A tied table counts as the token input table
  and, on the Embed map, keeps the width rule (tied_embed_lr_times_width / n_embd) in both modes.
Units differ by map: a linear-map rate is the update's RMS->RMS operator norm (spectral scale),
an embed-map rate is the RMS each touched token row moves, an Adam rate is Adam's usual step.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from optim.maps import MAPS, SCALES
from optim.maps.momentum import FORMS
from optim.lookahead import LookaheadKeys, check_lookahead
from optim.mass import mass_rule_fractions
from optim.momentum_schedule import RAMPS
from optim.newton_schulz import METHODS, NORMS
from optim.roles import ALL_ROLES, EMBED_ROLES, GATE_ROLES, HIDDEN_ROLES, VECTOR_ROLES
from optim.stages import StageKeys, check_stages


@dataclass
class DualConfig(StageKeys, LookaheadKeys):
    """`optim=dual` (ours), and the fields of every configuration of the role-routed optimizer: the Embed
    map for embeddings (relative floor 0.01 for rare rows), spectral-scaled Polar Express for hidden matrices,
    Adam for the head and scalars, Muon's momentum warmup; manual rates (rate_mode=mass: see the docstring).
    The stages' switches and keys (optim.normuon, optim.lanton, optim.cautious_wd, ...: all off by default)
    come from the stage registry, optim/stages/, where each stage's module states them (StageKeys); the
    EMA-Nesterov wrapper's (optim.lookahead, off) from optim/lookahead.py (LookaheadKeys)."""
    name: str = "dual"
    lr: float = 0.05                  # base rate: hidden matrices (manual) or global modular-norm lr (mass)
    rate_mode: str = "manual"         # manual | mass
    # routing (optim/roles.py): which duality map each role family uses
    embed_map: str = "embed"          # embed | adam   (roles embed, pos_embed, value_embed)
    head_map: str = "adam"            # adam | linear  (untied head)
    hidden_map: str = "linear"        # linear | adam  (hidden matrices; adam: track 3's AdamW result, rate optim.lr,
                                      # decay optim.weight_decay, betas hidden_adam_betas)
    gate_map: str = "linear"          # linear | adam  (attn_gate, smear_gate: on NorMuon in records 43-46; linear: rate
                                      # optim.lr, decay optim.weight_decay; adam: scalar_lr, adam_weight_decay)
    # A tied embedding/head (GPT-2's model) cannot follow both the Embed and the Linear map: one is chosen
    # here (null: a tied model is refused). As the head, a token row moved by RMS r moves its logit by up to
    # r * width, so on the Embed map the tied table's rate is tied_embed_lr_times_width / n_embd (muP's 1/width
    # rule for an output layer): 0.05 at width 64, 0.0042 at GPT-2's 768. Evidence: tied smoke model (width
    # 64), 40 steps: 0.05 -> val 1.35, 0.2 -> 1.74, 0.6 -> 3.44; model=gpt2_124m at a flat 0.05 diverged
    # (H200, train loss 34.5 at step 5); this rule (0.00417), 20 CPU steps of 512 tokens: val 8.76 (AdamW 8.57).
    tied_map: Optional[str] = "embed"  # embed | linear | adam | null
    tied_embed_lr_times_width: float = 3.2
    # linear map (hidden matrices, and the head if routed there): optim/maps/linear.py
    scale: str = "spectral"           # spectral sqrt(d_out/d_in) | muon sqrt(max(1,rows/cols)) | rms_match | unit 1
                                      # (unit: records 29-46, whose every stored matrix is wide: optim/maps/linear.py)
    ns_method: str = "polar_express"  # cubic | quintic | polar_express | six_step | track3
    ns_steps: Optional[int] = None    # None: the method's default (12 / 5 / 5 / 6 / 12)
    ns_norm: str = "fro"              # NS input scale: fro ||X||_F | gram sqrt(||X X^T||_F) (#46; newton_schulz.py)
    update_bf16: bool = False         # round the update to bf16 after NS and after each after_ns stage (#46's Muon)
    # momentum for the linear and embed maps (optim/maps/momentum.py)
    momentum: float = 0.95
    nesterov: bool = True
    momentum_warmup_start: float = 0.85  # beta ramps linearly from this to `momentum` ...
    momentum_warmup_steps: int = 300     # ... over this many steps (0 = no warmup)
    momentum_cooldown_steps: int = 0     # beta ramps from `momentum` to momentum_cooldown_end over the last
    momentum_cooldown_end: float = 0.85  # this many steps of momentum_horizon (0 = none; optim/momentum_schedule.py)
    momentum_horizon: int = 0            # the run's optimizer steps, for the cool-down (#46: 2900)
    momentum_ramp: str = "blend"         # blend (1-f) a + f b | offset a + f (b - a) (#46's rounding)
    momentum_form: str = "ema"        # ema: buf <- b buf + (1 - b) g (records 20+) | sum: buf <- b buf + g (4-12)
    weight_decay: float = 0.0         # decoupled, p <- p (1 - lr wd), linear and embed maps
    embed_eps: float = 0.01           # embed map: relative row-RMS floor damping rare-token rows
    # absolute rates (manual mode; Adam-routed roles in mass mode)
    embed_lr: float = 0.6
    head_lr: float = 0.008
    # The head's Adam step is sign-like: each entry of a [vocab, d_in] row moves by ~lr, so a logit moves by up to
    # ~lr * d_in (unit-RMS features). Set, this makes the head's rate head_lr_times_width / d_in (muP's output rule,
    # the modular norm's scale for the head) and replaces head_lr; null keeps head_lr. Track-3 #36's 0.004 at d_in
    # 128 is 0.512 (issue 27's head arm).
    head_lr_times_width: Optional[float] = None
    scalar_lr: float = 0.04           # gains, biases, scalars
    role_lr: dict[str, float] = field(default_factory=dict)  # absolute per-role override, e.g. role_lr.attn_out=0.02
    role_lr_mul: dict[str, float] = field(default_factory=dict)  # per-role factor on the rate (after role_lr), the
                                      # scripts' lr_mul: records 43-46 role_lr_mul.mlp_in=2 (their transposed c_fc)
    role_wd_mul: dict[str, float] = field(default_factory=dict)  # per-role factor on the weight decay (the scripts' wd_mul)
    decay_lr_scaled: bool = False     # on the linear and embed maps, the decay coefficient is itself times the group's
                                      # scheduled rate before its role_lr_mul: p <- p - lr (lr / lr_mul) wd wd_mul
                                      # [mask] p, so decay ~ lr^2 (records 43-46's NorMuon: eff_lr * eff_wd; their
                                      # DistAdam's decay, 0 there, stays lr wd: so does Adam's here)
    # Adam path (optim/maps/adam.py)
    adam_betas: list[float] = field(default_factory=lambda: [0.8, 0.95])
    adam_eps: float = 1e-10
    adam_weight_decay: float = 0.0    # decoupled, the Adam-routed roles except hidden matrices (hidden_map=adam)
    hidden_adam_betas: Optional[list[float]] = None  # hidden matrices on Adam; null = adam_betas
    role_adam_betas: dict[str, list[float]] = field(default_factory=dict)  # per Adam-routed role, over the two
                                      # above, e.g. role_adam_betas.attn_out_bias=[0.8,0.9965] (track-3 #46)
    adam_no_bias_correction_roles: list[str] = field(default_factory=list)  # Adam-routed roles stepping along
                                      # m / (sqrt(v) + eps) without (1 - b^t) (track-3 #46: gain, bias, attn_out_bias)
    adam_correction: str = "torch"    # torch: m_hat / (sqrt(v_hat) + eps) | step_size: m / (sqrt(v) + eps) times
                                      # sqrt(1 - b2^t) / (1 - b1^t) (records 29-46's DistAdam; optim/maps/adam.py)
    adam_state_dtype: str = "fp32"    # fp32 | bf16: Adam's moments (bf16: records 43-46's DistAdam; optim/maps/adam.py)
    adam_every: int = 1               # the Adam-routed groups step every k-th step (k = 2: records 43-46, on their
                                      # odd 0-based steps), on the gradient summed over the k steps (optim/hybrid.py)
    # mass rule (rate_mode=mass; optim/mass.py: a principled split, not a depth-independence guarantee here)
    embed_mass: float = 1.0
    blocks_mass: float = 5.0
    head_mass: float = 1.0
    # diagnostics: every K steps per-role update norms + Newton-Schulz error on a sampled matrix (0 = off)
    diag_every: int = 0

    def check(self) -> None:
        """Range checks the types cannot express (called by harness.config.schema.load_config)."""
        validate(self)


@dataclass
class MuonConfig(DualConfig):
    """`optim=muon`: the speedrun's Muon as in records 12-20, as what it changes in `dual` (each change is
    one of the benchmark's ablations, benchmarks/optim/arms.py): quintic Newton-Schulz x5 at Muon's scale and
    Adam for the embeddings (and a tied table, as record 4). Everything else is dual's: Nesterov 0.95
    warmed up from 0.85 over 300 steps (record 20; record 12 sets 500), Adam (0.8, 0.95), eps 1e-10, embed 0.6 / head 0.008 / scalars 0.04."""
    name: str = "muon"
    embed_map: str = "adam"
    embed_eps: float = 0.0            # (no table on the Embed map)
    tied_map: Optional[str] = "adam"
    scale: str = "muon"
    ns_method: str = "quintic"
    ns_steps: Optional[int] = 5


def _choice(cfg: Any, key: str, allowed) -> str:
    value = getattr(cfg, key)
    if value not in allowed:
        raise ValueError(f"optim.{key}={value!r} is not one of {list(allowed)}")
    return value


def validate(cfg: Any) -> None:
    """Fail fast, naming the config key, on values the schema's types cannot catch."""
    _choice(cfg, "rate_mode", ("manual", "mass"))
    _choice(cfg, "embed_map", ("embed", "adam"))
    _choice(cfg, "head_map", ("adam", "linear"))
    _choice(cfg, "hidden_map", ("linear", "adam"))
    _choice(cfg, "gate_map", ("linear", "adam"))
    _choice(cfg, "adam_correction", ("torch", "step_size"))
    _choice(cfg, "adam_state_dtype", ("fp32", "bf16"))
    if cfg.adam_every < 1:
        raise ValueError(f"optim.adam_every={cfg.adam_every} must be >= 1 (1: Adam steps every step)")
    if cfg.hidden_map == "adam" and cfg.rate_mode != "manual":
        raise ValueError("optim.hidden_map=adam needs optim.rate_mode=manual (Adam's step has no place in the "
                         "modular norm's mass rule)")
    if cfg.tied_map is not None:
        _choice(cfg, "tied_map", tuple(MAPS))
    if cfg.head_lr_times_width is not None:
        if not cfg.head_lr_times_width > 0:
            raise ValueError(f"optim.head_lr_times_width={cfg.head_lr_times_width} must be > 0 (or null: head_lr)")
        if cfg.head_map != "adam":
            raise ValueError("optim.head_lr_times_width sets the rate of a sign-like (Adam) head step; the head is on "
                             f"optim.head_map={cfg.head_map!r}, whose rate is optim.head_lr: set one or the other")
    _choice(cfg, "scale", SCALES)
    _choice(cfg, "ns_method", tuple(METHODS))
    _choice(cfg, "momentum_form", FORMS)
    _choice(cfg, "ns_norm", NORMS)
    _choice(cfg, "momentum_ramp", RAMPS)
    if cfg.momentum_cooldown_steps > 0 and cfg.momentum_horizon < cfg.momentum_cooldown_steps:
        raise ValueError(f"optim.momentum_cooldown_steps={cfg.momentum_cooldown_steps} needs optim.momentum_horizon "
                         f"(the run's optimizer steps) >= it; got {cfg.momentum_horizon}: set momentum_horizon")
    if cfg.ns_steps is not None and cfg.ns_steps < 1:
        raise ValueError(f"optim.ns_steps={cfg.ns_steps} must be >= 1 (or null for the method's default)")
    for key in ("momentum", "momentum_warmup_start", "momentum_cooldown_end"):
        if not 0.0 <= getattr(cfg, key) < 1.0:
            raise ValueError(f"optim.{key}={getattr(cfg, key)} must be in [0, 1)")
    for key in ("adam_betas", "hidden_adam_betas"):
        betas = getattr(cfg, key)
        if betas is not None and (len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas)):
            raise ValueError(f"optim.{key}={list(betas)} must be two numbers in [0, 1)")
    for key in ("lr", "embed_lr", "head_lr", "scalar_lr", "weight_decay", "adam_weight_decay", "embed_eps",
                "adam_eps", "momentum_warmup_steps", "diag_every", "tied_embed_lr_times_width",
                "momentum_cooldown_steps", "momentum_horizon"):
        if getattr(cfg, key) < 0:
            raise ValueError(f"optim.{key}={getattr(cfg, key)} must be >= 0")
    for key in ("embed_mass", "blocks_mass", "head_mass"):
        if not getattr(cfg, key) > 0:
            raise ValueError(f"optim.{key}={getattr(cfg, key)} must be > 0")
    for role, betas in dict(cfg.role_adam_betas or {}).items():
        if role not in ALL_ROLES:
            raise ValueError(f"optim.role_adam_betas.{role}: unknown role; known roles: {sorted(ALL_ROLES)}")
        if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"optim.role_adam_betas.{role}={list(betas)} must be two numbers in [0, 1)")
    uncorrected = list(cfg.adam_no_bias_correction_roles or [])
    unknown = [r for r in uncorrected if r not in ALL_ROLES]
    if unknown or len(set(uncorrected)) != len(uncorrected):
        raise ValueError(f"optim.adam_no_bias_correction_roles={uncorrected} must list distinct known roles "
                         f"(unknown: {unknown}); known roles: {sorted(ALL_ROLES)}")
    check_stages(cfg)  # each stage's own keys and rules (optim/stages/)
    check_lookahead(cfg)
    for role, rate in dict(cfg.role_lr or {}).items():
        if role not in ALL_ROLES:
            raise ValueError(f"optim.role_lr.{role}: unknown role; known roles: {sorted(ALL_ROLES)}")
        if rate < 0:
            raise ValueError(f"optim.role_lr.{role}={rate} must be >= 0")
    for key in ("role_lr_mul", "role_wd_mul"):
        for role, mul in dict(getattr(cfg, key) or {}).items():
            if role not in ALL_ROLES:
                raise ValueError(f"optim.{key}.{role}: unknown role; known roles: {sorted(ALL_ROLES)}")
            if not mul > 0:
                raise ValueError(f"optim.{key}.{role}={mul} must be > 0")


def adam_settings(cfg: Any, routes: dict[str, str]) -> dict[str, tuple[tuple[float, float], bool]]:
    """Adam-routed role -> (betas, bias_correction): role_adam_betas, else hidden_adam_betas for hidden matrices,
    else adam_betas. A per-role Adam key naming a role the model has that is not on Adam is refused."""
    per_role = {**{r: "role_adam_betas" for r in dict(cfg.role_adam_betas or {})},
                **{r: "adam_no_bias_correction_roles" for r in cfg.adam_no_bias_correction_roles or []}}
    for role, key in per_role.items():
        if role in routes and routes[role] != "adam":
            raise ValueError(f"optim.{key} names role {role!r}, which is on the {routes[role]!r} map, not Adam")
    out = {}
    for role, m in routes.items():
        if m != "adam":
            continue
        betas = (cfg.role_adam_betas or {}).get(role)
        if betas is None:
            betas = cfg.hidden_adam_betas if role in HIDDEN_ROLES and cfg.hidden_adam_betas else cfg.adam_betas
        out[role] = (tuple(betas), role not in (cfg.adam_no_bias_correction_roles or []))
    return out


def rates_from_config(cfg: Any, routes: dict[str, str], n_layer: int = 1, width: int | None = None,
                      head_d_in: int | None = None) -> dict[str, float]:
    """Role -> initial learning rate, following optim.rate_mode (see the module docstring).

    width: the model's embedding width (n_embd), needed for a tied table on the Embed map.
    head_d_in: the untied head's input width ([vocab, d_in]), needed with optim.head_lr_times_width."""
    lr = float(cfg.lr)
    head_lr = cfg.head_lr
    if getattr(cfg, "head_lr_times_width", None) is not None and "head" in routes:
        if not head_d_in:
            raise ValueError("optim.head_lr_times_width needs the head's input width to set its rate")
        head_lr = cfg.head_lr_times_width / head_d_in
    absolute = {"head": head_lr, **{r: cfg.embed_lr for r in EMBED_ROLES}, **{r: cfg.scalar_lr for r in VECTOR_ROLES},
                **{r: cfg.scalar_lr for r in GATE_ROLES}}  # a gate's on Adam (gate_map=adam); on the linear map: lr
    # A tied table follows the head's rate on Adam or the linear map; on the Embed map its rate is
    # set per unit of width (see tied_embed_lr_times_width): an untied table's embed_lr (0.6) would
    # move a 768-wide head's logits by hundreds of nats in one step.
    absolute["embed_head"] = cfg.head_lr
    if routes.get("embed_head") == "embed":
        if not width:
            raise ValueError("a tied embedding/head on the Embed map needs the model width to set its rate")
        absolute["embed_head"] = cfg.tied_embed_lr_times_width / width
    rates: dict[str, float] = {}
    if cfg.rate_mode == "mass":
        gates = sorted(r for r in routes if r in GATE_ROLES)
        if gates:
            raise ValueError(f"optim.rate_mode=mass has no mass for the gate roles {gates}: use optim.rate_mode=manual")
        # A tied table is the token input table (its mass is the embedding's) and also the head.
        tables = {"embed": "embed" in routes or "embed_head" in routes, "pos_embed": "pos_embed" in routes,
                  "value_embed": "value_embed" in routes}
        inputs = tuple(r for r, present in tables.items() if present) or ("embed",)
        frac = mass_rule_fractions(max(1, n_layer), inputs, embed_mass=cfg.embed_mass, blocks_mass=cfg.blocks_mass,
                                   head_mass=cfg.head_mass)
        frac["embed_head"] = frac["head"]  # on Adam or the linear map a tied table steps as the head
        for role, m in routes.items():
            if m == "adam" or (role == "embed_head" and m == "embed"):  # the width rule above, in both modes
                rates[role] = float(absolute[role])
            else:
                rates[role] = lr * frac[role]
    else:
        for role, m in routes.items():
            on_lr = role in HIDDEN_ROLES or (role in GATE_ROLES and m == "linear")
            rates[role] = lr if on_lr else float(absolute[role])
    for role, rate in dict(cfg.role_lr or {}).items():
        if role in rates:
            rates[role] = float(rate)
    for role, mul in dict(cfg.role_lr_mul or {}).items():
        if role in rates:
            rates[role] = rates[role] * float(mul)
    return rates
