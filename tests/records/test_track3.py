"""Track 3 as experiments (those with a track-3 reference: block, and the proxies), without the reference
scripts (those comparisons: test_track3_vs_scripts.py; through the trainer: test_track3_runs.py): the
configs' figures, the validation cadence against the published curves, the schedule, the model features
(head bias, algebraic softcap, init, bf16 table) and the summed loss in the trainer."""
from __future__ import annotations

import math

import pytest
import torch

from analysis.curves import record_curves
from analysis.records import experiments_with_reference
from harness.loop.schedule import extra_val_steps, lr_factor, val_due
from model.config import ModelConfig
from model.gpt import GPT
from optim import build_optimizer
from tests.records.expected import EXPECTED
from tests.support.inprocess import compose_config

TRACK3 = experiments_with_reference(track=3)
PROXIES = ["track3_proxy_cpu", "track3_proxy_gpu"]  # track 3 scaled down: no published result


def _groups(experiment: str) -> dict[str, tuple]:
    import tools.describe as describe
    model, opt = describe.build_on_meta(describe.load([f"experiment={experiment}"]))
    assert sum(p.numel() for p in model.parameters()) == EXPECTED[experiment].params
    return {g["role"]: (g["map"], g["initial_lr"], g["weight_decay"], tuple(g.get("betas", ())))
            for g in opt.param_groups}, opt


@pytest.mark.parametrize("experiment", TRACK3)
def test_groups_are_the_scripts(experiment):
    groups, opt = _groups(experiment)
    want = EXPECTED[experiment]
    assert groups == want.groups
    assert opt.adam.eps == want.adam_eps
    if want.linear is not None:
        lin = opt.linear
        assert (opt.momentum, lin.nesterov, opt.warmup[1], lin.ns_method, lin.ns_steps, lin.scale) == want.linear


@pytest.mark.parametrize("experiment,published", [*((e, True) for e in TRACK3), *((e, False) for e in PROXIES)])
def test_validation_steps_are_the_published_curves(experiment, published):
    """The steps our trainer validates at = the steps the scripts printed (the reference: block's curve), up to
    the run's last step: train.stop_after_step where set (#46 stops after 2690, and validates there); and the
    whole schedule's, were it run to max_steps, against the whole curve."""
    tc = compose_config(f"experiment={experiment}").train
    extra = extra_val_steps(tc.val_extra_steps)
    stop = tc.max_steps if tc.stop_after_step is None else tc.stop_after_step
    for end in {stop, tc.max_steps}:
        ours = [s for s in range(end + 1) if s == end or val_due(s, tc.max_steps, tc.val_every, tc.val_tail_every,
                                                                  tc.val_tail_frac, tc.val_at_start, extra)]
        if not published:  # the proxies: same rule, scaled
            assert ours[0] == 0 and ours[-1] == tc.max_steps and tc.val_tail_every > 0
            continue
        assert ours == sorted({p.step for c in record_curves(experiment) for p in c.points if p.step <= end}), end


def test_schedule_is_stable_then_linear_with_the_fractional_cooldown():
    # track3_adamw: 5625 steps, cooldown 0.7 x 5625 = 3937.5 steps, warmup 250 multiplied in
    f = [lr_factor(s, 5625, 250 / 5625, 0.7, 0.0) for s in range(5625)]
    assert f[0] == 1 / 250 and f[248] == 249 / 250 and f[249] == 1.0
    assert f[1687] == 1.0 and f[1688] == pytest.approx((5625 - 1688) / 3937.5, rel=1e-15)
    assert f[5624] == pytest.approx(1 / 3937.5, rel=1e-12)
    # overlap (a short run): warmup and cooldown multiply, as the script's warmup * eta
    assert lr_factor(3, 10, 0.5, 0.7, 0.0) == pytest.approx((4 / 5) * (10 - 3) / 7)  # warmup 5, cooldown 7
    assert lr_factor(5, 10, 0.5, 0.7, 0.0) == pytest.approx(1.0 * (10 - 5) / 7)
    # record 20's fractional warmdown: 0.4 x 1393 = 557.2 steps
    assert lr_factor(1200, 1393, 0.0, 0.4, 0.1) == pytest.approx(0.1 + 0.9 * (1393 - 1200) / 557.2, rel=1e-14)


def test_val_due_rule():
    assert [s for s in range(101) if val_due(s, 100, 20, 5, 0.1)] == [0, 20, 40, 60, 80, 90, 95, 100]
    assert [s for s in range(11) if val_due(s, 10, 0)] == [10]


def _tiny(*overrides: str) -> GPT:
    """track3_muon's model at 1 layer x 256 (2 heads of 128), vocabulary 64."""
    cfg = compose_config("experiment=track3_muon", "model.n_layer=1", "model.n_embd=256", "model.n_head=2",
                         "model.vocab_size=64", *overrides)
    torch.manual_seed(0)
    return GPT(cfg.model)


