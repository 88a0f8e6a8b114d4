"""Each record config against its own script (../shared/reference/modded-nanogpt; skipped without it).

For every track-1 record whose reference: block names a script (records 4, 5, 8, 9, 12 and 20), at shrunk
width (64, 2 heads; 4 layers, record 20 its 12: tests/records/expected.py's Script) on CPU in fp32, with the
script loaded as tests/support/reference_scripts.py describes (bf16 casts dropped, one
process, FlexAttention through SDPA with the same mask):
- the script's model with random weights copied into ours (every parameter mapped one to one) gives
  the same loss and the same gradients;
- from identical gradients, three steps of the script's optimizers (built by its own statements) and
  three of ours give the same parameters, at the first steps (momentum warmup) and where the warmdown
  starts;
- lr, Muon momentum and attention window follow the script's own statements at every step.
Run with -s to see the largest differences per record.
"""
from __future__ import annotations

import re
import types
from pathlib import Path

import pytest
import torch

from analysis.records import experiments_with_reference, reference_of
from harness.loop.schedule import lr_factor
from model.gpt import GPT
from model.masks import window_units
from optim import build_optimizer
from tests.records.expected import EXPECTED, Script
from tests.support.reference_scripts import REF_DIR, load, loop_statements, top_level
from tests.support.threads import one_thread  # noqa: F401  (autouse: one torch thread)

pytestmark = [pytest.mark.skipif(not REF_DIR.is_dir(), reason="../shared reference scripts not present"),
              pytest.mark.e2e]  # integration: the record scripts at shrunk size

V, BOS = 500, 499  # shrunk vocabulary; its last id plays <|endoftext|> (the scripts' 50256)
SHRINK = ["model.n_embd=64", "model.n_head=2", f"model.vocab_size={V}", f"model.bos_token={BOS}", "device=cpu"]
RECORDS = [r for r in experiments_with_reference(track=1) if EXPECTED[r].script is not None]
# script parameter name -> ours, applied in order
RENAMES = [(r"^transformer\.", ""), (r"^h\.", "blocks."), (r"^embed\.", "wte."),
           (r"value_embeds\.embed\.", "value_embeds."),
           (r"attn\.c_attn\.", "attn.qkv."), (r"attn\.qkv_w$", "attn.qkv.weight"), (r"attn\.c_([qkv])\.", r"attn.\1."),
           (r"attn\.c_proj\.", "attn.proj."), (r"mlp\.c_fc\.", "mlp.fc."), (r"mlp\.c_proj\.", "mlp.proj."),
           (r"attn\.lambdas$", "attn.v_lambdas"), (r"^blocks\.(\d+)\.lambdas$", r"blocks.\1.x0_lambdas")]


def our_name(name: str) -> str:
    for pattern, repl in RENAMES:
        name = re.sub(pattern, repl, name)
    return name


def script_of(rec: str) -> Script:
    return EXPECTED[rec].script


def load_script(rec: str, *args, **kwargs):
    return load(Path(reference_of(rec).script).stem, *args, **kwargs)


def config(rec: str, *extra: str):
    import tools.describe as describe
    layers = script_of(rec).layers
    return describe.load([f"experiment={rec}", *SHRINK, f"model.n_layer={layers}", *extra])


def build(rec: str, *extra: str):
    """(script module, its model, our config, our model) with the same random weights."""
    s = script_of(rec)
    layers = s.layers
    overrides, constants = s.shrunk_window
    ref = load_script(rec, {50256: BOS, **constants}, within="GPT.forward")
    cfg = config(rec, *overrides, *extra)
    torch.manual_seed(0)
    if s.constructor == "kwargs":
        ref_model = ref.GPT(vocab_size=V, num_layers=layers, num_heads=2, model_dim=64)
    else:
        ref_model = ref.GPT(ref.GPTConfig(vocab_size=cfg.model.padded_vocab_size, n_layer=layers, n_head=2, n_embd=64))
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # random weights everywhere (zero-init heads and projections would hide gradients)
        for p in ref_model.parameters():
            noise = torch.randn(p.shape, generator=gen)
            p.copy_(noise / p.shape[-1] ** 0.5 if p.ndim >= 2 else p + 0.3 * noise)
    ours = GPT(cfg.model)
    theirs = dict(ref_model.named_parameters())
    mine = dict(ours.named_parameters())
    mapped = {our_name(n): n for n in theirs}
    assert sorted(mapped) == sorted(mine), "parameters without a counterpart"
    with torch.no_grad():
        for name, p in mine.items():
            p.copy_(theirs[mapped[name]].reshape(p.shape))
    return ref, ref_model, cfg, ours, mapped


