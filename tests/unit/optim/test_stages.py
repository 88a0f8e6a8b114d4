"""The stage registry (optim/stages/) is the only place a stage is wired: a toy stage added to the registry
alone (monkeypatched STAGES, nothing else touched) is run by the optimizer at its hook point; every
registered stage's keys are schema keys with the defaults users and checkpoints rely on."""
from dataclasses import fields, make_dataclass

import pytest
import torch
from omegaconf import OmegaConf

import optim.stages
from optim import build_hybrid
from optim.hybrid_config import DualConfig
from optim.stages import STAGES, _stage_keys, check_stages
from optim.stages.base import Key, MatrixContext, Stage, StepContext

D, V = 16, 24
SHAPES = {"wte.weight": ([V, D], "embed"), "h.0.qkv.weight": ([3 * D, D], "attn_qkv"),
          "h.0.fc.weight": ([4 * D, D], "mlp_in"), "h.1.fc.weight": ([4 * D, D], "mlp_in"),
          "h.0.ln.weight": ([D], "gain"), "lm_head.weight": ([V, D], "head")}
LINEAR = {"h.0.qkv.weight", "h.0.fc.weight", "h.1.fc.weight"}
STEPS = 3


def toy_config(stage: Stage, on: bool, **overrides):
    """DualConfig plus the toy stage's switch and keys, as the registry adds them to the schema (StageKeys)."""
    schema = make_dataclass("ToyConfig", [(f.name, f.type, f) for f in fields(_stage_keys((stage,)))],
                            bases=(DualConfig,))
    base = {"lr": 0.05, "momentum_warmup_steps": 0, "embed_eps": 0.0, "ns_method": "six_step"}
    return OmegaConf.structured(schema(**{**base, stage.name: on, **overrides}))


def deltas(cfg, steps=STEPS):
    """Per-parameter change over `steps` steps on fixed synthetic gradients (same params, same gradients)."""
    g = torch.Generator().manual_seed(0)
    named = [(n, torch.nn.Parameter(torch.randn(*s, generator=g) * 0.1)) for n, (s, _) in SHAPES.items()]
    roles = {n: r for n, (_, r) in SHAPES.items()}
    grads = [{n: torch.randn(p.shape, generator=g) for n, p in named} for _ in range(steps)]
    before = {n: p.detach().clone() for n, p in named}
    opt = build_hybrid(cfg, named, roles)
    for step in grads:
        for n, p in named:
            p.grad = step[n].clone()
        opt.step()
    return {n: before[n] - p.detach() for n, p in named}


def register(monkeypatch, stage: Stage) -> None:
    """The one line a new stage adds: its entry in the registry."""
    monkeypatch.setattr(optim.stages, "STAGES", (*STAGES, stage))


def test_a_toy_before_ns_stage_runs_per_linear_weight_on_the_newton_schulz_input(monkeypatch):
    seen = []

    def flip(u, ctx):  # Newton-Schulz is odd: a negated input gives the negated U V^T
        assert isinstance(ctx, MatrixContext) and "momentum_buffer" in ctx.state
        seen.append((ctx.role, tuple(u.shape)))
        return -u

    stage = Stage("toy_flip", "before_ns", "negates the input", build=lambda cfg: flip)
    register(monkeypatch, stage)
    plain, toy = deltas(toy_config(stage, False)), deltas(toy_config(stage, True))
    assert sorted(set(seen)) == [("attn_qkv", (3, D, D)), ("mlp_in", (4 * D, D))] and len(seen) == 3 * STEPS
    for name in SHAPES:
        if name in LINEAR:
            torch.testing.assert_close(toy[name], -plain[name], rtol=0, atol=1e-6)
            assert not torch.allclose(toy[name], plain[name])
        else:
            assert torch.equal(toy[name], plain[name])


