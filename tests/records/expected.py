"""What the record tests expect of each reproduced result: one entry per experiment with a `reference:` block.

The records themselves are declared once, in their experiment files (configs/experiment/<name>.yaml,
read by analysis/records.py); the tests in tests/records/ are parametrized from those files and look
their expectations up here (tests/records/test_declared.py fails on a block without an entry here, and
on an entry without a block). Adding a record: its experiment file and its entry here, nothing else.

Every figure is restated by hand from the reference tables (../shared/reference/records/README.md),
the records' scripts and their logs; none is read from our configs, so the tests can fail.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple, Optional

C, H4 = 768, 3072  # width, MLP hidden
V, VP = 50257, 50304
E_TIED, E_PAD = V * C, VP * C
QKV, SQ = 3 * C * C, C * C  # fused [3C, C]; one [C, C]
MLP = C * H4
HIDDEN = ("attn_qkv", "attn_q", "attn_k", "attn_v", "attn_out", "mlp_in", "mlp_out")

# role -> (tensors, elements), for the architectures several records kept
GPT2_ROLES = {"embed_head": (1, E_TIED), "attn_qkv": (12, 12 * QKV), "attn_out": (12, 12 * SQ),
              "mlp_in": (12, 12 * MLP), "mlp_out": (12, 12 * MLP)}
MODERN_ROLES = {"embed_head": (1, E_PAD), "attn_q": (12, 12 * SQ), "attn_k": (12, 12 * SQ),
                "attn_v": (12, 12 * SQ), "attn_out": (12, 12 * SQ), "mlp_in": (12, 12 * MLP),
                "mlp_out": (12, 12 * MLP)}
UNTIED_ROLES = {**{k: v for k, v in MODERN_ROLES.items() if k != "embed_head"}, "embed": (1, E_PAD),
                "head": (1, E_PAD)}


def muon_rules(lr: float, **adam_lrs: float) -> dict[str, tuple[str, float, float]]:
    """role -> (update rule, lr, weight decay): the hidden matrices on Muon ("linear"), the others on Adam."""
    return {**{r: ("linear", lr, 0.0) for r in HIDDEN}, **{r: ("adam", a, 0.0) for r, a in adam_lrs.items()}}


class Muon(NamedTuple):
    """optim=muon's settings of a record."""

    scale: str                     # update scale rule
    ns_method: str
    ns_steps: int
    momentum: float
    nesterov: bool
    warmup_start: Optional[float]  # momentum at step 1 of the warmup; None: no warmup
    warmup_steps: int
    adam_betas: tuple[float, float]
    adam_eps: float
    form: str                      # optim.momentum_form: the script's momentum buffer


class Train(NamedTuple):
    steps: int
    warmup: int           # lr warmup steps
    warmdown: int         # lr warmdown steps (records 29-46: of the scheduled steps, steps - extension)
    final_lr_frac: float
    seq_len: int          # tokens per sequence (records 29-46: one packed row per GPU and micro-step)
    micro_batch_seqs: int  # sequences per GPU
    val_every: int
    extension: int = 0    # records 43, 46: steps after the schedule, at its end values


@dataclass(frozen=True)
class Script:
    """How the record's own script is compared with our model at shrunk width (test_vs_scripts.py) and
    edited by benchmarks/vs_reference (test_vs_reference_edits.py)."""

    layers: int                        # our depth and the script's, shrunk
    batch: tuple[int, int]             # input [B, T]
    bos: tuple[int, ...] = ()          # positions of <|endoftext|> in the input (document masking)
    constructor: str = "GPTConfig"     # GPT(GPTConfig(vocab_size=padded, ...)); "kwargs": GPT(vocab_size=V, ...)
    call: str = "batch"                # the script's forward: "batch" model(x, y, return_logits=False)[1];
                                       # "packed" model(x[0], y[0]); "windowed" model(x[0], y[0], window blocks)
    loss_steps: tuple[int, ...] = (0,)  # steps whose loss and gradients are compared (more than one: the window grows)
    shrunk_window: tuple[tuple[str, ...], dict[int, int]] = ((), {})  # our overrides; the script's constants
    wider_window: Optional[str] = None  # an override that widens our window: the loss must change (it binds)
    fixed_window_units: Optional[tuple[int, int]] = None  # (long, short) window at every step, full size
    window_schedule: bool = False      # the script's window_size statement against ours at every step
    optimizers_from: str = "optimizer1"  # the script's first optimizer statement
    other_momentum_form: Optional[str] = None  # parts from the script within 3 warmup steps
    one_gpu_plan: str = "accumulates 8 micro-batches"  # in benchmarks/vs_reference's plan for 1 GPU
    passes_compile_kw: bool = False    # the script passes create_block_mask's `_compile` (edited on newer torch)