def test_head_bias_softcap_and_init():
    from model.config import SoftCap
    m = _tiny("model.embed_bf16=false")
    assert m.lm_head.bias is not None and torch.count_nonzero(m.lm_head.bias) == 0
    assert torch.count_nonzero(m.lm_head.weight) == 0 and torch.count_nonzero(m.blocks[0].mlp.proj.weight) == 0
    assert m.blocks[0].attn.q.bias is not None and torch.count_nonzero(m.blocks[0].attn.q.bias) == 0
    fc = m.blocks[0].mlp.fc.weight
    assert fc.std().item() == pytest.approx(math.sqrt(0.33 / 256), rel=0.03)  # N(0, 0.33 / fan_in)
    assert m.wte.weight.std().item() == pytest.approx(1.0, rel=0.05) and torch.all(m.ln_f.weight == 1)
    with torch.no_grad():
        m.lm_head.weight.normal_(0, 10.0)
        m.lm_head.bias.fill_(3.0)
    idx = torch.randint(0, 64, (1, 8))
    m.cfg.softcap = SoftCap.none
    z = m(idx)
    m.cfg.softcap = SoftCap.algebraic
    logits = m(idx)
    torch.testing.assert_close(logits, 15 * z / torch.sqrt(z * z + 225))  # 15 z / sqrt(z^2 + 15^2)
    assert logits.abs().max() < 15 and z.abs().max() > 15


def test_bf16_table_is_stored_in_bf16_and_updated_in_fp32_once():
    m = _tiny()
    assert m.wte.weight.dtype == torch.bfloat16 and m.lm_head.weight.dtype == torch.float32
    assert m(torch.randint(0, 64, (1, 8))).dtype == torch.float32  # CPU without autocast: computed in fp32
    cfg = compose_config("experiment=track3_muon").optim
    opt = build_optimizer(cfg, list(m.named_parameters()), m.param_roles())
    before = m.wte.weight.detach().float().clone()
    for p in m.parameters():
        p.grad = torch.full_like(p, 0.5)  # Adam's first step: direction 0.5 / (0.5 + 1e-10)
    opt.step()
    lr, wd, d = 0.7, 0.001, 0.5 / (0.5 + 1e-10)
    once = (before * (1 - lr * wd) - lr * d).bfloat16().float()  # decay + step in fp32, one rounding
    twice = ((before * (1 - lr * wd)).bfloat16().float() - lr * d).bfloat16().float()
    assert torch.equal(m.wte.weight.float(), once)
    assert not torch.equal(once, twice)  # where the decay's rounding matters


def test_config_rules_name_the_fix():
    with pytest.raises(ValueError, match="tie_embeddings=false"):
        ModelConfig(head_bias=True).check()
    with pytest.raises(Exception, match="rate_mode=manual"):
        compose_config("experiment=track3_adamw", "optim.rate_mode=mass")
    with pytest.raises(Exception, match="hidden_adam_betas"):
        compose_config("experiment=track3_adamw", "optim.hidden_adam_betas=[0.9]")


def test_summed_loss_gives_the_sum_over_the_steps_tokens(tmp_path, monkeypatch):
    """train.loss_reduction=sum: the optimizer sees global_batch_tokens x the mean-loss gradient
    (smoke: 4,096 tokens per step in 2 micro-steps), whatever the accumulation."""
    import train
    from tests.support import inprocess

    seen = {}

    def spy(cfg, named, roles):
        opt = build_optimizer(cfg, named, roles)
        original = opt.step

        def step(*a, **k):
            seen.setdefault(run, [p.grad.clone() for _, p in named])
            return original(*a, **k)
        opt.step = step
        return opt

    monkeypatch.setattr(train, "build_optimizer", spy)
    for run in ("mean", "sum"):
        inprocess.run(tmp_path / run, "train.max_steps=1", f"train.loss_reduction={run}", "train.val_every=0")
    for g_mean, g_sum in zip(seen["mean"], seen["sum"]):
        torch.testing.assert_close(g_sum, g_mean * 4096, rtol=1e-5, atol=1e-6 * g_sum.abs().max().item())


def test_algebraic_softcap_gradient_is_exact():
    from model.layers import algebraic_softcap
    z = (torch.randn(6, 7, dtype=torch.float64) * 20).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: algebraic_softcap(t, 15.0, 15.0), (z,))
    y = algebraic_softcap(z, 15.0, 15.0)
    torch.testing.assert_close(y, 15 * z / torch.sqrt(z ** 2 + 225))
    compiled = torch.compile(lambda t: algebraic_softcap(t, 15.0, 15.0), backend="eager")  # the plain expression
    torch.testing.assert_close(compiled(z), y)


def test_another_optimizer_on_a_track3_experiment_inherits_none_of_its_values():
    """The script's optimizer is a preset of the optim group: `optim=dual` on top of track 3 is plain dual."""
    from optim.hybrid_config import DualConfig
    dual = compose_config("experiment=track3_proxy_cpu", "optim=dual").optim
    for key in ("lr", "embed_map", "scale", "ns_method", "weight_decay", "adam_weight_decay", "embed_lr",
                "head_lr", "scalar_lr", "momentum_warmup_steps"):
        assert getattr(dual, key) == getattr(DualConfig, key), key
    assert compose_config("experiment=track3_proxy_cpu").optim.ns_method == "track3"