def batch(rec: str):
    (b, t), bos = script_of(rec).batch, script_of(rec).bos
    gen = torch.Generator().manual_seed(2)
    tokens = torch.randint(0, BOS, (b, t + 1), generator=gen)
    tokens[:, list(bos)] = BOS
    return tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()


def reference_loss(rec: str, ref, ref_model, x, y, step: int):
    call = script_of(rec).call
    if call == "windowed":
        steps = reference_of(rec).steps
        window = loop_statements(ref, "window_size", 1, {"step": step, "train_steps": steps})["window_size"]
        blocks = top_level(ref, "sw_num_blks", "sw_num_blks", {})["sw_num_blks"](window)
        return ref_model(x[0], y[0], blocks)
    if call == "packed":
        return ref_model(x[0], y[0])
    return ref_model(x, y, return_logits=False)[1]


@pytest.mark.parametrize("rec", RECORDS)
def test_same_loss_and_gradients(rec):
    ref, ref_model, cfg, ours, mapped = build(rec)
    x, y = batch(rec)
    s = script_of(rec)
    losses = []
    for step in s.loss_steps:
        ours.set_train_progress(step, cfg.train.max_steps)
        ref_model.zero_grad(set_to_none=True)
        ours.zero_grad(set_to_none=True)
        loss_ref = reference_loss(rec, ref, ref_model, x, y, step)
        loss = ours(x, y)
        loss_ref.backward()
        loss.backward()
        theirs = dict(ref_model.named_parameters())
        worst, worst_rel, zero = 0.0, 0.0, []
        for name, p in ours.named_parameters():
            g_ref = theirs[mapped[name]].grad.reshape(p.shape)
            if not g_ref.abs().max() > 0:  # allowed only where the math makes it zero, on both sides
                zero.append(name)
                assert torch.equal(p.grad, g_ref), name
                continue
            diff = (p.grad - g_ref).abs().max().item()
            worst, worst_rel = max(worst, diff), max(worst_rel, diff / g_ref.abs().max().item())
        # layer 0's value-residual lambda mixes v with itself: no gradient. Nothing else may be zero.
        assert zero == (["blocks.0.attn.lamb"] if cfg.model.value_residual else []), zero
        dloss = abs(loss.item() - loss_ref.item())
        print(f"\n{rec} step {step}: loss {loss.item():.6f}, |dloss| {dloss:.2e}, max |dgrad| {worst:.2e} "
              f"(relative to the largest gradient entry of its tensor: {worst_rel:.2e})")
        assert dloss < 1e-5 and worst_rel < 1e-4
        losses.append(loss.item())
    if len(losses) > 1:  # the growing window changed the loss: the masks were compared
        assert abs(losses[0] - losses[1]) > 1e-4
    if s.wider_window:  # the (shrunk) window binds inside the document
        wide = GPT(config(rec, s.wider_window).model)
        wide.load_state_dict(ours.state_dict())
        assert abs(wide(x, y).item() - losses[0]) > 1e-4


# ---- optimizer steps --------------------------------------------------------------------------------

def reference_optimizers(rec: str, ref, ref_model) -> dict:
    first = script_of(rec).optimizers_from
    env = {"raw_model": ref_model, "model": ref_model, "args": ref.Hyperparameters(), "rank": 0, "world_size": 1}
    return top_level(ref, first, "schedulers", env)


def set_reference_momentum(rec: str, ref, ns: dict, step: int) -> None:
    try:
        loop_statements(ref, "frac", 2, {**ns, "step": step})
    except StopIteration:  # records 4-8: no momentum warmup in the loop
        pass


def run_steps(rec: str, start: int, form: str | None = None):
    """Three steps from `start` on both sides. Returns, after each step, the largest parameter difference
    relative to the tensor's largest entry, and the smallest movement of a tensor over the three steps."""
    extra = [f"optim.momentum_form={form}"] if form else []
    ref, ref_model, cfg, ours, mapped = build(rec, *extra)
    ns = reference_optimizers(rec, ref, ref_model)
    opt = build_optimizer(cfg.optim, list(ours.named_parameters()), ours.param_roles())
    theirs = dict(ref_model.named_parameters())
    for g in opt.param_groups:
        g["step"] = start
    for o in ns["optimizers"]:  # mid-run Adam: its step count, zero moments (ours too)
        if isinstance(o, torch.optim.Adam):
            for p in (p for group in o.param_groups for p in group["params"]):
                o.state[p] = {"step": torch.tensor(float(start)), "exp_avg": torch.zeros_like(p),
                              "exp_avg_sq": torch.zeros_like(p)}
    tc, gen, diffs, start_params = cfg.train, torch.Generator().manual_seed(3), [], \
        {n: p.detach().clone() for n, p in ours.named_parameters()}
    for step in range(start, start + 3):
        for name, p in ours.named_parameters():
            p.grad = torch.randn(p.shape, generator=gen) * 0.01
            theirs[mapped[name]].grad = p.grad.clone().reshape(theirs[mapped[name]].shape)
        set_reference_momentum(rec, ref, ns, step)
        for o in ns["optimizers"]:
            for g in o.param_groups:
                g["lr"] = g["initial_lr"] * ns["get_lr"](step)
            o.step()
        factor = lr_factor(step, tc.max_steps, tc.warmup_frac, tc.warmdown_frac, tc.final_lr_frac)
        for g in opt.param_groups:
            g["lr"] = g["initial_lr"] * factor
        opt.step()
        diffs.append(max(((p - theirs[mapped[n]].reshape(p.shape)).abs().max() / p.abs().max()).item()
                         for n, p in ours.named_parameters()))
    moved = min((p - start_params[n]).abs().max().item() for n, p in ours.named_parameters())
    return diffs, moved