@dataclass(frozen=True)
class Run:
    """5 steps through train.py, shrunk (test_runs.py)."""

    overrides: tuple[str, ...] = ()   # beyond the shared shrink: layer lists that fit, windows that bind
    time_to_target: bool = False      # also run to a target every validation meets (the early stop)


@dataclass(frozen=True)
class Track1:
    """A speedrun record: its config built on the meta device (test_configs.py), its curve (test_curves.py)."""

    params: int
    roles: dict[str, tuple[int, int]]
    rules: dict[str, tuple[str, float, float]]  # role -> (update rule, lr, weight decay); extra roles ignored
    train: Train
    shard_tail: str
    repeat_first_batch: bool
    first_below_target: tuple[int, float, Optional[int]]  # the curve's first val loss <= 3.28: (step, loss, ms)
    norm_eps: Optional[float] = None  # None: torch's default
    muon: Optional[Muon] = None
    adamw: Optional[tuple[tuple[float, float], float]] = None  # (betas, eps) of AdamW on every parameter
    script: Optional[Script] = None   # None: the script is not in ../shared, or (records 29-46) it is compared by
                                      # tests/records/test_records29_46_*.py, test_records43_46_optim.py
    run: Run = field(default_factory=Run)
    batch_tokens: int = 524_288       # tokens per step (records 29-46: 8 packed rows; record 46 its first stage)


class Linear(NamedTuple):
    momentum: float
    nesterov: bool
    warmup_steps: int
    ns_method: str
    ns_steps: int
    scale: str


@dataclass(frozen=True)
class Track3Run:
    """20 steps through train.py at 1 x 128 (test_track3_runs.py): overrides beyond the shared shrink (the
    schedule horizons shrunk with the run, so its windows fall inside it) and the steps it validates at."""

    overrides: tuple[str, ...] = ()
    val_steps: tuple[int, ...] = (0, 10, 18, 20)  # every 10, then every 2 in the last 10%


@dataclass(frozen=True)
class Track3:
    """A track-3 result: the script's optimizer groups (test_track3.py), the script (test_track3_vs_scripts.py)."""

    params: int
    groups: dict[str, tuple[str, float, float, tuple]]  # role -> (map, lr, weight decay, betas)
    adam_eps: float
    optimizer_check_steps: tuple[int, int, int]  # schedule steps of the 3-step comparison (warmup, cooldown)
    linear: Optional[Linear] = None    # the Muon ("linear") settings, where the hidden matrices use it
    run: Track3Run = field(default_factory=Track3Run)
    skip_vs_scripts: dict[str, str] = field(default_factory=dict)  # test of test_track3_vs_scripts.py -> why and
                                                                     # where the record is compared instead


TRACK3_BLOCK = ("attn_q", "attn_k", "attn_v", "attn_out", "mlp_in", "mlp_out")
# #46's PowerCool c (lr = min(lr0, c (2900 - t)^1.2)) per group of its script, as c / lr0
C_OVER_LR_46 = {**{r: 8.845209253220434e-05 for r in TRACK3_BLOCK},
                **{r: 1.6589351369335795e-4 for r in ("embed", "head", "gain", "bias", "attn_out_bias")}}
LR_46 = {**{r: 0.0375 for r in TRACK3_BLOCK}, "embed": 0.3, "head": 1 / 320, "gain": 0.01, "bias": 0.01,
         "attn_out_bias": 0.01}


