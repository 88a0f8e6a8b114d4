"""Records 29, 43 and 46: our staged schedules (harness/loop/stages.py) against the scripts' own code, at every step.

The scripts (../shared/reference/modded-nanogpt; skipped without it) are loaded by tests/support/reference_scripts.py
with `args = Hyperparameters()` bound; their get_lr / get_ws / get_bs / get_muon_momentum / step_optimizers are called
as they are, and the training loop's own statements (the window and YaRN update, the validation condition with the
last-step window, record 46's send_args, record 29's momentum warm-up) are compiled from the script's source and run
step by step with the loop's variables carried over, a stand-in model recording yarn.apply. Every comparison is `==`
on Python floats and ints: the largest difference is 0 at every step.
"""
from __future__ import annotations

import ast
import textwrap
import types

import pytest

from harness.config.compose import compose_config
from harness.config.schema import TrainConfig
from harness.loop.schedule import LrSchedule, val_due
from harness.loop.stages import Batch, StageSchedule, Windows, WindowTracker
from optim.momentum_schedule import momentum_at
from tests.support.reference_scripts import REF_DIR, load

pytestmark = pytest.mark.skipif(not REF_DIR.is_dir(), reason="needs ../shared/reference/modded-nanogpt")

B = 2048 * 8  # tokens of 8 sequences of 2048 (record 46's batch unit)

RECORDS = ["record29_fa3", "record43_cautiouswd", "record46_batchsizeschedule"]  # configs/experiment/<name>.yaml

# optim.* momentum keys (optim/hybrid_config.py) of each record: start, max, warmup, cool-down steps, end, horizon, ramp
MOMENTUM = {"record29_fa3": (0.85, 0.95, 300, 0, 0.85, 0, "blend"),
            "record43_cautiouswd": (0.85, 0.95, 300, 50, 0.85, 2245, "offset"),
            "record46_batchsizeschedule": (0.85, 0.95, 300, 50, 0.85, 2160, "offset")}


def train_config(name: str) -> TrainConfig:
    """The record's train block as its experiment file composes it (the file is what is checked)."""
    return compose_config(f"experiment={name}").train


@pytest.fixture(scope="module", params=RECORDS)
def record(request):
    m = load(request.param)
    m.args = m.Hyperparameters()
    return request.param, m, StageSchedule(train_config(request.param))


def loop_code(m: types.ModuleType, source: str):
    """Compile script statements (source text taken from its loop) once, with the loader's CPU edits."""
    return compile(m._edit(ast.parse(source)), m.__file__, "exec")


def training_loop(m: types.ModuleType) -> list[ast.stmt]:
    """The body of the training loop, `for step in range(train_steps + 1)` (not the warm-up's loop)."""
    return next(s for s in m._tree.body if isinstance(s, ast.For) and ast.unparse(s.target) == "step"
                and ast.unparse(s.iter) == "range(train_steps + 1)").body


class YarnRecorder:
    def __init__(self):
        self.calls = []

    def apply(self, old, new):
        self.calls.append((old, new))


def script_windows_and_validation(m: types.ModuleType) -> tuple[list, dict, list]:
    """Run the loop's head over steps 0..train_steps: (train windows per step as (long, short), the windows of
    every validation {step: (long, short)}, the yarn.apply calls as (step, old, new))."""
    body = training_loop(m)
    ws_stmt = body[1]  # ws = get_ws(step) (29) | ws_short, new_ws_long = get_ws(step) + the YaRN update (43, 46)
    val_if = next(s for s in body if isinstance(s, ast.If) and "val_loss_every" in ast.unparse(s.test))
    last_override = [s for s in val_if.body if isinstance(s, ast.If) and ast.unparse(s.test) == "last_step"]
    yarn = len(body) > 2 and "yarn.apply" in ast.unparse(body[2])
    head = ast.unparse(body[0]) + "\n" + ast.unparse(ws_stmt) + "\n" + (ast.unparse(body[2]) if yarn else "")
    windows_now = "now = (ws_long, ws_short)" if yarn else "now = (ws, ws // 2)"  # record 29's model: ws, ws // 2
    val = (f"validate = {ast.unparse(val_if.test)}\nval_now = None\nif validate:\n"
           + textwrap.indent("\n".join(ast.unparse(s) for s in last_override) + f"\n{windows_now}\nval_now = now", "    "))
    code = loop_code(m, head + "\n" + windows_now + "\ntrain_now = now\n" + val)
    rec = YarnRecorder()
    train_steps = m.args.num_iterations
    ns = {**m.__dict__, "train_steps": train_steps, "model": types.SimpleNamespace(yarn=rec)}
    if yarn:  # the statement before the loop: ws_short, ws_long = get_ws(0)
        ns["ws_short"], ns["ws_long"] = m.get_ws(0)
    train, vals, applied = [], {}, []
    for step in range(train_steps + 1):
        ns["step"] = step
        before = len(rec.calls)
        exec(code, ns)
        applied += [(step, *c) for c in rec.calls[before:]]
        train.append(ns["train_now"])
        if ns["val_now"] is not None:
            vals[step] = ns["val_now"]
    return train, vals, applied


