"""Track-3 result #46's loop pieces against the script's own code (track3_best46_cwd_rowfloor_tailema.py, loaded
on CPU by tests/support/track3_reference.py; skipped without ../shared): the per-group lr of every step
0..2900 (its set_hparams, run on its optimizers over a shrunk model of its own), its EMA_Nesterov class
against optim/lookahead.py from identical updates (a step inside the window, and a resume), and its
validation steps. The tail-EMA readout has no function in the script (it is inline in the loop): its
test against an independent computation is tests/unit/harness/test_tail_ema.py."""
from __future__ import annotations

import copy

import pytest
import torch

from harness.config.schema import LrScheduleKind, PowerCoolConstants, TrainConfig, ValSteps
from harness.loop.schedule import LrSchedule, extra_val_steps, val_due
from optim.lookahead import EMANesterov
from tests.support.track3_reference import BEST46, needs_best46, script_definitions, script_setup, script_val_steps

pytestmark = [needs_best46, pytest.mark.e2e]  # integration: the reference script's code


@pytest.fixture(scope="module")
def script():
    ns = script_definitions(BEST46)
    torch.manual_seed(0)
    model = ns["GPT"](vocab_size=64, num_layers=2, model_dim=128)
    return script_setup(BEST46, ns, model)


def test_powercool_lr_of_every_group_at_every_step_is_the_scripts(script):
    # The script's groups in order, with our role for each (its attn.proj.bias group: role "bias" here, the
    # model piece's attn-out-bias role when it exists; its constant is the other Adam groups').
    ns = script
    opt1, opt2, opt3 = ns["optimizers"][0].inner_optimizer
    theirs = [*opt1.param_groups, *opt2.param_groups, *opt3.param_groups]
    roles = ["embed", "head", "attn_q", "gain", "bias", "bias"]
    ours = [{"role": r, "initial_lr": g["initial_lr"]} for r, g in zip(roles, theirs)]
    tc = TrainConfig(max_steps=2900, lr_schedule=LrScheduleKind.powercool, powercool_end=2900, powercool_power=1.2,
                     powercool_c=PowerCoolConstants(embed=ns["ADAM_EMBED_POWER_C"], head=ns["ADAM_PROJ_POWER_C"],
                                                    attn_q=ns["MUON_POWER_C"], gain=ns["ADAM_OTHER_POWER_C"],
                                                    bias=ns["ADAM_OTHER_POWER_C"]))
    schedule = LrSchedule(tc, ours)
    for step in range(2901):
        ns["set_hparams"](step)
        schedule.apply(ours, step)
        assert [g["lr"] for g in ours] == [g["lr"] for g in theirs], step  # bit for bit


def _params(seed: int):
    gen = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(6, 4, generator=gen)),
            torch.nn.Parameter(torch.randn(5, generator=gen).to(torch.bfloat16))]


def _inner(params):
    return torch.optim.SGD([{"params": [params[0]], "role": "embed", "lr": 0.3, "initial_lr": 0.3},
                            {"params": [params[1]], "role": "bias", "lr": 0.01, "initial_lr": 0.01}], momentum=0.9)


def _lr(t: int) -> float:
    return min(0.3, 4.976805410800738e-05 * max(0.0, 12 - t) ** 1.2 * 300)  # a cooldown within the window


def _step(params, opt, t, jump, last):
    jump()
    for p in params:  # a gradient that depends on the (shifted) weights
        p.grad = (torch.cos(p.detach().float() * (t + 2)) - 0.2).to(p.dtype)
    for g in last.param_groups:
        g["lr"] = _lr(t) if g["role"] == "embed" else g["initial_lr"]
    opt.step()


def test_ema_nesterov_equals_the_scripts_class_from_identical_updates(script):
    """Window [3, 8) of 12 steps (the script's prefill_steps=3, rest_steps=8), lookahead 0.3 scaled by the
    embedding group's lr ratio, EMA 0.99; the lr falls inside the window, so the coefficient changes."""
    EMA_Nesterov = script["EMA_Nesterov"]
    ref_params, our_params = _params(0), _params(0)
    ref_inner, our_inner = _inner(ref_params), _inner(our_params)
    ref = EMA_Nesterov(ref_params, [ref_inner], lookahead_stepsize=0.3, use_scheduled_lookahead_stepsize=True,
                       lookahead_ema=0.99, prefill_steps=3, rest_steps=8)
    ours = EMANesterov(our_inner, 0.3, 0.99, 3, 8, "embed")
    checkpoint = None
    for t in range(12):
        _step(ref_params, ref, t, ref.nesterov_step, ref_inner)
        _step(our_params, ours, t, ours.pre_forward, our_inner)
        assert ours.last_coefficient == ref.current_lookahead_stepsize, t
        for a, b in zip(ref_params, our_params):
            assert torch.equal(a, b), t
        for p, buf in zip(ref_params, ours.buf):
            assert torch.equal(ref.state[p]["lookahead_buffer"][0], buf), t
        if t == 4:  # inside the window: resume a copy from here
            # (deepcopy: torch's state_dict holds the live momentum buffers; a checkpoint is a file)
            checkpoint = ({i: p.detach().clone() for i, p in enumerate(our_params)}, copy.deepcopy(ours.state_dict()))
    assert ref.it == ours.steps == 12
    # The resumed copy: fresh parameters and optimizer, the state of step 5, on to step 12.
    weights, state = checkpoint
    resumed_params = _params(1)
    with torch.no_grad():
        for i, p in enumerate(resumed_params):
            p.copy_(weights[i])
    resumed_inner = _inner(resumed_params)
    resumed = EMANesterov(resumed_inner, 0.3, 0.99, 3, 8, "embed")
    resumed.load_state_dict(state)
    for t in range(5, 12):
        _step(resumed_params, resumed, t, resumed.pre_forward, resumed_inner)
    for a, b in zip(ref_params, resumed_params):
        assert torch.equal(a, b)


def test_validation_steps_are_the_scripts_plus_the_every_5_tail():
    """Our #46 cadence (every 125, none at 0, every 5 on [2600, 2810], every 10 on [2820, 2890], 2895): the
    script's 55 steps and the 20 steps 2600..2695 that the published curves also hold (its README's files)."""
    extra = extra_val_steps([ValSteps(first=2600, last=2810, every=5), ValSteps(first=2820, last=2890, every=10),
                             ValSteps(first=2895, last=2895)])
    ours = {s for s in range(2901) if val_due(s, 2900, 125, at_start=False, extra=extra)}
    theirs = script_val_steps(BEST46, 2900, 2900)
    assert len(theirs) == 55 and 0 not in theirs
    assert ours == theirs | set(range(2600, 2700, 5))
