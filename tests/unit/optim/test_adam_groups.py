"""Adam-routed roles with their own betas and without bias correction (optim.role_adam_betas,
optim.adam_no_bias_correction_roles; track-3 result #46's aux Adam), and the attention-out bias role.
Against formulas and torch's AdamW here; against the script's Adam class: tests/records/test_track3_best46_pieces.py."""
import io

import pytest
import torch
from omegaconf import OmegaConf

from model.config import ModelConfig
from model.gpt import GPT
from optim import build_hybrid
from optim.hybrid_config import DualConfig, MuonConfig

EPS = 1e-10


def cfg_of(schema=MuonConfig, **overrides):
    cfg = OmegaConf.structured(schema)
    for k, v in overrides.items():
        OmegaConf.update(cfg, k, v, merge=False)
    return OmegaConf.to_object(cfg)


def vectors(seed: int = 0):
    """(name, Parameter) pairs and roles: one vector per Adam-routed role, plus a hidden matrix, gradients set."""
    g = torch.Generator().manual_seed(seed)
    shapes = {"ln.weight": ([8], "gain"), "fc.bias": ([8], "bias"), "attn.proj.bias": ([8], "attn_out_bias"),
              "head.weight": ([5, 8], "head"), "fc.weight": ([8, 8], "mlp_in")}
    named, roles = [], {}
    for name, (shape, role) in shapes.items():
        p = torch.nn.Parameter(torch.randn(*shape, generator=g))
        named.append((name, p))
        roles[name] = role
    return named, roles


def set_grads(named, seed: int) -> None:
    g = torch.Generator().manual_seed(100 + seed)
    for _, p in named:
        p.grad = torch.randn(p.shape, generator=g) * 1e3  # summed-loss scale: eps is negligible, as in track 3


B46 = dict(adam_betas=[0.8, 0.99], role_adam_betas={"bias": [0.8, 0.997], "attn_out_bias": [0.8, 0.9965]},
           adam_no_bias_correction_roles=["gain", "bias", "attn_out_bias"], adam_weight_decay=0.0)


def by_role(opt) -> dict:
    return {g["role"]: g for g in opt.param_groups}


def test_the_model_gives_the_attention_out_bias_its_own_role_and_the_head_bias_the_bias_role():
    model = GPT(ModelConfig(n_layer=1, n_head=2, n_embd=32, vocab_size=64, block_size=16, tie_embeddings=False,
                            head_bias=True, fused_qkv=False))
    roles = model.param_roles()
    assert roles["blocks.0.attn.proj.bias"] == "attn_out_bias" and roles["blocks.0.attn.proj.weight"] == "attn_out"
    assert roles["lm_head.bias"] == "bias" and roles["blocks.0.mlp.proj.bias"] == "bias"
    assert roles["blocks.0.attn.q.bias"] == "bias"


def test_role_betas_and_bias_correction_land_on_their_groups_only():
    named, roles = vectors()
    groups = by_role(build_hybrid(cfg_of(**B46), named, roles))
    assert groups["gain"]["betas"] == (0.8, 0.99) and groups["head"]["betas"] == (0.8, 0.99)
    assert groups["bias"]["betas"] == (0.8, 0.997) and groups["attn_out_bias"]["betas"] == (0.8, 0.9965)
    assert [r for r, g in groups.items() if g.get("bias_correction", True) is False] == ["gain", "bias", "attn_out_bias"]
    assert "bias_correction" not in groups["head"] and "betas" not in groups["mlp_in"]
    default = by_role(build_hybrid(cfg_of(), named, roles))  # defaults: one betas, corrected, no new key
    assert all(g["betas"] == (0.8, 0.95) and "bias_correction" not in g for r, g in default.items() if r != "mlp_in")
    # a role's own betas win over hidden_adam_betas for hidden matrices on Adam
    hidden = by_role(build_hybrid(cfg_of(DualConfig, hidden_map="adam", hidden_adam_betas=[0.9, 0.95],
                                         role_adam_betas={"mlp_in": [0.7, 0.9]}), named, roles))
    assert hidden["mlp_in"]["betas"] == (0.7, 0.9)


def formula_steps(grads: list[torch.Tensor], p0: torch.Tensor, lr: float, b1: float, b2: float, corrected: bool):
    """Adam in float64 from its definition (optim/maps/adam.py's docstring), one entry per step."""
    p, m, v, out = p0.double(), torch.zeros_like(p0, dtype=torch.float64), torch.zeros_like(p0, dtype=torch.float64), []
    for t, g in enumerate(grads, start=1):
        g = g.double()
        m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
        mh, vh = (m / (1 - b1**t), v / (1 - b2**t)) if corrected else (m, v)
        p = p - lr * mh / (vh.sqrt() + EPS)
        out.append(p.clone())
    return out


