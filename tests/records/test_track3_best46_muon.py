"""Result #46's Muon (track3_best46_cwd_rowfloor_tailema.py, its own class loaded on CPU) against ours with its
stages on, from identical gradients, on a shrunk matrix set (skipped without ../shared).

One block's six matrices at width 32 (q, k, v, attn.proj 32x32; fc 128x32; mlp.proj 32x128), the two
projections zero-initialized as the script does (so they are pinned to norm 1e-8 at step 0). Steps, with
both step counters set alike: 0 (no basis yet; eigh at its end), 1 (the first preconditioned step and a
QR refresh), 2, then 1500 (inside the trust gate's floor fade) and 2750 (inside the momentum cool-down).
Both Newton-Schulz run in bf16 (ours is switched to bf16, as on CUDA); the rest is fp32 on both sides.
Twice: as #46 runs, and as its #44 base (the script's ROWFLOOR and CWD off: the scalar floor, no decay).
The largest differences are printed (pytest -s).
"""
from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

import optim.newton_schulz as ns_module
from optim import build_hybrid
from optim.hybrid_config import MuonConfig
from tests.support.track3_reference import REF_DIR, script_definitions

SCRIPT = "track3_best46_cwd_rowfloor_tailema.py"
pytestmark = [pytest.mark.skipif(not (REF_DIR / SCRIPT).is_file(), reason=f"../shared {SCRIPT} not present"),
              pytest.mark.e2e]
W = 32
MATRICES = {"blocks.0.attn.q.weight": ((W, W), "attn_q"), "blocks.0.attn.k.weight": ((W, W), "attn_k"),
            "blocks.0.attn.v.weight": ((W, W), "attn_v"), "blocks.0.attn.proj.weight": ((W, W), "attn_out"),
            "blocks.0.mlp.fc.weight": ((4 * W, W), "mlp_in"), "blocks.0.mlp.proj.weight": ((W, 4 * W), "mlp_out")}
STEPS = (0, 1, 2, 1500, 2750)
# #46's Muon as keys of ours (the experiment file will state the same; optim/stages/ for each stage's keys)
OURS = dict(lr=0.0375, ns_method="track3", ns_steps=12, ns_norm="gram", scale="muon", update_bf16=True,
            momentum=0.95, momentum_warmup_start=0.85, momentum_warmup_steps=300, momentum_cooldown_steps=200,
            momentum_cooldown_end=0.85, momentum_horizon=2900, momentum_ramp="offset", weight_decay=0.0,
            soap=True, radial_brake=True, uw_floor=True, uw_floor_per_row=True, radius_pin=True,
            cautious_wd_post=True)
# the #44 base: the same script with two of its levers off (its docstring), and ours with the same two keys
VARIANTS = {"best46": ({}, {}), "soap44": ({"ROWFLOOR": False, "CWD": 0.0},
                                          {"uw_floor_per_row": False, "cautious_wd_post": False})}
STATE = {"momentum": "momentum_buffer", "exp_avg_sq": "soap_V", "row_gg": "soap_L", "col_gg": "soap_R"}


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    scale = max(a.abs().max().item(), b.abs().max().item(), 1e-30)
    return (a.double() - b.double()).abs().max().item() / scale


@pytest.mark.parametrize("variant", VARIANTS)
def test_optimizer_steps_match_the_scripts_muon(monkeypatch, variant):
    monkeypatch.setattr(ns_module, "default_dtype", lambda device: torch.bfloat16)
    ns = script_definitions(SCRIPT)
    ns.update(VARIANTS[variant][0])  # the script's Muon reads these module constants when it steps
    gen = torch.Generator().manual_seed(0)
    # weights of row norm ~2.6, so that RowFloor (0.3825 x row norm) lifts some rows of the ~unit update
    start = {n: torch.zeros(s) if "proj" in n else torch.randn(*s, generator=gen) * 2.6 / s[1] ** 0.5
             for n, (s, _) in MATRICES.items()}
    ref = {n: torch.nn.Parameter(w.clone()) for n, w in start.items()}
    mine = {n: torch.nn.Parameter(w.clone()) for n, w in start.items()}
    ref_opt = ns["Muon"](list(ref.items()), lr=ns["MUON_LR"], mu=ns["MU"])
    cfg = OmegaConf.structured(MuonConfig(**{**OURS, **VARIANTS[variant][1]}))
    opt = build_hybrid(cfg, list(mine.items()), {n: r for n, (_, r) in MATRICES.items()})
    worst: dict[str, tuple[float, str]] = {}
    for k, t in enumerate(STEPS):
        # gradients with a shared low-rank part, so the Grams have structure for SOAP to find
        base = torch.randn(4 * W, 4 * W, generator=gen)
        for n, (s, _) in MATRICES.items():
            g = base[:s[0], :s[1]] * 0.5 + torch.randn(*s, generator=gen)
            ref[n].grad, mine[n].grad = g.clone(), g.clone()
        ref_opt.step_count = t
        ref_opt.param_groups[0]["mu"] = ns["_muon_mu_at_step"](t, ns["FINAL_TRAIN_STEPS"])
        ref_opt.param_groups[0]["lr"] = ns["_lr"](t, ns["MUON_LR"], ns["MUON_POWER_C"], ns["FINAL_LR_POWER"])
        for group in opt.param_groups:
            group["step"] = t  # step() takes it to t + 1: 0-based t
            group["lr"] = ref_opt.param_groups[0]["lr"]
        ref_opt.step()
        opt.step()
        assert opt.beta(t + 1) == ref_opt.param_groups[0]["mu"], t
        for n, p in ref.items():
            entries = {"weight": (mine[n].detach(), p.detach())}
            ours_st, ref_st = opt.state[mine[n]], ref_opt.state[p]
            entries.update({key: (ours_st[ours], ref_st[key]) for key, ours in STATE.items()})
            if t > 0:
                entries.update({"q_row": (ours_st["soap_QL"].abs(), ref_st["q_row"].abs()),
                                "q_col": (ours_st["soap_QR"].abs(), ref_st["q_col"].abs())})
            assert ours_st["soap_step"] == ref_st["soap_step"] == k + 1
            for what, (a, b) in entries.items():
                key = f"{what} at step {t}"
                worst[key] = max(worst.get(key, (0.0, "")), (_rel(a, b), n))
    weight_worst = max((v[0], key, v[1]) for key, v in worst.items() if key.startswith("weight"))
    overall = max((v[0], key, v[1]) for key, v in worst.items())
    print(f"\n{variant}: the script's Muon vs ours, {len(STEPS)} steps: largest relative weight difference {weight_worst[0]:.2e} "
          f"({weight_worst[1]}, {weight_worst[2]}); largest over weights and state {overall[0]:.2e} "
          f"({overall[1]}, {overall[2]})")
    for key in sorted(worst, key=lambda k: -worst[k][0])[:8]:
        print(f"  {key}: {worst[key][0]:.2e} ({worst[key][1]})")
    assert weight_worst[0] < 1e-4, weight_worst
    # the pin held the zero-initialized projections at norm 1e-8 through step 0
    assert all(mine[n].detach().norm() > 0 for n in mine)
