"""Every record config, built on the meta device, matches its row of the reference tables
(../shared/reference/records/README.md): shapes, parameter count, update rule per role, rates,
betas/momentum, weight decay, Newton-Schulz, schedule, batch and validation cadence."""
import math

import pytest
import torch

import tools.describe as describe

C, H4 = 768, 3072  # width, MLP hidden
V, VP = 50257, 50304
E_TIED, E_PAD = V * C, VP * C
QKV, SQ = 3 * C * C, C * C  # fused [3C, C]; one [C, C]
MLP = C * H4

# role -> (tensors, elements)
ARCH = {
    "record02_adamw": {"embed_head": (1, E_TIED), "attn_qkv": (12, 12 * QKV), "attn_out": (12, 12 * SQ),
                       "mlp_in": (12, 12 * MLP), "mlp_out": (12, 12 * MLP)},
    "record05_modernarch": {"embed_head": (1, E_PAD), "attn_q": (12, 12 * SQ), "attn_k": (12, 12 * SQ),
                            "attn_v": (12, 12 * SQ), "attn_out": (12, 12 * SQ), "mlp_in": (12, 12 * MLP),
                            "mlp_out": (12, 12 * MLP)},
}
ARCH["record04_muon"] = ARCH["record02_adamw"]
ARCH["record08_untie"] = {**{k: v for k, v in ARCH["record05_modernarch"].items() if k != "embed_head"},
                          "embed": (1, E_PAD), "head": (1, E_PAD)}
ARCH["record09_shortcuts"] = {**ARCH["record08_untie"], "scalar": (12 + 12, 12 + 24)}  # lamb; x0 (a, b)
ARCH["record12_flexattn"] = {**ARCH["record08_untie"], "scalar": (12 + 12 + 1, 12 + 24 + 6)}  # + skip weights
ARCH["record20_sub3min"] = {"embed": (1, E_TIED), "value_embed": (3, 3 * E_TIED), "head": (1, E_PAD),
                            "attn_qkv": (11, 11 * QKV), "attn_out": (11, 11 * SQ), "mlp_in": (12, 12 * MLP),
                            "mlp_out": (12, 12 * MLP), "scalar": (11 + 12 + 1, 22 + 24 + 6)}

PARAMS = {  # total parameters, recomputed by hand from the shapes above
    "record02_adamw": 123_532_032,       # 50257*768 + 12*(4*768^2 + 8*768^2)
    "record04_muon": 123_532_032,
    "record05_modernarch": 123_568_128,  # vocab padded to 50304
    "record08_untie": 162_201_600,       # + untied 50304 x 768 head
    "record09_shortcuts": 162_201_636,   # + 12 value-residual lambdas + 12 x (a, b)
    "record12_flexattn": 162_201_642,    # + 6 U-net skip weights
    "record20_sub3min": 275_598_388,     # embed 50257 + 3 value embeds 50257 + head 50304, 11 attn, 52 scalars
}

HIDDEN = ("attn_qkv", "attn_q", "attn_k", "attn_v", "attn_out", "mlp_in", "mlp_out")
# role -> (update rule, lr, weight decay); rules: AdamW, linear (Muon) or adam
RULES = {
    "record02_adamw": {r: ("AdamW", 1.8e-3, 0.1) for r in ARCH["record02_adamw"]},
    "record04_muon": {**{r: ("linear", 1.8e-3, 0.0) for r in HIDDEN}, "embed_head": ("adam", 3.6e-3, 0.0)},
    "record08_untie": {**{r: ("linear", 0.02, 0.0) for r in HIDDEN}, "embed": ("adam", 0.3, 0.0),
                       "head": ("adam", 0.002, 0.0)},
    "record12_flexattn": {**{r: ("linear", 0.04, 0.0) for r in HIDDEN}, "embed": ("adam", 0.6, 0.0),
                          "head": ("adam", 0.008, 0.0), "scalar": ("adam", 0.04, 0.0)},
    "record20_sub3min": {**{r: ("linear", 0.05, 0.0) for r in HIDDEN}, "embed": ("adam", 0.6, 0.0),
                         "value_embed": ("adam", 0.6, 0.0), "head": ("adam", 0.008, 0.0),
                         "scalar": ("adam", 0.04, 0.0)},
}
RULES["record05_modernarch"] = RULES["record04_muon"]
RULES["record09_shortcuts"] = {**RULES["record08_untie"], "scalar": ("adam", 0.02, 0.0)}