def shrunk_46(steps: int = 20) -> tuple[str, ...]:
    """#46's 2900-step horizons scaled to `steps`: PowerCool's c by (2900 / steps)^1.2 (the same lr curve over
    the fraction of the run: Muon decays from ~18% of it, Adam from ~51%), momentum ramps of 3 and 4 steps,
    the lookahead over [3, 10), the trust gate's fade over [5, 9), the tail EMA from 6 (tau 3), a stop two
    steps before the end, validations every 2 steps from 12 (the readout differs from the raw loss there)."""
    k = (2900 / steps) ** 1.2
    return (*(f"train.powercool_c.{r}={c * LR_46[r] * k!r}" for r, c in C_OVER_LR_46.items()),
            f"train.powercool_end={steps}", f"optim.momentum_horizon={steps}", "optim.momentum_warmup_steps=3",
            "optim.momentum_cooldown_steps=4", "optim.lookahead_start=3", "optim.lookahead_end=10",
            "optim.soap_trust_floor_end=5", "optim.soap_trust_fade_end=9", "train.tail_ema_start=6",
            f"train.tail_ema_end={steps}", "train.tail_ema_tau=3", f"train.stop_after_step={steps - 2}",
            "train.val_tail_every=0", f"train.val_extra_steps=[{{first: 12, last: {steps - 4}, every: 2}}]")
SPEEDRUN_MUON = dict(scale="muon", ns_method="quintic", ns_steps=5, momentum=0.95, nesterov=True)