def test_a_toy_after_ns_stage_scales_the_linear_map_output(monkeypatch):
    def double(d, ctx):
        assert ctx.scale > 0
        return d * 2

    stage = Stage("toy_double", "after_ns", "doubles d", build=lambda cfg: double)
    register(monkeypatch, stage)
    plain, toy = deltas(toy_config(stage, False)), deltas(toy_config(stage, True))
    for name in SHAPES:
        if name in LINEAR:
            torch.testing.assert_close(toy[name], 2 * plain[name], rtol=1e-5, atol=1e-7)
        else:
            assert torch.equal(toy[name], plain[name])


def test_a_toy_layer_rates_stage_multiplies_linear_and_embed_layers_rates(monkeypatch):
    def halve(ctx):
        assert isinstance(ctx, StepContext) and ctx.world == 1 and sorted(ctx.mine) == list(range(len(ctx.linear)))
        return {p: torch.tensor(0.5) for p, _ in ctx.linear} | {p: torch.tensor(0.5) for p, _, _ in ctx.embed}

    stage = Stage("toy_half", "layer_rates", "halves rates", build=lambda cfg: halve)
    register(monkeypatch, stage)
    plain, toy = deltas(toy_config(stage, False)), deltas(toy_config(stage, True))
    for name, (_, role) in SHAPES.items():
        if name in LINEAR or role == "embed":
            torch.testing.assert_close(toy[name], 0.5 * plain[name], rtol=1e-5, atol=1e-7)
        else:  # Adam-routed: the head and the gain
            assert torch.equal(toy[name], plain[name])


def test_a_toy_decay_stage_replaces_the_decay_and_reads_its_own_key(monkeypatch):
    calls = []

    def build(cfg):
        keep = cfg.toy_keep  # the stage's own key, read once at build time

        def no_decay(p, d, decay, lr):
            calls.append(d.shape == p.shape)
            p.mul_(keep)
        return no_decay

    stage = Stage("toy_nodecay", "decay", "no decay", build=build, keys=(Key("toy_keep", float, 1.0, "factor kept"),))
    register(monkeypatch, stage)
    undecayed = deltas(toy_config(stage, False))
    toy = deltas(toy_config(stage, True, weight_decay=0.3, adam_weight_decay=0.3))
    assert calls and all(calls)
    assert all(torch.equal(toy[n], undecayed[n]) for n in SHAPES)
    decayed = deltas(toy_config(stage, False, weight_decay=0.3))
    assert not torch.equal(decayed["h.0.fc.weight"], undecayed["h.0.fc.weight"])


def test_two_decay_stages_on_are_refused_and_a_bad_hook_names_the_hooks(monkeypatch):
    stage = Stage("toy_decay", "decay", "another decay", build=lambda cfg: None)
    register(monkeypatch, stage)
    cfg = toy_config(stage, True, cautious_wd=True, weight_decay=0.1)
    with pytest.raises(ValueError, match="optim.cautious_wd and optim.toy_decay both replace the weight decay"):
        check_stages(cfg)
    with pytest.raises(ValueError, match="hook 'after_everything' is not one of"):
        Stage("toy", "after_everything", "", build=lambda cfg: None)


def test_the_registered_stages_keys_are_the_schemas_with_their_defaults():
    """The keys users type (benchmark arms, reports, checkpoints' configs) and their defaults."""
    defaults = {f.name: f.default for f in fields(DualConfig)}
    expected = {"normuon": False, "normuon_beta": 0.95, "normuon_eps": 1e-8, "lanton": False, "lanton_beta": 0.95,
                "cautious_wd": False}
    assert {k: defaults[k] for k in expected} == expected
    stage_keys = {s.name for s in STAGES} | {k.name for s in STAGES for k in s.keys}
    assert set(expected) <= stage_keys <= set(defaults)
    toy = Stage("toy", "after_ns", "", build=lambda cfg: None, keys=(Key("toy_rms", float, 0.5, ""),))
    assert {f.name: f.default for f in fields(_stage_keys((toy,)))} == {"toy": False, "toy_rms": 0.5}
    with pytest.raises(ValueError, match="the same config key twice: \\['normuon_beta'\\]"):
        _stage_keys((*STAGES, Stage("x", "decay", "", build=lambda cfg: None, keys=(Key("normuon_beta", float, 0, ""),))))