# Muon details: (scale rule, NS method, NS steps, momentum, nesterov, warmup start, warmup steps, adam betas, eps)
MUON = {
    "record04_muon": ("rms_match", "quintic", 5, 0.95, True, None, 0, (0.9, 0.95), 1e-8),
    "record05_modernarch": ("rms_match", "quintic", 5, 0.95, True, None, 0, (0.9, 0.95), 1e-8),
    "record08_untie": ("muon", "quintic", 5, 0.95, True, None, 0, (0.9, 0.95), 1e-8),
    "record09_shortcuts": ("muon", "quintic", 5, 0.95, True, 0.85, 500, (0.9, 0.95), 1e-8),
    "record12_flexattn": ("muon", "quintic", 5, 0.95, True, 0.85, 500, (0.9, 0.95), 1e-8),
    "record20_sub3min": ("muon", "quintic", 5, 0.95, True, 0.85, 300, (0.8, 0.95), 1e-10),
}

# steps, warmup steps, warmdown steps, final lr fraction, seq len, sequences per GPU, val every
TRAIN = {
    "record02_adamw": (9536, 256, 2048, 0.0, 1024, 64, 128),
    "record04_muon": (6200, 0, 1800, 0.0, 1024, 64, 125),
    "record05_modernarch": (5100, 0, 1450, 0.0, 1024, 64, 125),
    "record08_untie": (4578, 0, 1308, 0.0, 1024, 64, 125),
    "record09_shortcuts": (3200, 0, 914, 0.0, 1024, 64, 125),
    "record12_flexattn": (1875, 0, 562, 0.0, 65536, 1, 125),
    "record20_sub3min": (1393, 0, 557, 0.1, 65536, 1, 125),  # the record: last 40% (557.2 steps)
}
RECORDS = sorted(PARAMS)


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
    assert sum(p.numel() for p in model.parameters()) == PARAMS[rec]
    roles = model.param_roles()
    got = {}
    for name, p in model.named_parameters():
        n, e = got.get(roles[name], (0, 0))
        got[roles[name]] = (n + 1, e + p.numel())
    assert got == ARCH[rec]
    assert sum(e for _, e in ARCH[rec].values()) == PARAMS[rec]


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
    expected = {r: RULES[rec][r] for r in ARCH[rec]}
    assert set(seen) == set(expected)
    for role, (rule, lr, wd) in expected.items():
        got_rule, got_lr, got_wd = seen[role]
        assert (got_rule, got_wd) == (rule, wd) and math.isclose(got_lr, lr), (role, seen[role])
    if rec == "record02_adamw":
        g = opt.param_groups[0]
        assert tuple(g["betas"]) == (0.9, 0.95) and g["eps"] == 1e-8


