"""Issue 13's ablations of `dual` towards Muon: each is one change of `optim=dual` (the benchmark's arm
table, benchmarks/optim/arms.py), changes only that in the composed config, and only the parameters it
should in an optimizer step. Together they cover every difference between the two configurations."""
import math

import pytest
import torch
from omegaconf import OmegaConf

from benchmarks.optim.arms import ABLATIONS, ARMS, compose, resolve_arms
from optim import build_hybrid
from optim.hybrid_config import DualConfig
from optim.newton_schulz import schedule

BASE = ["experiment=smoke"]


@pytest.fixture(scope="module")
def composed():
    return {name: arm for name, arm in ((a.name, a) for a in resolve_arms(
        ["muon", "dual", *ABLATIONS.values()], BASE, ARMS, []))}


def optim_diff(a: dict, b: dict) -> dict:
    return {k: (a["optim"][k], b["optim"][k]) for k in a["optim"] if a["optim"][k] != b["optim"].get(k)}


def test_every_difference_between_dual_and_muon_is_covered(composed):
    diff = optim_diff(composed["dual"].config, composed["muon"].config)
    # (a) embed_map (embed_eps only acts on the Embed map), (b) scale, (c) ns_method (+ its step count);
    # tied_map only matters for a tied model (track 3's is untied); head_lr / scalar_lr are (d), equal here.
    assert set(diff) == {"name", "embed_map", "embed_eps", "scale", "ns_method", "ns_steps", "tied_map"}, diff
    assert schedule("quintic", diff["ns_steps"][0]) == schedule("quintic", diff["ns_steps"][1])


@pytest.mark.parametrize("letter,keys", [("a", {"embed_map"}), ("b", {"scale"}), ("c", {"ns_method", "ns_steps"}),
                                         ("d", set()), ("e", set()), ("f", set())])
def test_each_ablation_is_one_change_of_dual_towards_muon(composed, letter, keys):
    arm = composed[ABLATIONS[letter]]
    dual, muon = composed["dual"].config, composed["muon"].config
    assert arm.overrides[0] == "optim=dual"
    diff = optim_diff(arm.config, dual)
    assert set(diff) == keys
    for key in keys:
        assert arm.config["optim"][key] == muon["optim"][key]  # the ablated value is Muon's
    assert {k: v for k, v in arm.config.items() if k != "optim"} == {k: v for k, v in dual.items() if k != "optim"}
    # (d)-(f) copy Muon's head and scalar rates, decay and momentum warmup, which equal dual's at the
    # defaults: then the arm is an alias of dual and the benchmark does not run it twice
    if not keys:
        assert arm.alias_of == "dual"


def test_on_track3_every_difference_from_its_muon_is_one_ablation():
    """On the track-3 proxy, Muon is the script's own optimizer (a preset): dual differs from it in more
    keys, and each (but the swept lr and what only acts on one map) is moved by exactly one ablation."""
    table = {**ARMS, "muon": (["optim=track3_muon"], "track 3's tuned Muon")}
    arms = {a.name: a for a in resolve_arms(["muon", "dual", *ABLATIONS.values()], ["experiment=track3_proxy_cpu"],
                                            table, [])}
    diff = optim_diff(arms["dual"].config, arms["muon"].config)
    unswept = set(diff) - {"name", "lr", "embed_eps", "tied_map"}  # lr: swept per arm; embed_eps, tied_map: inert
    assert unswept == {"embed_map", "embed_lr", "scale", "ns_method", "ns_steps", "head_lr", "scalar_lr",
                       "weight_decay", "adam_weight_decay", "momentum_warmup_steps"}
    moved = {}
    for letter, name in ABLATIONS.items():
        changed = set(optim_diff(arms[name].config, arms["dual"].config))
        assert changed and all(arms[name].config["optim"][k] == arms["muon"].config["optim"][k] for k in changed)
        assert not changed & set(moved), (letter, changed & set(moved))
        moved.update(dict.fromkeys(changed, letter))
    assert set(moved) == unswept


