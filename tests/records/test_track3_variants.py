"""The experiments built on track3_best46 and on the proxies differ from their base exactly where their
files say: #44's base is #46 with three levers off; the proxy arms scale #46's step horizons to the proxy."""
import pytest
from omegaconf import OmegaConf

from analysis.runs import flatten
from harness.config.compose import compose_config


def flat(cfg) -> dict:
    """Every key of a composed config, dotted, minus the experiment's name and its reference block."""
    out = flatten(OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True))
    return {k: v for k, v in out.items() if k != "experiment" and not k.startswith("reference")}


def diff(a: str, b: str) -> dict:
    fa, fb = flat(compose_config(f"experiment={a}")), flat(compose_config(f"experiment={b}"))
    return {k: (fa.get(k), fb.get(k)) for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)}


def test_soap44_is_best46_with_its_three_levers_off_and_its_own_claim_step():
    assert diff("track3_best46", "track3_soap44") == {
        "optim.uw_floor_per_row": (True, False), "optim.cautious_wd_post": (True, False),
        "train.tail_ema": (True, False), "train.stop_after_step": (2690, 2750)}
    assert compose_config("experiment=track3_soap44").reference is None  # #44's curves are not in ../shared


@pytest.mark.parametrize("arm,base,steps", [("track3_proxy_cpu_best46", "track3_proxy_cpu", 300),
                                            ("track3_proxy_cpu_best46_v1", "track3_proxy_cpu_v1", 400)])
def test_proxy_arms_are_their_proxy_with_best46s_optimizer_and_scaled_horizons(arm, base, steps):
    cfg, proxy, best = (compose_config(f"experiment={e}") for e in (arm, base, "track3_best46"))
    assert cfg.model == proxy.model and cfg.train == proxy.train and cfg.data == proxy.data
    scale = steps / 2900  # every 2900-step horizon of #46's optimizer, at the proxy's length
    assert cfg.optim.momentum_horizon == steps
    for key in ("momentum_warmup_steps", "momentum_cooldown_steps", "lookahead_start", "lookahead_end"):
        assert abs(getattr(cfg.optim, key) - getattr(best.optim, key) * scale) <= 1, key
    horizons = {"momentum_warmup_steps", "momentum_cooldown_steps", "momentum_horizon", "lookahead_start",
                "lookahead_end"}
    ours, theirs = flat(cfg), flat(best)
    assert {k for k in ours if k.startswith("optim.") and ours[k] != theirs[k]} == {f"optim.{k}" for k in horizons}
