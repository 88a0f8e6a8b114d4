"""Track-3 result #46's model and Adam pieces against the script's own code (track3_best46_cwd_rowfloor_tailema.py,
loaded on CPU by tests/support/track3_reference.py; skipped without ../shared).

- init: the script builds its GPT after torch.manual_seed(SEED) and runs its init section (zero every `proj`,
  depth-scaled fc, CGI gains; 8 blocks reach the paired CGI path); ours, built from the same seed with the
  model keys #46 needs, must hold the same tensors bit for bit, and leave the generator where the script's does.

The experiment file (configs/experiment/track3_best46.yaml) is assembled elsewhere; the overrides below are the
model keys it must set.
"""
from __future__ import annotations

import pytest
import torch

from model.gpt import GPT
from tests.support.inprocess import compose_config
from tests.support.track3_reference import definitions, needs_reference, our_name, setup

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

