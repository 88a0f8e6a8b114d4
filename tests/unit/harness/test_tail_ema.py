"""The tail-EMA readout (harness/loop/tail_ema.py; track-3 result #46) against an independent computation:
the EMA's seed and updates, the blend's loss, the weights put back exactly, and its state round trip."""
from __future__ import annotations

import torch

from harness.loop.tail_ema import TailEMA


def _model():
    torch.manual_seed(0)
    model = torch.nn.ModuleDict({"wte": torch.nn.Embedding(11, 4), "fc": torch.nn.Linear(4, 3)})
    model.fc.to(torch.bfloat16)  # a low-precision weight: the blend is computed in fp32 and rounded once
    roles = {"wte.weight": "embed", "fc.weight": "mlp_in", "fc.bias": "bias"}
    return model, roles


@torch.no_grad()
def _loss(model) -> float:
    x = model.wte.weight[:5].float()
    return float((model.fc.weight.float() @ x.T).square().mean() + model.fc.bias.float().sum())


def _train(model, tail, steps: int, seed: int = 1):
    """Pretend optimizer steps (random weight moves); tail.update after each, as the trainer does."""
    gen = torch.Generator().manual_seed(seed)
    history = []
    for t in range(steps):
        with torch.no_grad():
            for p in model.parameters():
                p.add_((torch.randn(p.shape, generator=gen) * 0.1).to(p.dtype))
        history.append({n: p.detach().clone() for n, p in model.named_parameters()})
        tail.update(t + 1)
    return history


def test_readout_is_the_loss_of_the_blend_and_training_weights_come_back_exactly():
    model, roles = _model()
    tail = TailEMA(list(model.named_parameters()), roles, tau=3.0, lam=0.6, start=4, end=9)
    history = _train(model, tail, 7)  # steps done 1..7: seeded with w_4, then w_5, w_6, w_7 folded in
    # Independent: E = w_4, E <- E + (w_n - E) / 3 for n = 5..7 (fp64 here), blend in fp64, round once.
    ema = {n: history[3][n].double() for n in ("fc.weight", "fc.bias")}
    for n_done in (5, 6, 7):
        for n in ema:
            ema[n] = ema[n] + (history[n_done - 1][n].double() - ema[n]) / 3.0
    for n in ema:
        assert torch.allclose(tail.ema[tail.names.index(n)].double(), ema[n], rtol=1e-6, atol=1e-7)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    blended, _ = _model()
    with torch.no_grad():
        blended.wte.weight.copy_(model.wte.weight)  # the token embedding is left as trained
        for n in ema:
            p = dict(model.named_parameters())[n]
            dict(blended.named_parameters())[n].copy_((0.4 * p.double() + 0.6 * ema[n]).to(p.dtype))
    raw = _loss(model)
    readout = tail.readout(lambda: _loss(model), raw)
    assert abs(readout - _loss(blended)) <= 1e-5 * abs(readout) and readout != raw
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]), n  # put back bit for bit


def test_no_ema_before_start_and_no_update_at_the_end():
    model, roles = _model()
    tail = TailEMA(list(model.named_parameters()), roles, tau=2.0, lam=0.5, start=3, end=5)
    _train(model, tail, 2)
    assert tail.ema is None and tail.readout(lambda: 1.0, raw_loss=7.0) == 7.0  # the raw loss until start
    history = _train(model, tail, 4, seed=2)  # steps done 3..6 (counted from 1 again: start=3 seeds at step 3)
    w3, w4 = history[2]["fc.bias"].float(), history[3]["fc.bias"].float()
    expect = w3 + (w4 - w3) / 2.0  # seeded at n=3, updated at n=4, untouched at n=5 (= end) and after
    assert torch.equal(tail.ema[tail.names.index("fc.bias")], expect)
    assert "wte.weight" not in tail.names  # the token embedding has no EMA


def test_state_round_trip_resumes_exactly():
    model, roles = _model()
    tail = TailEMA(list(model.named_parameters()), roles, tau=3.0, lam=0.6, start=2, end=20)
    _train(model, tail, 5)
    state = tail.state_dict()
    other = TailEMA(list(model.named_parameters()), roles, tau=3.0, lam=0.6, start=2, end=20)
    other.load_state_dict(state)
    for t in range(5, 8):
        with torch.no_grad():
            model.fc.bias.add_(1.0)
        tail.update(t + 1)
        other.update(t + 1)
    assert all(torch.equal(a, b) for a, b in zip(tail.ema, other.ema))
