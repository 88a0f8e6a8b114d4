"""Track-3 result #46's model and Adam pieces against the script's own code (track3_best46_cwd_rowfloor_tailema.py,
loaded on CPU by tests/support/track3_reference.py; skipped without ../shared).

- init: the script builds its GPT after torch.manual_seed(SEED) and runs its init section (zero every `proj`,
  depth-scaled fc, CGI gains; 8 blocks reach the paired CGI path); ours, built from the same seed with the
  model keys #46 needs, must hold the same tensors bit for bit, and leave the generator where the script's does.
- Adam: the script's bias-correction-free Adam class and its AdamW against our Adam groups, two steps each from
  identical gradients.

The experiment file (configs/experiment/track3_best46.yaml) is assembled elsewhere; the overrides below are the
model and Adam keys it must set.
"""
from __future__ import annotations

import pytest
import torch

from model.gpt import GPT
from optim import build_optimizer
from tests.support.inprocess import compose_config
from tests.support.track3_reference import definitions, load_reference_weights, needs_reference, our_name, setup

pytestmark = [needs_reference, pytest.mark.e2e]  # integration: the reference script at shrunk size
SCRIPT = "track3_best46"
BEST46_MODEL = ("model.init=constructor", "model.init_fc_depth_scale=0.3", "model.init_cgi_alpha=0.125",
                "model.init_cgi_pair_from_layer=6", "model.init_cgi_head_shrink=0.5", "model.norm_fp32_gain=true")
SHRUNK = ("model.n_layer=8", "model.n_embd=256", "model.n_head=2", "model.vocab_size=512")


def _script_model(seed: int):
    """The script's model (8 x 256, 2 heads of its fixed 128, vocabulary 512) after its init section, and the
    CPU generator's state right after it."""
    ns = definitions(SCRIPT, seed=seed)
    torch.manual_seed(seed)
    ref = ns["GPT"](vocab_size=512, num_layers=8, model_dim=256)
    scope = setup(SCRIPT, ns, ref, fused=False)
    return ref, scope, torch.get_rng_state()


def _our_model(seed: int, *extra: str):
    cfg = compose_config("experiment=track3_muon", *BEST46_MODEL, *SHRUNK, *extra)
    torch.manual_seed(seed)
    return GPT(cfg.model), torch.get_rng_state()


@pytest.mark.parametrize("seed", [0, 3])
def test_init_is_the_scripts_bit_for_bit(seed):
    ref, scope, ref_state = _script_model(seed)
    assert scope["SEED"] == seed
    ours, our_state = _our_model(seed)
    mine = dict(ours.named_parameters())
    assert len(mine) == len(dict(ref.named_parameters()))
    for name, p in ref.named_parameters():
        q = mine[our_name(name)].detach()
        assert q.dtype == p.dtype and torch.equal(q, p.detach()), name
    assert torch.equal(our_state, ref_state)  # the same number of draws from the default generator
    # what the comparison covers: nonzero q/k/v/fc biases, zero proj (head bias too), scaled fc, paired gains
    assert (ref.blocks[0].attn.q.bias != 0).all() and (ref.proj.bias == 0).all() and (ref.blocks[3].mlp.proj.weight == 0).all()
    g6, g7 = ref.blocks[6].norm1.gains.detach(), ref.blocks[7].norm1.gains.detach()
    assert torch.equal((g6 - 1).view(2, 128).sum(1), -(g7 - 1).view(2, 128).sum(1))
    # one changed key breaks it: the comparison is not vacuous
    shifted, _ = _our_model(seed, "model.init_cgi_pair_from_layer=7")
    assert not torch.equal(shifted.blocks[6].ln_1.weight, g6)



BEST46_ADAM = ("optim.adam_betas=[0.8,0.99]", "+optim.role_adam_betas.bias=[0.8,0.997]",
               "+optim.role_adam_betas.attn_out_bias=[0.8,0.9965]",
               "optim.adam_no_bias_correction_roles=[gain,bias,attn_out_bias]", "optim.embed_lr=0.3",
               "optim.head_lr=0.003125", "optim.scalar_lr=0.01", "optim.adam_weight_decay=0.0")


def test_adam_groups_step_as_the_scripts_optimizers():
    """Two steps from identical gradients: the script's bias-correction-free Adam (gains; other vectors with the
    head bias; attention-out biases) against our uncorrected groups, bit for bit; its AdamW (table, head weight)
    against our corrected ones (torch's AdamW rounds its step differently: a tolerance). fp32 on both sides."""
    ns = definitions(SCRIPT, seed=0)
    torch.manual_seed(0)
    ref = ns["GPT"](vocab_size=512, num_layers=2, model_dim=128).float()
    scope = setup(SCRIPT, ns, ref, fused=False)
    cfg = compose_config("experiment=track3_muon", *BEST46_MODEL, *BEST46_ADAM, "model.n_layer=2", "model.n_embd=128",
                         "model.n_head=1", "model.vocab_size=512", "model.embed_bf16=false")
    ours = GPT(cfg.model)
    load_reference_weights(ours, ref)
    optimizer = build_optimizer(cfg.optim, list(ours.named_parameters()), ours.param_roles())
    mine = dict(ours.named_parameters())
    script_groups = [g for opt in (scope["optimizer1"], scope["optimizer3"]) for g in opt.param_groups]
    adam_params = {id(p) for g in script_groups for p in g["params"]}
    assert [g["betas"] for g in scope["optimizer3"].param_groups] == [(0.8, 0.99), (0.8, 0.997), (0.8, 0.9965)]
    scope["set_hparams"](0)  # lr = lr0 at step 0 on both sides (no schedule here)
    gen = torch.Generator().manual_seed(5)
    worst_adamw = (0.0, "")
    for step in range(2):
        for name, p in ref.named_parameters():
            p.grad = torch.randn(p.shape, generator=gen) * 100 if id(p) in adam_params else None
            mine[our_name(name)].grad = None if p.grad is None else p.grad.clone()
        scope["optimizer1"].step()
        scope["optimizer3"].step()
        optimizer.step()
        for name, p in ref.named_parameters():
            if id(p) not in adam_params:
                continue
            q = mine[our_name(name)].detach()
            if p.ndim < 2:
                assert torch.equal(q, p.detach()), (step, name)
            else:
                rel = ((q - p.detach()).abs().max() / p.detach().abs().max()).item()
                worst_adamw = max(worst_adamw, (rel, name))
    print(f"\nAdam groups: uncorrected bit-equal; AdamW groups largest relative difference {worst_adamw[0]:.2e} "
          f"({worst_adamw[1]})")
    assert worst_adamw[0] < 1e-6, worst_adamw
    groups = {g["role"]: g for g in optimizer.param_groups}
    assert groups["bias"]["names"][-1] == "lm_head.bias"  # the head bias steps with the other biases (beta2 0.997)