def warmdown_start(rec: str) -> int:
    tc = config(rec).train
    return int(tc.max_steps - tc.warmdown_frac * tc.max_steps)  # the last constant step, then warmdown


@pytest.mark.parametrize("rec", RECORDS)
def test_three_optimizer_steps_give_the_same_parameters(rec):
    for where, start in (("first steps (momentum warmup)", 0), ("warmdown start", warmdown_start(rec))):
        diffs, moved = run_steps(rec, start)
        print(f"\n{rec} steps {start}..{start + 2} ({where}): max |dparam| / max |param| per step "
              f"{', '.join(f'{d:.2e}' for d in diffs)}; smallest movement of a tensor {moved:.2e}")
        assert max(diffs) < 1e-6 and moved > 1e-4


@pytest.mark.parametrize("rec", [r for r in RECORDS if script_of(r).other_momentum_form])
def test_the_other_momentum_form_differs_during_warmup(rec):
    """The check can fail: with the other momentum form the parameters part within three warmup steps."""
    form = script_of(rec).other_momentum_form
    diffs, _ = run_steps(rec, 0, form)
    per_step = ", ".join(f"{d:.2e}" for d in diffs)
    print(f"\n{rec} with momentum_form={form}: max |dparam| / max |param| per step {per_step}")
    assert diffs[0] < 1e-6 < diffs[-1]


# ---- schedules -------------------------------------------------------------------------------------

@pytest.mark.parametrize("rec", RECORDS)
def test_lr_momentum_and_window_schedules_match_at_every_step(rec):
    ref = load_script(rec)
    s = script_of(rec)
    cfg = config(rec)
    tc, steps = cfg.train, cfg.train.max_steps
    ns = top_level(ref, "get_lr", "get_lr", {"args": ref.Hyperparameters()})
    with torch.device("meta"):
        model = GPT(cfg.model)
    opt = build_optimizer(cfg.optim, list(model.named_parameters()), model.param_roles())
    lr_worst = mom_worst = 0.0
    for step in range(steps + 1):
        if step < steps:  # the scripts' get_lr is defined on 0..steps; the last step only validates
            ours = lr_factor(step, steps, tc.warmup_frac, tc.warmdown_frac, tc.final_lr_frac)
            lr_worst = max(lr_worst, abs(ours - ns["get_lr"](step)))
            mom_worst = max(mom_worst, abs(opt.beta(step + 1) - reference_momentum(rec, ref, step)))
        if s.window_schedule:
            window = loop_statements(ref, "window_size", 1, {"step": step, "train_steps": steps})["window_size"]
            long, short = window_units(cfg.model, step, steps)
            assert (long, short) == (window // 128, max(1, window // 128 // 2)), step
    print(f"\n{rec}: over {steps} steps max |d lr factor| {lr_worst:.1e}, max |d momentum| {mom_worst:.1e}")
    assert lr_worst < 1e-12 and mom_worst < 1e-12
    if s.fixed_window_units:
        assert window_units(cfg.model, 0, steps) == window_units(cfg.model, steps, steps) == s.fixed_window_units


def reference_momentum(rec: str, ref, step: int) -> float:
    """The Muon momentum of step `step`: what the loop's warmup statements set, else the constructor's 0.95."""
    fake = {f"optimizer{i}": types.SimpleNamespace(param_groups=[{}]) for i in (2, 3)}
    set_reference_momentum(rec, ref, fake, step)
    values = [o.param_groups[0]["momentum"] for o in fake.values() if "momentum" in o.param_groups[0]]
    assert len(values) <= 1
    return values[0] if values else 0.95