EXPECTED: dict[str, Track1 | Track3] = {
    "record02_adamw": Track1(
        params=123_532_032,  # 50257*768 + 12*(4*768^2 + 8*768^2)
        roles=GPT2_ROLES,
        rules={r: ("AdamW", 1.8e-3, 0.1) for r in GPT2_ROLES},
        adamw=((0.9, 0.95), 1e-8),
        train=Train(9536, 256, 2048, 0.0, 1024, 64, 128),
        norm_eps=1e-6, shard_tail="read", repeat_first_batch=False,
        first_below_target=(9472, 3.27796, None),
    ),
    "record04_muon": Track1(
        params=123_532_032,
        roles=GPT2_ROLES,
        rules=muon_rules(1.8e-3, embed_head=3.6e-3),
        muon=Muon(**{**SPEEDRUN_MUON, "scale": "rms_match"}, warmup_start=None, warmup_steps=0,
                  adam_betas=(0.9, 0.95), adam_eps=1e-8, form="sum"),
        train=Train(6200, 0, 1800, 0.0, 1024, 64, 125),
        norm_eps=1e-6, shard_tail="skip_micro_batch", repeat_first_batch=True,
        first_below_target=(6200, 3.2785, 1339067),
        script=Script(layers=4, batch=(2, 64)),
    ),
    "record05_modernarch": Track1(
        params=123_568_128,  # vocab padded to 50304
        roles=MODERN_ROLES,
        rules=muon_rules(1.8e-3, embed_head=3.6e-3),
        muon=Muon(**{**SPEEDRUN_MUON, "scale": "rms_match"}, warmup_start=None, warmup_steps=0,
                  adam_betas=(0.9, 0.95), adam_eps=1e-8, form="sum"),
        train=Train(5100, 0, 1450, 0.0, 1024, 64, 125),
        shard_tail="skip_micro_batch", repeat_first_batch=True,
        first_below_target=(5000, 3.2776, 892894),
        script=Script(layers=4, batch=(2, 64)),
    ),
    "record08_untie": Track1(
        params=162_201_600,  # + untied 50304 x 768 head
        roles=UNTIED_ROLES,
        rules=muon_rules(0.02, embed=0.3, head=0.002),
        muon=Muon(**SPEEDRUN_MUON, warmup_start=None, warmup_steps=0, adam_betas=(0.9, 0.95), adam_eps=1e-8,
                  form="sum"),
        train=Train(4578, 0, 1308, 0.0, 1024, 64, 125),
        shard_tail="skip_micro_batch", repeat_first_batch=True,
        first_below_target=(4500, 3.279, 636785),
        script=Script(layers=4, batch=(2, 64)),
    ),
    "record09_shortcuts": Track1(
        params=162_201_636,  # + 12 value-residual lambdas + 12 x (a, b)
        roles={**UNTIED_ROLES, "scalar": (12 + 12, 12 + 24)},  # lamb; x0 (a, b)
        rules=muon_rules(0.02, embed=0.3, head=0.002, scalar=0.02),
        muon=Muon(**SPEEDRUN_MUON, warmup_start=0.85, warmup_steps=500, adam_betas=(0.9, 0.95), adam_eps=1e-8,
                  form="sum"),
        train=Train(3200, 0, 914, 0.0, 1024, 64, 125),
        shard_tail="skip_micro_batch", repeat_first_batch=True,
        first_below_target=(3200, 3.2791, 493742),
        script=Script(layers=4, batch=(2, 64), other_momentum_form="ema"),
    ),
    "record12_flexattn": Track1(
        params=162_201_642,  # + 6 U-net skip weights
        roles={**UNTIED_ROLES, "scalar": (12 + 12 + 1, 12 + 24 + 6)},  # + skip weights
        rules=muon_rules(0.04, embed=0.6, head=0.008, scalar=0.04),
        muon=Muon(**SPEEDRUN_MUON, warmup_start=0.85, warmup_steps=500, adam_betas=(0.9, 0.95), adam_eps=1e-8,
                  form="sum"),
        train=Train(1875, 0, 562, 0.0, 65536, 1, 125),
        shard_tail="skip_micro_batch", repeat_first_batch=False,
        first_below_target=(1875, 3.2783, 301825),
        # a 497-token document; the token window (1024, hard-coded in its forward) shrunk with the sequence
        script=Script(layers=4, batch=(1, 768), bos=(3, 500, 600), call="packed",
                      shrunk_window=(("model.window_size=256",), {1024: 256}), wider_window="model.window_size=4096",
                      fixed_window_units=(1024, 512), passes_compile_kw=True),
        run=Run(overrides=("model.window_size=48",), time_to_target=True),  # a window shorter than the sequence
    ),
    "record20_sub3min": Track1(
        params=275_598_388,  # embed 50257 + 3 value embeds 50257 + head 50304, 11 attn, 52 scalars
        roles={"embed": (1, E_TIED), "value_embed": (3, 3 * E_TIED), "head": (1, E_PAD),
               "attn_qkv": (11, 11 * QKV), "attn_out": (11, 11 * SQ), "mlp_in": (12, 12 * MLP),
               "mlp_out": (12, 12 * MLP), "scalar": (11 + 12 + 1, 22 + 24 + 6)},
        rules=muon_rules(0.05, embed=0.6, value_embed=0.6, head=0.008, scalar=0.04),
        muon=Muon(**SPEEDRUN_MUON, warmup_start=0.85, warmup_steps=300, adam_betas=(0.8, 0.95), adam_eps=1e-10,
                  form="ema"),
        train=Train(1393, 0, 557, 0.1, 65536, 1, 125),  # the record: last 40% (557.2 steps)
        shard_tail="skip_step", repeat_first_batch=False,
        first_below_target=(1393, 3.2785, 179527),
        # 3 + 1 window blocks at step 300, 1-block windows at step 50
        script=Script(layers=12, batch=(1, 640), bos=(200, 260, 450), constructor="kwargs", call="windowed",
                      loss_steps=(50, 300), window_schedule=True, optimizers_from="hidden_matrix_params",
                      other_momentum_form="sum", one_gpu_plan="1/1 of every step"),
        run=Run(overrides=("model.n_layer=4", "model.no_attn_layers=[2]", "model.value_embed_tables=2",
                           "model.value_embed_layers=[0,3]", "model.short_window_layers=[1]",
                           "model.window_size=64", "model.window_block=16")),
    ),
    # Records 29-46 (one packed row of documents per GPU, windows per step, the FP8 head): the embeddings all padded
    # to 50,304 rows; attention in 11 layers (29) or 10 (43, 46: none in 0 and 7), MLP in 12 (29) or 11 (no MLP in
    # 0); each attention layer's gate [6, 12]; scalars one parameter each (the scripts pack them: 64 slots).
    "record29_fa3": Track1(
        params=275_743_564,  # 5 tables of 50304 x 768, 11 attention + 12 MLP layers, 11 gates, 52 scalars
        roles={"embed": (1, E_PAD), "value_embed": (3, 3 * E_PAD), "head": (1, E_PAD),
               "attn_qkv": (11, 11 * QKV), "attn_out": (11, 11 * SQ), "attn_gate": (11, 11 * 6 * 12),
               "mlp_in": (12, 12 * MLP), "mlp_out": (12, 12 * MLP), "scalar": (1 + 12 + 11, 6 + 24 + 22)},
        rules={**muon_rules(0.05, embed=0.6, value_embed=0.6, head=0.008, scalar=0.04), "attn_gate": ("linear", 0.05, 0.0)},
        muon=Muon(scale="unit", ns_method="quintic", ns_steps=5, momentum=0.95, nesterov=True, warmup_start=0.85,
                  warmup_steps=300, adam_betas=(0.8, 0.95), adam_eps=1e-10, form="ema"),
        train=Train(1670, 0, 752, 0.1, 49152, 1, 125),  # the last 45%: 751.5 steps
        shard_tail="read", repeat_first_batch=False, batch_tokens=393_216,
        first_below_target=(1670, 3.2755, 163621),
        run=Run(overrides=("model.n_layer=12", "train.micro_batch_seqs=1", "train.global_batch_tokens=1024",
                           "data.varlen.val_rank_tokens=64", "data.varlen.max_doc_len=128"))),
    "record43_cautiouswd": Track1(
        params=268_665_613,  # 5 tables, 10 attention + 11 MLP layers, 10 gates, the smear gate, 49 scalars
        roles={"embed": (1, E_PAD), "value_embed": (3, 3 * E_PAD), "head": (1, E_PAD),
               "attn_qkv": (10, 10 * QKV), "attn_out": (10, 10 * SQ), "attn_gate": (10, 10 * 6 * 12),
               "smear_gate": (1, 12), "mlp_in": (11, 11 * MLP), "mlp_out": (11, 11 * MLP),
               "scalar": (1 + 11 + 10 + 2, 5 + 22 + 20 + 2)},
        rules={**{r: ("linear", 0.03, 1.2) for r in HIDDEN + ("attn_gate", "smear_gate")},
               "mlp_in": ("linear", 0.06, 1.2),  # the script's lr_mul 2 on c_fc
               **{r: ("adam", a, 0.0) for r, a in (("embed", 0.6), ("value_embed", 0.6), ("head", 0.008),
                                                   ("scalar", 0.04))}},
        train=Train(2245, 0, 1102, 0.1, 32768, 1, 250, extension=40),  # 50% of the 2205 scheduled: 1102.5
        shard_tail="read", repeat_first_batch=False, batch_tokens=262_144,
        first_below_target=(2245, 3.2784, 137582),
        run=Run(overrides=("model.n_layer=12", "train.micro_batch_seqs=1", "train.global_batch_tokens=1024",
                           "data.varlen.val_rank_tokens=64", "data.varlen.max_doc_len=128", "train.extension_steps=2",
                           "optim.momentum_horizon=5", "optim.momentum_cooldown_steps=2"))),
    "record46_batchsizeschedule": Track1(
        params=268_665_609,  # record 43's, with one skip gate (45 scalars)
        roles={"embed": (1, E_PAD), "value_embed": (3, 3 * E_PAD), "head": (1, E_PAD),
               "attn_qkv": (10, 10 * QKV), "attn_out": (10, 10 * SQ), "attn_gate": (10, 10 * 6 * 12),
               "smear_gate": (1, 12), "mlp_in": (11, 11 * MLP), "mlp_out": (11, 11 * MLP),
               "scalar": (1 + 11 + 10 + 2, 1 + 22 + 20 + 2)},
        rules={**{r: ("linear", 0.023, 1.2) for r in HIDDEN + ("attn_gate", "smear_gate")},
               "mlp_in": ("linear", 0.046, 1.2),
               **{r: ("adam", a, 0.0) for r, a in (("embed", 0.6), ("value_embed", 0.6), ("head", 0.008),
                                                   ("scalar", 0.04))}},
        train=Train(2160, 0, 1166, 0.1, 16384, 1, 250, extension=40),  # 55% of the 2120 scheduled
        shard_tail="read", repeat_first_batch=False, batch_tokens=131_072,
        first_below_target=(2160, 3.2780, 132194),
        run=Run(overrides=("model.n_layer=12", "train.seq_len=64", "train.micro_batch_seqs=1",
                           "train.global_batch_tokens=512", "data.varlen.val_rank_tokens=64",
                           "data.varlen.max_doc_len=128", "train.extension_steps=2", "optim.momentum_horizon=5",
                           "optim.momentum_cooldown_steps=2",
                           "train.batch_stages=[{global_batch_tokens:512,seq_len:64},"
                           "{global_batch_tokens:1024,seq_len:128},{global_batch_tokens:1536,seq_len:192}]",
                           "train.batch_final={global_batch_tokens:1536,seq_len:192}"))),
    "track3_adamw": Track3(
        params=162_354_816,  # 2 x 50304 x 768 + 50304 (head bias) + 12 x 7,086,336 (block) + 2 x 768 (norms)
        groups={"embed": ("adam", 0.3, 0.0, (0.8, 0.95)), "head": ("adam", 1 / 320, 0.0, (0.8, 0.95)),
                "gain": ("adam", 0.01, 0.0, (0.8, 0.95)), "bias": ("adam", 0.01, 0.0, (0.8, 0.95)),
                "attn_out_bias": ("adam", 0.01, 0.0, (0.8, 0.95)),
                **{r: ("adam", 0.0015, 0.1, (0.9, 0.95)) for r in TRACK3_BLOCK}},
        adam_eps=1e-10,
        optimizer_check_steps=(100, 2000, 5000),
    ),
    "track3_muon": Track3(
        params=162_354_816,
        groups={"embed": ("adam", 0.7, 0.001, (0.8, 0.95)), "head": ("adam", 0.004, 0.001, (0.8, 0.95)),
                "gain": ("adam", 0.015, 0.001, (0.8, 0.95)), "bias": ("adam", 0.015, 0.001, (0.8, 0.95)),
                "attn_out_bias": ("adam", 0.015, 0.001, (0.8, 0.95)),
                **{r: ("linear", 0.025, 0.05, ()) for r in TRACK3_BLOCK}},
        adam_eps=1e-10,
        linear=Linear(momentum=0.95, nesterov=True, warmup_steps=0, ns_method="track3", ns_steps=12, scale="muon"),
        optimizer_check_steps=(0, 1500, 3000),
    ),
    "track3_best46": Track3(
        params=162_354_816,
        groups={"embed": ("adam", 0.3, 0.0, (0.8, 0.99)), "head": ("adam", 0.003125, 0.0, (0.8, 0.99)),
                "gain": ("adam", 0.01, 0.0, (0.8, 0.99)), "bias": ("adam", 0.01, 0.0, (0.8, 0.997)),
                "attn_out_bias": ("adam", 0.01, 0.0, (0.8, 0.9965)),
                **{r: ("linear", 0.0375, 0.0, ()) for r in TRACK3_BLOCK}},
        adam_eps=1e-10,
        linear=Linear(momentum=0.95, nesterov=True, warmup_steps=300, ns_method="track3", ns_steps=12, scale="muon"),
        optimizer_check_steps=(0, 1500, 2800),
        run=Track3Run(overrides=shrunk_46(20), val_steps=(10, 12, 14, 16, 18)),  # none at 0; stops after 18
        skip_vs_scripts={  # #46's own comparison: tests/records/test_track3_best46_vs_script.py
            "test_three_optimizer_steps_from_identical_gradients":
                "its optimizers step inside its EMA_Nesterov wrapper (nesterov_step first) at pretend step counts: "
                "test_track3_best46_vs_script.py runs its loop",
            "test_every_groups_lr_at_every_step":
                "four base rates, each its own PowerCool c (not one factor): per parameter in "
                "test_track3_best46_vs_script.py",
            "test_full_size_parameter_count_and_every_groups_hyperparameters":
                "its CGI draws need a device generator (none on meta): the count and groups in test_track3.py, the "
                "init at full width in test_track3_best46_vs_script.py"},
    ),
}