@pytest.mark.parametrize("rec", sorted(MUON))
def test_muon_momentum_newton_schulz_and_adam_settings(built, rec):
    cfg, _, opt = built[rec]
    scale, method, steps, mom, nesterov, w_start, w_steps, betas, eps = MUON[rec]
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
    tc = built[rec][0].train
    steps, warmup, warmdown, final, seq, micro, val_every = TRAIN[rec]
    assert tc.max_steps == steps and tc.final_lr_frac == final
    assert round(tc.warmup_frac * steps) == warmup and round(tc.warmdown_frac * steps) == warmdown
    assert (tc.seq_len, tc.micro_batch_seqs, tc.val_every) == (seq, micro, val_every)
    assert tc.global_batch_tokens == 524_288 == 8 * micro * seq  # 8 GPUs x accumulation 1
    assert tc.val_tokens == 10_485_760 and tc.val_tokens % (8 * micro * seq) == 0
    assert built[rec][0].model.block_size >= seq


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
    eps = {"record02_adamw": 1e-6, "record04_muon": 1e-6}
    form = {"record20_sub3min": "ema"}
    tail = {"record02_adamw": "read", "record20_sub3min": "skip_step"}
    repeat = {"record04_muon", "record05_modernarch", "record08_untie", "record09_shortcuts"}
    for rec in RECORDS:
        cfg = built[rec][0]
        assert cfg.model.norm_eps == eps.get(rec), rec
        if rec != "record02_adamw":
            assert cfg.optim.momentum_form == form.get(rec, "sum"), rec
        assert cfg.data.shard_tail.value == tail.get(rec, "skip_micro_batch"), rec
        assert cfg.data.repeat_first_batch == (rec in repeat), rec


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


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_describe_help_prints_usage(flag, capsys):
    """`--help` is usage, not an override handed to Hydra's lexer (LexerNoViableAltException)."""
    assert describe.main([flag]) == 0
    captured = capsys.readouterr()
    assert "python -m tools.describe experiment=" in captured.out and captured.err == ""


EXPERIMENTS = sorted(p.stem for p in (describe.REPO / "configs" / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("exp", EXPERIMENTS)
def test_every_experiment_shrinks_to_a_cpu_run(exp):
    """shrink=cpu composes with every experiment: the layer count (and so every layer list) is kept, and
    the masks it needs fit on the CPU's SDPA path."""
    from model.masks import check_start

    full, small = describe.load([f"experiment={exp}"]), describe.load([f"experiment={exp}", "shrink=cpu", "data=synthetic"])
    assert small.model.n_layer == full.model.n_layer and small.model.no_attn_layers == full.model.no_attn_layers
    assert small.device.value == "cpu" and not small.train.compile and small.train.seq_len == 256
    assert small.model.vocab_size == full.model.vocab_size and small.optim == full.optim
    check_start(small.model, torch.device("cpu"), small.train.micro_batch_seqs, small.train.seq_len)


def test_every_bad_layer_list_is_named_in_one_error():
    with pytest.raises(Exception, match=r"model.no_attn_layers=\[7\] and model.value_embed_layers=\[0, 1, 2, 9, 10, "
                                        r"11\] and model.short_window_layers=\[1, .*\] must list distinct layer "
                                        r"indices in \[0, 2\)"):
        describe.load(["experiment=record20_sub3min", "model.n_layer=2"])


def test_a_mask_that_cannot_fit_is_refused_at_start_naming_the_fix(tmp_path):
    from tests.inprocess import user_error

    msg = user_error(tmp_path, "experiment=record20_sub3min", "device=cpu", "data=synthetic")
    assert "needs a 1 x 65536 x 65536 mask on the SDPA path" in msg and "shrink=cpu" in msg
    assert not (tmp_path / "metrics.jsonl").exists()  # refused before any data or compute


@pytest.mark.e2e
@pytest.mark.parametrize("exp", ["record20_sub3min", "track3_muon"])
def test_shrunk_records_train_on_cpu(exp, tmp_path):
    import train
    from harness.process import distributed as D
    from tests.inprocess import compose_config

    cfg = compose_config(f"experiment={exp}", "shrink=cpu", "data=synthetic", "train.max_steps=2", "train.val_every=0",
                         "train.val_tokens=512")
    summary = train.train(cfg, D.RankInfo(0, 0, 1, torch.device("cpu")), tmp_path)
    assert summary["steps"] == 2 and math.isfinite(summary["final_val_loss"])