def test_three_steps_follow_the_formulas_uncorrected_and_corrected():
    named, roles = vectors()
    start = {n: p.detach().clone() for n, p in named}
    opt = build_hybrid(cfg_of(**B46, scalar_lr=0.01, head_lr=0.003), named, roles)
    grads = []
    for k in range(3):
        set_grads(named, k)
        grads.append({n: p.grad.clone() for n, p in named})
        opt.step()
        params = dict(named)
        for name, role, lr, betas, corrected in [("ln.weight", "gain", 0.01, (0.8, 0.99), False),
                                                 ("fc.bias", "bias", 0.01, (0.8, 0.997), False),
                                                 ("attn.proj.bias", "attn_out_bias", 0.01, (0.8, 0.9965), False),
                                                 ("head.weight", "head", 0.003, (0.8, 0.99), True)]:
            want = formula_steps([g[name] for g in grads], start[name], lr, *betas, corrected)[-1]
            torch.testing.assert_close(params[name].detach().double(), want, rtol=0, atol=3e-7)  # fp32 rounding
    # the uncorrected first step moves each coordinate by lr (1 - b1) / sqrt(1 - b2): 2 lr at (0.8, 0.99)
    assert float(formula_steps([grads[0]["ln.weight"]], start["ln.weight"], 0.01, 0.8, 0.99, False)[0][0]
                 - start["ln.weight"][0].double()) == pytest.approx(-0.02 * float(grads[0]["ln.weight"][0].sign()), rel=1e-6)


def test_a_corrected_group_steps_as_torch_adamw():
    named, roles = vectors()
    head = dict(named)["head.weight"]
    twin = torch.nn.Parameter(head.detach().clone())
    opt = build_hybrid(cfg_of(**B46, head_lr=0.003), named, roles)
    adamw = torch.optim.AdamW([twin], lr=0.003, betas=(0.8, 0.99), eps=EPS, weight_decay=0.0, foreach=False)
    for k in range(3):
        set_grads(named, k)
        twin.grad = head.grad.clone()
        opt.step()
        adamw.step()
    torch.testing.assert_close(head.detach(), twin.detach(), rtol=1e-6, atol=1e-9)


def test_the_flag_survives_a_checkpoint():
    named, roles = vectors()
    opt = build_hybrid(cfg_of(**B46), named, roles)
    set_grads(named, 0)
    opt.step()
    buf = io.BytesIO()
    torch.save({"opt": opt.state_dict(), "p": {n: p.detach().clone() for n, p in named}}, buf)
    set_grads(named, 1)
    opt.step()
    after = {n: p.detach().clone() for n, p in named}
    buf.seek(0)
    saved = torch.load(buf)
    named2, _ = vectors()
    with torch.no_grad():
        for n, p in named2:
            p.copy_(saved["p"][n])
    opt2 = build_hybrid(cfg_of(**B46), named2, roles)
    opt2.load_state_dict(saved["opt"])
    set_grads(named2, 1)
    opt2.step()
    assert all(torch.equal(p.detach(), after[n]) for n, p in named2)


@pytest.mark.parametrize("overrides, message", [
    (dict(role_adam_betas={"norm": [0.8, 0.99]}), "optim.role_adam_betas.norm: unknown role"),
    (dict(role_adam_betas={"bias": [0.8, 1.0]}), r"optim.role_adam_betas.bias=\[0.8, 1.0\]"),
    (dict(role_adam_betas={"bias": [0.8]}), "optim.role_adam_betas.bias"),
    (dict(adam_no_bias_correction_roles=["gains"]), "optim.adam_no_bias_correction_roles"),
    (dict(adam_no_bias_correction_roles=["bias", "bias"]), "optim.adam_no_bias_correction_roles"),
])
def test_bad_values_name_their_key(overrides, message):
    with pytest.raises(ValueError, match=message):
        cfg_of(**overrides).check()


@pytest.mark.parametrize("key, value", [("role_adam_betas", {"mlp_in": [0.8, 0.9]}),
                                        ("adam_no_bias_correction_roles", ["mlp_in"])])
def test_a_role_on_another_map_is_refused(key, value):
    named, roles = vectors()
    with pytest.raises(ValueError, match=f"optim.{key} names role 'mlp_in', which is on the 'linear' map"):
        build_hybrid(cfg_of(**{key: value}), named, roles)
