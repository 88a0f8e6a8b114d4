"""Parameter roles: the contract between the model and the optimizers, and the routing table.

The model tags every parameter with one of these role names (plain strings, so `optim/` never
imports the model); the hybrid optimizer routes each parameter by its role, never by its shape. A role
says which module kind the weight belongs to, which is what decides its norm and therefore its duality
map (docs/optimizer.md). To know what update a weight gets, read its role's row below, then that map's
module: e.g. W_q (role attn_q) -> optim.hidden_map, "linear" by default -> optim/maps/linear.py.

| role        | tensor (PyTorch layout) | module                                  | map: chosen by (default dual / muon)  |
|-------------|-------------------------|-----------------------------------------|---------------------------------------|
| embed       | [vocab, d]              | token embedding (one-hot input)         | optim.embed_map (embed / adam)        |
| pos_embed   | [seq, d]                | learned position embedding              | optim.embed_map                       |
| value_embed | [vocab, d]              | value embeddings added into attention   | optim.embed_map                       |
| embed_head  | [vocab, d]              | tied token embedding + LM head          | optim.tied_map (embed / adam)         |
| head        | [vocab, d]              | untied LM head                          | optim.head_map (adam / adam)          |
| attn_q / attn_k / attn_v | [d, d]     | separate query/key/value projections    | optim.hidden_map (linear / linear)    |
| attn_qkv    | [3d, d]                 | fused Q,K,V: orthogonalized per block   | optim.hidden_map                      |
| attn_out    | [d, d]                  | attention output projection             | optim.hidden_map                      |
| mlp_in      | [hidden, d]             | MLP up projection                       | optim.hidden_map                      |
| mlp_out     | [d, hidden]             | MLP down projection                     | optim.hidden_map                      |
| attn_gate   | [heads, 12]             | sparse attention gate (records 43-46)   | optim.gate_map (linear / linear)      |
| smear_gate  | [1, 12]                 | smear gate on the token embedding       | optim.gate_map                        |
| gain        | [d]                     | norm weights                            | adam, always                          |
| bias        | [n]                     | biases (the head's too)                 | adam, always                          |
| attn_out_bias | [d]                   | the attention output projection's bias  | adam, always                          |
| scalar      | [] or [k]               | learnable mixing scalars (lambdas, skip weights) | adam, always                 |

The gates are small matrices the records 43-46 step with NorMuon beside the hidden matrices (same rate,
same decay); they are a family of their own so that hidden-matrix-only settings (optim.soap_roles, the
mass rule, hidden_adam_betas) do not reach them. In manual rate mode a gate on the linear map takes optim.lr.

The defaults are the schemas' (optim/hybrid_config.py); each map's allowed values are checked there.
"""
from __future__ import annotations

from typing import Any

EMBED_ROLES = frozenset({"embed", "pos_embed", "value_embed"})
HIDDEN_ROLES = frozenset({"attn_q", "attn_k", "attn_v", "attn_qkv", "attn_out", "mlp_in", "mlp_out"})
# attn_out_bias has a role of its own so it can take its own Adam betas (track-3 result #46: beta2 0.9965).
VECTOR_ROLES = frozenset({"gain", "bias", "attn_out_bias", "scalar"})
# Gates (records 43-46): the sparse attention gate [heads, 12] and the smear gate [1, 12], on NorMuon there.
GATE_ROLES = frozenset({"attn_gate", "smear_gate"})
ALL_ROLES = EMBED_ROLES | HIDDEN_ROLES | VECTOR_ROLES | GATE_ROLES | {"head", "embed_head"}

# Roles whose matrix is several independent blocks stacked along dim 0 (Q, K, V of a fused weight).
FUSED_BLOCKS = {"attn_qkv": 3}

# The routing table: role -> the config key naming its map (None: Adam, always).
ROUTE_KEY: dict[str, str | None] = {**{r: "embed_map" for r in EMBED_ROLES}, **{r: "hidden_map" for r in HIDDEN_ROLES},
                                    "head": "head_map", "embed_head": "tied_map", **{r: None for r in VECTOR_ROLES},
                                    **{r: "gate_map" for r in GATE_ROLES}}


def check_roles(roles: dict[str, str]) -> None:
    """Raise ValueError naming the first parameter whose role is unknown."""
    for name, role in roles.items():
        if role not in ALL_ROLES:
            raise ValueError(f"parameter {name!r} has unknown role {role!r}; known roles: {sorted(ALL_ROLES)}")


def route(cfg: Any, present: set[str]) -> dict[str, str]:
    """Role -> map ("linear" | "embed" | "adam") for every role in `present`, from the optim config."""
    routes: dict[str, str] = {}
    for role in present:
        key = ROUTE_KEY[role]
        routes[role] = "adam" if key is None else getattr(cfg, key)
        if routes[role] is None:  # only tied_map may be null
            raise ValueError("the model ties its token embedding and LM head (role 'embed_head'), which cannot "
                             "follow both the Embed and the Linear duality map: set optim.tied_map to one of "
                             "['linear', 'embed', 'adam'] (or untie them with model.tie_embeddings=false)")
    return routes