def test_the_rates_ablation_follows_the_base_experiments_muon():
    arms = resolve_arms(["dual", "dual-muon-rates"], BASE, ARMS, ["muon:optim.head_lr=0.004", "muon:optim.scalar_lr=0.015"])
    arm = arms[1]
    assert "optim.head_lr=0.004" in arm.overrides and "optim.scalar_lr=0.015" in arm.overrides
    assert optim_diff(arm.config, arms[0].config) == {"head_lr": (0.004, 0.008), "scalar_lr": (0.015, 0.04)}
    assert arm.alias_of is None


def test_a_bad_arm_fails_before_anything_runs_naming_it():
    with pytest.raises(SystemExit, match="arm 'dual-cwd' .*optim.cautious_wd=true masks a weight decay"):
        resolve_arms(["dual-cwd"], BASE, ARMS, [])
    assert resolve_arms(["dual-cwd"], BASE, ARMS, ["dual*:optim.weight_decay=0.05"])[0].config["optim"]["cautious_wd"]
    with pytest.raises(SystemExit, match="unknown arm"):
        resolve_arms(["dual-typo"], BASE, ARMS, [])


# ---- what each ablation changes in a step ----------------------------------------------------------

V, D = 40, 16
SHAPES = {"wte.weight": ([V, D], "embed"), "h.0.qkv.weight": ([3 * D, D], "attn_qkv"),
          "h.0.proj.weight": ([D, D], "attn_out"), "h.0.fc.weight": ([4 * D, D], "mlp_in"),
          "h.0.out.weight": ([D, 4 * D], "mlp_out"), "h.0.ln.weight": ([D], "gain"),
          "h.0.fc.bias": ([4 * D], "bias"), "lm_head.weight": ([V, D], "head")}


def one_step(optim: dict) -> dict:
    g = torch.Generator().manual_seed(0)
    named = [(n, torch.nn.Parameter(torch.randn(*s, generator=g) * 0.1)) for n, (s, _) in SHAPES.items()]
    for _, p in named:
        p.grad = torch.randn(p.shape, generator=g)
    cfg = OmegaConf.structured(DualConfig(**{k: v for k, v in optim.items() if k in DualConfig.__dataclass_fields__}))
    before = {n: p.detach().clone() for n, p in named}
    build_hybrid(cfg, named, {n: r for n, (_, r) in SHAPES.items()}).step()
    return {n: before[n] - p.detach() for n, p in named}


@pytest.mark.parametrize("letter,changed", [("a", {"wte.weight"}), ("b", {"h.0.out.weight"}),
                                            ("c", {"h.0.qkv.weight", "h.0.proj.weight", "h.0.fc.weight",
                                                   "h.0.out.weight"})])
def test_each_ablation_changes_only_its_parameters(composed, letter, changed):
    plain = one_step(composed["dual"].config["optim"])
    ablated = one_step(composed[ABLATIONS[letter]].config["optim"])
    moved = {n for n in plain if not torch.equal(plain[n], ablated[n])}
    assert moved == changed
    if letter == "b":  # MLP down-projection [d, 4d]: sqrt(d_out/d_in) = 0.5 vs Muon's max(1, .) = 1
        assert (ablated["h.0.out.weight"].norm() / plain["h.0.out.weight"].norm()).item() == pytest.approx(2.0)


def test_the_rates_ablation_changes_only_head_and_vector_steps():
    dual = compose(BASE + ["optim=dual"])["optim"]
    plain = one_step(dual)
    ablated = one_step({**dual, "head_lr": 0.004, "scalar_lr": 0.015})
    moved = {n for n in plain if not torch.equal(plain[n], ablated[n])}
    assert moved == {"lm_head.weight", "h.0.ln.weight", "h.0.fc.bias"}
    assert math.isclose((ablated["lm_head.weight"].norm() / plain["lm_head.weight"].norm()).item(), 0.5, rel_tol=1e-5)