def test_lr_factor_at_every_step(record):
    name, m, ours = record
    tc = ours.tc
    groups = [{"initial_lr": 0.008}, {"initial_lr": 0.023}]
    lrs = LrSchedule(tc, groups)
    worst = 0.0
    for step in range(tc.max_steps):
        expect = m.get_lr(step)
        assert ours.lr_factor(step) == expect, (name, step)
        lrs.apply(groups, step)  # the rate the loop sets: initial_lr x factor, as the scripts' group["lr"]
        assert [g["lr"] for g in groups] == [g["initial_lr"] * expect for g in groups]
        worst = max(worst, abs(ours.lr_factor(step) - expect))
    print(f"{name}: lr factor max |diff| over {tc.max_steps} steps = {worst}")


def test_lr_shape_per_record():
    """What the scripts' schedules look like, so a wrong key shows as a wrong shape (not only a mismatch)."""
    r29, r43, r46 = (StageSchedule(train_config(n)) for n in RECORDS)
    assert r29.lr_factor(918) == 1.0 and r29.lr_factor(919) < 1.0  # cooldown from x >= 0.55: step 918.5
    assert r43.lr_factor(2205) == r43.lr_factor(2244) == pytest.approx(0.10018)  # x capped at 0.9999
    assert r46.lr_factor(699) == 1.0 and r46.lr_factor(700) == 1.51  # x > 0.33 from step 700 (0.33 x 2120 = 699.6)
    assert r46.lr_factor(2120) == r46.lr_factor(2159) == 0.1


def test_windows_validation_windows_and_yarn_events(record):
    name, m, ours = record
    train, vals, applied = script_windows_and_validation(m)
    tc = ours.tc
    assert [tuple(ours.windows(s)) for s in range(tc.max_steps + 1)] == train
    val_steps = [s for s in range(tc.max_steps + 1) if val_due(s, tc.max_steps, tc.val_every)]
    assert val_steps == sorted(vals)
    assert {s: tuple(ours.val_windows(s)) for s in val_steps} == vals
    events = [(c.step, c.old, c.new) for c in ours.window_changes()]
    if name == "record29_fa3":  # no YaRN: its window changes where get_ws's stage does (x = step / 1671)
        assert applied == [] and events == [(557, 3, 7), (1114, 7, 11)]
        assert [s for s in range(1, tc.max_steps + 1) if train[s] != train[s - 1]] == [557, 1114]
    else:  # 3 -> 7 -> 11 by stage, 11 -> 13 at the first extension step; the last validation's 20 is no event
        assert events == applied == {"record43_cautiouswd": [(735, 3, 7), (1470, 7, 11), (2205, 11, 13)],
                                     "record46_batchsizeschedule": [(707, 3, 7), (1414, 7, 11), (2120, 11, 13)]}[name]
        assert ours.val_windows(tc.max_steps) == Windows(20, 6) and ours.windows(tc.max_steps) == Windows(13, 6)
        assert ours.val_windows(tc.max_steps - tc.max_steps % 250) == ours.windows(tc.max_steps - tc.max_steps % 250)


def test_yarn_events_from_the_step_alone(record):
    """A tracker made at any step (a resumed model) replays, in order, exactly the changes a model that ran from
    step 0 has applied by then; the loop then continues with the same events."""
    _, _, ours = record
    n = ours.max_steps
    for resume in (0, 1, 300, 706, 707, 708, 1414, 2119, 2120, 2121, 2204, 2205, n):
        fresh = WindowTracker(ours)
        from_start = [c for s in range(resume + 1) for c in fresh.advance(s)]
        resumed = WindowTracker(ours)
        assert resumed.advance(resume) == from_start == [c for c in ours.window_changes() if c.step <= resume]
        assert [c for s in range(resume + 1, n + 1) for c in resumed.advance(s)] == \
               [c for c in ours.window_changes() if c.step > resume]
    with pytest.raises(ValueError, match="cannot go back"):
        resumed.advance(n - 1)


