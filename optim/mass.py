"""The modular-norm mass rule: one global learning rate split across layers by mass and sensitivity.

Following "Scalable Optimization in the Modular Norm" / "Modular Duality in Deep Learning",
a network is a tree of modules. Atoms (layers with weights) have a mass (the share of a step
they take) and a sensitivity (Lipschitz constant in their input); bonds (weightless maps:
nonlinearities, sums, scalar multiplies) have mass 0. For the two ways of combining modules

    compose  M2 o M1:   mass m1 + m2,  sensitivity s1 s2
    concat  (M1, M2):   mass m1 + m2,  sensitivity s1 + s2   (parallel branches, summed after)

dualizing the whole network gives each atom the step  lr * factor(atom) * dualize_atom(g), where
the factor accumulates, from the root down:

    compose  M2 o M1:   M1's atoms x (1/s2) (m1/m),   M2's atoms x (m2/m)
    concat  (M1, M2):   Mi's atoms x (mi/m)

and the modular norm of a weight update is max over atoms of ||dw_atom||_atom / factor(atom).
So with every atom stepped to norm lr * factor, the whole update has modular norm exactly lr.

`gpt_tree` is modula's reference GPT, the network these fractions are exact for: embed (mass 1)
-> L blocks (total mass 5) -> head (mass 1), each block two residuals x -> (1 - 1/2L) x + (1/2L) f(x),
f = attention or MLP. The 1/2L multiply is a bond of sensitivity 1/2L, so f's atoms gain a factor 2L
while f's mass shrinks like 1/L: there the split does not depend on depth (embed 1/7, head 1/7,
attn-out and MLP matrices 5/21, Q/K/V 5/7; a fused QKV weight's blocks get Q/K/V's).

Our models are not that network: they run x + f(norm(x)) (model/block.py). An unscaled residual sum
has sensitivity 1 + s_f (2 for a well-normed f), compounding over the 2L residuals, and norm(x) is not
Lipschitz near 0, so the same algebra applied to them gives depth-dependent factors, not these. For our models `optim.rate_mode=mass` is therefore a principled default
split of one rate (the reference network's), not a guarantee that the modular norm of the update is
lr or that the split transfers across depth. The tree below exists only to derive the fractions; it
is not a second description of the model (the model's own structure reaches the optimizer only as
parameter roles).
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Atom:
    """A module with weights. name: unique key (e.g. "3.attn_q"); role: optim.roles name."""
    name: str
    role: str
    mass: float = 1.0
    sensitivity: float = 1.0


@dataclass
class Bond:
    """A weightless module (nonlinearity, sum, scalar multiply): mass 0."""
    sensitivity: float = 1.0


@dataclass
class Compose:
    """outer o inner: inner is applied first."""
    outer: "Module"
    inner: "Module"


@dataclass
class Concat:
    """Parallel branches on the same input (their outputs are combined by the next bond)."""
    parts: list["Module"] = field(default_factory=list)


Module = Atom | Bond | Compose | Concat


def compose(*modules: Module) -> Module:
    """compose(a, b, c) = a o b o c (c applied first), like modula's `a @ b @ c`."""
    out = modules[-1]
    for m in reversed(modules[:-1]):
        out = Compose(m, out)
    return out


def scaled(c: float, module: Module) -> Module:
    """c * module: a multiply bond (sensitivity c) after the module."""
    return Compose(Bond(c), module)


def residual(alpha: float, f: Module) -> Module:
    """x -> (1 - alpha) x + alpha f(x): a sum bond over (scaled identity, scaled f)."""
    return Compose(Bond(1.0), Concat([Bond(1.0 - alpha), scaled(alpha, f)]))


def mass(m: Module) -> float:
    if isinstance(m, Atom):
        return m.mass
    if isinstance(m, Bond):
        return 0.0
    if isinstance(m, Compose):
        return mass(m.outer) + mass(m.inner)
    return sum(mass(p) for p in m.parts)


def sensitivity(m: Module) -> float:
    if isinstance(m, (Atom, Bond)):
        return m.sensitivity
    if isinstance(m, Compose):
        return sensitivity(m.outer) * sensitivity(m.inner)
    return sum(sensitivity(p) for p in m.parts)


def atoms(m: Module) -> list[Atom]:
    if isinstance(m, Atom):
        return [m]
    if isinstance(m, Bond):
        return []
    if isinstance(m, Compose):
        return atoms(m.outer) + atoms(m.inner)
    return [a for p in m.parts for a in atoms(p)]


def tare(m: Module, absolute: float) -> Module:
    """Rescale the masses of every atom inside m so that mass(m) == absolute (in place)."""
    total = mass(m)
    for a in atoms(m):
        a.mass *= absolute / total
    return m


