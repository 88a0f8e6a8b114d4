"""Every record config (experiments with a track-1 reference: block), built on the meta device, matches its row
of the reference tables (../shared/reference/records/README.md), restated in tests/records/expected.py: shapes,
parameter count, update rule per role, rates, betas/momentum, weight decay, Newton-Schulz, schedule, batch and
validation cadence."""
import math

import pytest

import tools.describe as describe
from analysis.records import experiments_with_reference
from tests.records.expected import EXPECTED, VP, C, V

RECORDS = experiments_with_reference(track=1)


@pytest.fixture(scope="module")
def built():
    """record -> (config, model on meta, optimizer over the meta parameters)."""
    out = {}
    for rec in RECORDS:
        cfg = describe.load([f"experiment={rec}"])
        model, opt = describe.build_on_meta(cfg)
        out[rec] = (cfg, model, opt)
    return out


@pytest.mark.parametrize("rec", RECORDS)
def test_parameter_count_and_roles(built, rec):
    cfg, model, _ = built[rec]
    assert all(p.device.type == "meta" for p in model.parameters())
    want = EXPECTED[rec]
    assert sum(p.numel() for p in model.parameters()) == want.params
    roles = model.param_roles()
    got = {}
    for name, p in model.named_parameters():
        n, e = got.get(roles[name], (0, 0))
        got[roles[name]] = (n + 1, e + p.numel())
    assert got == want.roles
    assert sum(e for _, e in want.roles.values()) == want.params


@pytest.mark.parametrize("rec", RECORDS)
def test_update_rule_rate_and_decay_per_role(built, rec):
    cfg, model, opt = built[rec]
    roles = model.param_roles()
    by_id = {id(p): roles[n] for n, p in model.named_parameters()}
    seen = {}
    for g in opt.param_groups:
        rule = g.get("map", type(opt).__name__)
        for p in g["params"]:
            seen[by_id[id(p)]] = (rule, g["initial_lr"], g["weight_decay"])
    e = EXPECTED[rec]
    expected = {r: e.rules[r] for r in e.roles}
    assert set(seen) == set(expected)
    for role, (rule, lr, wd) in expected.items():
        got_rule, got_lr, got_wd = seen[role]
        assert (got_rule, got_wd) == (rule, wd) and math.isclose(got_lr, lr), (role, seen[role])
    if e.adamw is not None:
        betas, eps = e.adamw
        g = opt.param_groups[0]
        assert tuple(g["betas"]) == betas and g["eps"] == eps


