"""Parameter roles: the contract between the model and the optimizers.

The model tags every parameter with one of these role names (plain strings, so
`optim/` never imports the model); optimizers route each parameter by its role,
never by its shape. A role says which module kind the weight belongs to, which is
what decides its norm and therefore its duality map (see optimizer.md).

| role        | tensor (PyTorch layout)          | module                                   |
|-------------|----------------------------------|------------------------------------------|
| embed       | [vocab, d]                       | token embedding (one-hot input)          |
| pos_embed   | [seq, d]                         | learned position embedding               |
| value_embed | [vocab, d]                       | value embeddings added into attention    |
| embed_head  | [vocab, d]                       | tied token embedding + LM head (one map must be chosen) |
| head        | [vocab, d]                       | untied LM head                           |
| attn_q / attn_k / attn_v | [d, d]              | separate query/key/value projections     |
| attn_qkv    | [3d, d] or [3, d, d]             | fused Q,K,V: orthogonalized per block    |
| attn_out    | [d, d]                           | attention output projection              |
| mlp_in      | [hidden, d]                      | MLP up projection                        |
| mlp_out     | [d, hidden]                      | MLP down projection                      |
| gain        | [d]                              | norm weights                             |
| bias        | [n]                              | biases                                   |
| scalar      | [] or [k]                        | learnable mixing scalars (lambdas, skip weights) |
"""
from __future__ import annotations

EMBED_ROLES = frozenset({"embed", "pos_embed", "value_embed"})
HIDDEN_ROLES = frozenset({"attn_q", "attn_k", "attn_v", "attn_qkv", "attn_out", "mlp_in", "mlp_out"})
VECTOR_ROLES = frozenset({"gain", "bias", "scalar"})
ALL_ROLES = EMBED_ROLES | HIDDEN_ROLES | VECTOR_ROLES | {"head", "embed_head"}

# Roles whose matrix is several independent blocks stacked along dim 0.
FUSED_BLOCKS = {"attn_qkv": 3}


def check_roles(roles: dict[str, str]) -> None:
    """Raise ValueError naming the first parameter whose role is unknown."""
    for name, role in roles.items():
        if role not in ALL_ROLES:
            raise ValueError(f"parameter {name!r} has unknown role {role!r}; known roles: {sorted(ALL_ROLES)}")