def update_factors(m: Module, factor: float = 1.0) -> dict[str, float]:
    """Atom name -> the multiple of lr its (unit-norm) dualized update gets."""
    if isinstance(m, Atom):
        return {m.name: factor}
    if isinstance(m, Bond) or mass(m) == 0.0:
        return {}
    total = mass(m)
    out: dict[str, float] = {}
    if isinstance(m, Compose):
        out.update(update_factors(m.outer, factor * mass(m.outer) / total))
        out.update(update_factors(m.inner, factor * mass(m.inner) / total / sensitivity(m.outer)))
    else:
        for p in m.parts:
            out.update(update_factors(p, factor * mass(p) / total))
    return out


def modular_norm(m: Module, atom_norms: dict[str, float]) -> float:
    """Modular norm of a weight update, given each atom's norm of its own piece (recursively:
    compose -> max(s2 (m/m1) ||dw1||, (m/m2) ||dw2||); concat -> max_i (m/mi) ||dwi||)."""
    if isinstance(m, Atom):
        return atom_norms[m.name]
    total = mass(m)
    if isinstance(m, Bond) or total == 0.0:
        return 0.0
    if isinstance(m, Compose):
        terms = [(m.outer, 1.0), (m.inner, sensitivity(m.outer))]
    else:
        terms = [(p, 1.0) for p in m.parts]
    return max((s * total / mass(p) * modular_norm(p, atom_norms) for p, s in terms if mass(p) > 0),
               default=0.0)


# ---- modula's reference GPT -------------------------------------------------------------------

def attention(layer: int) -> Module:
    """W_out o (1/3 * attention) o (Q, K, V). The functional attention is taken as 1-sensitive in
    each of q, k, v (as modula's 1/d-scaled attention), so the three branches sum to sensitivity
    3, which the 1/3 multiply brings back to 1: the block stays well-normed, Q/K/V get 3x the
    step of W_out."""
    qkv = [Atom(f"{layer}.attn_{x}", f"attn_{x}") for x in "qkv"]
    return compose(Atom(f"{layer}.attn_out", "attn_out"), Bond(1 / 3), Concat(qkv))


def mlp(layer: int) -> Module:
    """W_out o act o W_in; the activation is taken as 1-sensitive (GELU / ReLU^2 near the norm's scale)."""
    return compose(Atom(f"{layer}.mlp_out", "mlp_out"), Bond(1.0), Atom(f"{layer}.mlp_in", "mlp_in"))


def gpt_tree(n_layer: int, input_roles: tuple[str, ...] = ("embed",), embed_mass: float = 1.0,
             blocks_mass: float = 5.0, head_mass: float = 1.0) -> Module:
    """head o blocks o input for modula's n_layer GPT with (1 - 1/2L) x + (1/2L) f(x) residuals.

    input_roles: the embedding tables summed at the input (e.g. ("embed", "pos_embed")); they
    share `embed_mass` equally (one input module tared to embed_mass). Value embeddings, which
    the speedrun adds inside attention, are counted here as input tables: an approximation.
    """
    if n_layer < 1:
        raise ValueError(f"n_layer must be >= 1, got {n_layer}")
    tables = [Atom(r, r) for r in input_roles]
    inp = tables[0] if len(tables) == 1 else compose(Bond(1.0), Concat(tables))
    tare(inp, embed_mass)
    alpha = 1 / (2 * n_layer)
    layers = [compose(residual(alpha, mlp(l)), residual(alpha, attention(l))) for l in range(n_layer)]
    blocks = tare(compose(*reversed(layers)), blocks_mass)
    return compose(Atom("head", "head", mass=head_mass), blocks, inp)


def role_fractions(tree: Module) -> dict[str, float]:
    """Role -> factor, checking that every atom of a role got the same factor (else ValueError)."""
    factors = update_factors(tree)
    out: dict[str, float] = {}
    for a in atoms(tree):
        f = factors[a.name]
        if a.role in out and abs(out[a.role] - f) > 1e-12 * max(1.0, f):
            raise ValueError(f"mass rule gives role {a.role!r} different factors ({out[a.role]} vs {f}): "
                             "the role is not uniform across the model")
        out[a.role] = f
    return out


def mass_rule_fractions(n_layer: int = 1, input_roles: tuple[str, ...] = ("embed",), embed_mass: float = 1.0,
                        blocks_mass: float = 5.0, head_mass: float = 1.0) -> dict[str, float]:
    """Role -> fraction of the global lr under the mass rule (the same at every n_layer).

    With the defaults: embed 1/7, head 1/7, attn_out / mlp_in / mlp_out 5/21, attn_q/k/v 5/7, and
    attn_qkv 5/7 (a fused weight is orthogonalized per block, each block one of Q, K, V)."""
    frac = role_fractions(gpt_tree(n_layer, input_roles, embed_mass, blocks_mass, head_mass))
    frac["attn_qkv"] = frac["attn_q"]
    return frac