@pytest.mark.parametrize("rec", [r for r in RECORDS if EXPECTED[r].muon is not None])
def test_muon_momentum_newton_schulz_and_adam_settings(built, rec):
    cfg, _, opt = built[rec]
    scale, method, steps, mom, nesterov, w_start, w_steps, betas, eps, _ = EXPECTED[rec].muon
    o = cfg.optim
    assert (o.name, o.scale, o.ns_method, o.ns_steps, o.momentum, o.nesterov) == ("muon", scale, method, steps, mom, nesterov)
    assert o.momentum_warmup_steps == w_steps and (w_start is None or o.momentum_warmup_start == w_start)
    assert tuple(o.adam_betas) == betas and o.adam_eps == eps
    assert o.weight_decay == 0 and o.adam_weight_decay == 0
    # the momentum the optimizer will actually use: warmup ramp, then constant
    if w_steps:
        assert math.isclose(opt.beta(1), w_start) and math.isclose(opt.beta(w_steps + 1), mom)
        assert math.isclose(opt.beta(w_steps // 2 + 1), (w_start + mom) / 2)
    else:
        assert opt.beta(1) == mom


def test_record4_rms_match_reproduces_the_record_step():
    """The record stepped 3.6e-4 * sqrt(max(rows, cols)) (per QKV block: sqrt(768)); rms_match is
    0.2 * sqrt(max(rows, cols)) per block, so lr 1.8e-3 gives the same step for every matrix."""
    from optim.maps import linear_scale
    for rows, cols in ((768, 768), (3072, 768), (768, 3072)):
        assert math.isclose(1.8e-3 * linear_scale(rows, cols, "rms_match"), 3.6e-4 * math.sqrt(max(rows, cols)))


@pytest.mark.parametrize("rec", RECORDS)
def test_schedule_batch_and_validation(built, rec):
    cfg, e = built[rec][0], EXPECTED[rec]
    tc = cfg.train
    steps, warmup, warmdown, final, seq, micro, val_every, extension = e.train
    assert tc.max_steps == steps and tc.final_lr_frac == final and tc.extension_steps == extension
    scheduled = steps - extension  # records 43, 46: the cooldown is a fraction of the scheduled steps
    assert round(tc.warmup_frac * steps) == warmup and round(tc.warmdown_frac * scheduled) == warmdown
    assert (tc.seq_len, tc.micro_batch_seqs, tc.val_every) == (seq, micro, val_every)
    assert tc.global_batch_tokens == e.batch_tokens == 8 * micro * seq  # 8 GPUs x accumulation 1
    packed = cfg.data.mode.value == "varlen"  # validation rows of val_rank_tokens (records 29-46)
    val_rows = 8 * cfg.data.varlen.val_rank_tokens if packed else 8 * micro * seq
    assert tc.val_tokens == 10_485_760 and tc.val_tokens % val_rows == 0
    assert cfg.model.block_size >= (max(seq, val_rows // 8) if packed else seq)


def test_lr_schedule_values_match_the_records():
    from harness.loop.schedule import lr_factor

    # record 2: (it+1)/256 warmup, then (9536 - it)/2048 warmdown
    assert lr_factor(0, 9536, 256 / 9536, 2048 / 9536, 0.0) == 1 / 256
    assert lr_factor(9536 - 2048, 9536, 256 / 9536, 2048 / 9536, 0.0) == 1.0
    assert lr_factor(9535, 9536, 256 / 9536, 2048 / 9536, 0.0) == 1 / 2048
    # record 20: 1.0 then linear to 0.1 over the last 40%, a fractional 557.2 steps: w + (1 - w) 0.1 with
    # w = min(1, (1 - it / 1393) / 0.4), at every step
    for it in range(1393):
        w = min((1 - it / 1393) / 0.4, 1.0)
        assert abs(lr_factor(it, 1393, 0.0, 0.4, 0.1) - (w + (1 - w) * 0.1)) < 1e-12, it


def test_record_exactness_switches(built):
    """RMSNorm eps, Muon's momentum form and the data order each record's script used."""
    for rec in RECORDS:
        cfg, e = built[rec][0], EXPECTED[rec]
        assert cfg.model.norm_eps == e.norm_eps, rec
        if e.muon is not None:
            assert cfg.optim.momentum_form == e.muon.form, rec
        assert cfg.data.shard_tail.value == e.shard_tail, rec
        assert cfg.data.repeat_first_batch == e.repeat_first_batch, rec


def test_record_architecture_details(built):
    m5, m8, m20 = (built[r][0].model for r in ("record05_modernarch", "record08_untie", "record20_sub3min"))
    assert (m5.qk_norm.value, m8.qk_norm.value) == ("after_rope", "before_rope")
    assert m20.head_dim == 128 and m20.attn_scale == 0.12 and m20.rope_half_truncated and m20.rope_base == 1024
    assert (m20.softcap.value, m20.softcap_scale, m20.softcap_div) == ("sigmoid", 30.0, 7.5)
    assert m20.no_attn_layers == [7] and m20.value_embed_layers == [0, 1, 2, 9, 10, 11]
    m12 = built["record12_flexattn"][0].model
    assert (m12.window_size, m12.window_block, m12.doc_causal, m12.unet_skips) == (1024, 0, True, True)
    model20 = built["record20_sub3min"][1]
    assert model20.wte.weight.shape == (V, C) and model20.lm_head.weight.shape == (VP, C)
    assert not hasattr(model20.blocks[7], "attn") and model20.blocks[1].attn.short_window


def test_describe_prints_the_summary(capsys):
    assert describe.main(["experiment=record08_untie"]) == 0
    out = capsys.readouterr().out
    assert "parameters: 162201600 " in out
    assert "embed" in out and "0.3" in out and "0.002" in out and "momentum 0.95 nesterov" in out
    assert describe.main(["experiment=record08_untie", "model.n_layr=2"]) == 2
    assert "model.n_layr" in capsys.readouterr().err