def test_muon_momentum_at_every_step(record):
    name, m, ours = record
    start, top, warmup, cooldown, end, horizon, ramp = MOMENTUM[name]
    ours_at = [momentum_at(s, top, start, warmup, end, cooldown, horizon, ramp) for s in range(ours.max_steps)]
    if name == "record29_fa3":  # in the loop: frac = min(step / 300, 1); group["momentum"] = (1 - frac) 0.85 + ...
        group_loop = next(s for s in training_loop(m) if isinstance(s, ast.For) and "optimizer2" in ast.unparse(s.iter))
        code = loop_code(m, ast.unparse(group_loop))
        group = {}
        ns = {**m.__dict__, "optimizer2": types.SimpleNamespace(param_groups=[group])}
        script = []
        for step in range(ours.max_steps):
            ns["step"] = step
            exec(code, ns)
            script.append(group["momentum"])
    else:
        script = [m.get_muon_momentum(s) for s in range(ours.max_steps)]
    assert ours_at == script
    print(f"{name}: momentum max |diff| = {max(abs(a - b) for a, b in zip(ours_at, script))}")


class FakeOptimizer:
    def __init__(self, lr: float):
        self.param_groups = [{"initial_lr": lr, "lr": lr}]
        self.steps = []

    def step(self):
        self.steps.append(self.param_groups[0]["lr"])

    def zero_grad(self, set_to_none=True):
        pass


def test_the_optimizers_step_every_step_and_at_that_steps_rate(record):
    """The script's step_optimizers (43, 46; record 29's loop steps both) sets every group's lr to initial_lr x
    get_lr(step) and steps NorMuon every step (which Adam steps, odd ones, is optim.adam_every's: compared with
    the scripts' optimizers in tests/records/test_records43_46_optim.py)."""
    name, m, ours = record
    adam, muon = FakeOptimizer(0.008), FakeOptimizer(0.023)
    for step in range(ours.max_steps):
        if name == "record29_fa3":  # its loop steps every optimizer
            adam.step(), muon.step()
        else:
            m.step_optimizers(step, [adam, muon], types.SimpleNamespace(zero_grad=lambda set_to_none=True: None))
        assert muon.steps[-1] == 0.023 * ours.lr_factor(step) or name == "record29_fa3"
    assert len(muon.steps) == ours.max_steps
    assert len(adam.steps) == (ours.max_steps if name == "record29_fa3" else ours.max_steps // 2)


def test_record46_batch_stages_and_send_args():
    m = load("record46_batchsizeschedule")
    m.args = m.Hyperparameters()
    ours = StageSchedule(train_config("record46_batchsizeschedule"))
    body = training_loop(m)
    first = next(i for i, s in enumerate(body) if "new_step_batch_size = get_bs(step)" in ast.unparse(s))
    code = loop_code(m, "\n".join(ast.unparse(s) for s in body[first:first + 3]))
    ns = {**m.__dict__, "grad_accum_steps": 8, "step_batch_size": m.args.train_bs_schedule[0]}  # its line before the loop
    sends = []
    for step in range(ours.max_steps):
        ns["step"] = step
        exec(code, ns)
        assert ours.batch(step).global_batch_tokens == ns["step_batch_size"] == m.get_bs(step), step
        if ns["send_args"] is not None:
            sends.append((step, ns["send_args"][0]))
    assert [(c.step, c.new.global_batch_tokens) for c in ours.batch_changes()] == sends == [(707, 16 * B),
                                                                                             (1414, 24 * B)]
    assert ours.batch(706) == Batch(8 * B, 16384) and ours.batch(2159) == Batch(24 * B, 49152)
    assert ours.tokens_before(ours.max_steps) == sum(m.get_bs(s) for s in range(ours.max_steps))
    assert all(ours.tokens_before(s) == sum(m.get_bs(k) for k in range(s)) for s in (0, 1, 706, 707, 708, 1500))
    assert ours.max_seq_len() == 49152
    # its warm-up's (window, batch) pairs: ws_schedule + [ws_final] zipped with bs_schedule + [train_bs_extension]
    assert [(w.long, b.global_batch_tokens) for w, b in ours.shapes()] == list(zip(
        [*m.args.ws_schedule, m.args.ws_final], [*m.args.train_bs_schedule, m.args.train_bs_extension]))
