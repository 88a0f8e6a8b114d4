"""The modular-norm mass rule: derived fractions, depth independence, and the norm it induces."""
import random

import pytest

from optim.mass import (
    Atom,
    Bond,
    compose,
    gpt_tree,
    mass,
    mass_rule_fractions,
    modular_norm,
    role_fractions,
    sensitivity,
    update_factors,
)

SPEC = {"embed": 1 / 7, "head": 1 / 7, "attn_out": 5 / 21, "mlp_in": 5 / 21, "mlp_out": 5 / 21,
        "attn_q": 5 / 7, "attn_k": 5 / 7, "attn_v": 5 / 7, "attn_qkv": 5 / 7}


@pytest.mark.parametrize("n_layer", [1, 2, 3, 12, 48])
def test_fractions_match_the_spec_at_every_depth(n_layer):
    frac = mass_rule_fractions(n_layer)
    assert frac.keys() == SPEC.keys()
    for role, value in SPEC.items():
        assert frac[role] == pytest.approx(value, rel=1e-12), role


def test_gpt_tree_is_well_normed():
    tree = gpt_tree(4)
    assert mass(tree) == pytest.approx(7.0)
    assert sensitivity(tree) == pytest.approx(1.0)  # residuals, attention and MLP all 1-sensitive


def test_masses_move_the_split():
    frac = mass_rule_fractions(3, embed_mass=2.0, blocks_mass=5.0, head_mass=1.0)
    assert frac["embed"] == pytest.approx(2 / 8) and frac["head"] == pytest.approx(1 / 8)
    assert frac["attn_out"] == pytest.approx(5 / 8 / 3) and frac["attn_q"] == pytest.approx(5 / 8)


def test_input_tables_share_the_embed_mass():
    frac = mass_rule_fractions(2, input_roles=("embed", "pos_embed"))
    assert frac["embed"] == pytest.approx(1 / 14) and frac["pos_embed"] == pytest.approx(1 / 14)
    assert frac["head"] == pytest.approx(1 / 7)


def test_modular_norm_is_max_of_atom_norms_over_factors():
    tree = gpt_tree(3, input_roles=("embed", "pos_embed"))
    factors = update_factors(tree)
    rng = random.Random(0)
    for _ in range(5):
        norms = {name: rng.uniform(0.0, 2.0) for name in factors}
        expected = max(norms[n] / factors[n] for n in factors)
        assert modular_norm(tree, norms) == pytest.approx(expected, rel=1e-12)


def test_update_with_atom_norms_lr_times_factor_has_modular_norm_lr():
    tree = gpt_tree(5)
    factors = update_factors(tree)
    assert modular_norm(tree, {n: 0.3 * f for n, f in factors.items()}) == pytest.approx(0.3, rel=1e-12)


def test_composition_rules_on_a_two_layer_chain():
    # M2 o M1 with masses 1 and 3, s2 = 0.5: M1's atoms x (1/s2)(m1/m) = 2 * 1/4, M2's x m2/m = 3/4.
    chain = compose(Atom("w2", "mlp_out", mass=3.0, sensitivity=0.5), Bond(1.0), Atom("w1", "mlp_in", mass=1.0))
    assert update_factors(chain) == pytest.approx({"w1": 0.5, "w2": 0.75})


def test_nonuniform_role_is_reported():
    chain = compose(Atom("a", "mlp_in"), Bond(0.5), Atom("b", "mlp_in"))
    with pytest.raises(ValueError, match="role 'mlp_in' different factors"):
        role_fractions(chain)


def test_mass_mode_on_a_tied_gpt2_with_learned_positions():
    """model=gpt2_124m's routes (tied table on the Embed map, learned positions): the tied table is the
    token input table for the mass split and keeps the width rule for its own rate (it is the head too)."""
    from optim.hybrid_config import DualConfig, rates_from_config
    routes = {"embed_head": "embed", "pos_embed": "embed", "attn_q": "linear", "mlp_out": "linear", "gain": "adam"}
    rates = rates_from_config(DualConfig(rate_mode="mass", lr=0.05), routes, n_layer=12, width=768)
    frac = mass_rule_fractions(12, ("embed", "pos_embed"))
    assert rates["embed_head"] == pytest.approx(3.2 / 768)
    assert rates["pos_embed"] == pytest.approx(0.05 * frac["pos_embed"])
    assert rates["attn_q"] == pytest.approx(0.05 * frac["attn_q"])
