"""Records 29, 43 and 46's attention call, reproduced by model/masks.py's `attention` on every backend.

Each script's CausalSelfAttention runs on CPU (tests/support/reference_scripts.py) with its FA3 call
recorded: the q, k, v it passes, its packed cu_seqlens (padded with T, as its loader pads them), its
window_size=(bm_size, 0), max_seqlen and softmax_scale, and the output. The same inputs through our
DocLayout.packed + Window(bm_size) on sdpa, flex and fa3 must give that output. Skipped without ../shared.
"""
from __future__ import annotations

import types
import warnings

import pytest
import torch

from model import attention_backends as AB
from model.config import AttnImpl
from model.masks import DocLayout, Window, attention
from tests.support.reference_scripts import REF_DIR, fa3_varlen_reference, load

pytestmark = pytest.mark.skipif(not REF_DIR.exists(), reason="needs ../shared/reference/modded-nanogpt")

T, DIM, HEADS, HEAD_DIM = 64, 32, 4, 8


class Recorder:
    def __init__(self):
        self.calls = []

    def flash_attn_varlen_func(self, q, k, v, **kw):
        out = fa3_varlen_reference(q, k, v, **kw)
        self.calls.append((q.detach().clone(), k.detach().clone(), v.detach().clone(), kw, out.detach().clone()))
        return out


def run_script_attention(script: str, cu: torch.Tensor, bm_sizes: list[int]) -> list:
    """The script's attention layer once per window, its FA3 calls recorded (q, k, v, kwargs, output)."""
    m = load(script)
    m.args = m.Hyperparameters()
    m.grad_accum_steps, m.world_size, m.device = 1, 1, torch.device("cpu")
    rec = Recorder()
    m.flash_attn_varlen_func = rec.flash_attn_varlen_func  # record 29 imports the function itself
    m.flash_attn_interface = rec                           # records 43 and 46 call it on the module
    torch.manual_seed(0)
    x = torch.randn(1, T, DIM)
    for bm_size in bm_sizes:
        if script == "record29_fa3":
            attn = m.CausalSelfAttention(DIM, HEADS, T, head_dim=HEAD_DIM)
            with torch.no_grad():
                attn(x, None, torch.tensor([0.7, 0.3]), cu, bm_size)
        else:
            attn = m.CausalSelfAttention(DIM, HEAD_DIM, HEADS)
            theta = torch.rand(T, HEAD_DIM // 2) * 3
            args = m.AttnArgs(ve=torch.randn(1, T, DIM), sa_lambdas=torch.tensor([0.7, 0.3]), seqlens=cu,
                              bm_size=bm_size, cos=theta.cos(), sin=theta.sin(), attn_scale=0.12)
            with torch.no_grad():
                attn(x, args)
    return rec.calls


@pytest.fixture
def fa3_stand_in(monkeypatch):
    module = types.SimpleNamespace(flash_attn_varlen_func=fa3_varlen_reference)
    monkeypatch.setattr(AB, "fa3_module", lambda: module)
    monkeypatch.setattr(AB, "fa3_blocker", lambda device, dtype, unit, auto: None if unit == 1 else "blocks")


BM_SIZES = [0, 5, 128]  # left = ws * block_size tokens; 0: only itself; 128: longer than every document


@pytest.mark.parametrize("script", ["record29_fa3", "record43_cautiouswd", "record46_batchsizeschedule"])
def test_our_backends_reproduce_the_scripts_fa3_call(script, fa3_stand_in):
    cu = torch.tensor([0, 1, 17, 18, 40, T, T, T], dtype=torch.int32)  # the loader's padding: repeats of T
    calls = run_script_attention(script, cu, BM_SIZES)
    assert len(calls) == len(BM_SIZES)
    worst = {}
    for bm_size, (q, k, v, kw, ref) in zip(BM_SIZES, calls):
        assert kw["window_size"] == (bm_size, 0) and kw["cu_seqlens_q"] is cu
        layout = DocLayout.packed(cu, T, max_seqlen=kw["max_seqlen_q"])
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # CPU flex: unfused
            for backend in (AttnImpl.sdpa, AttnImpl.flex, AttnImpl.fa3):
                ours = attention(q[None], k[None], v[None], layout, Window(bm_size), kw["softmax_scale"], backend)[0]
                worst[backend.value, bm_size] = (ours - ref).abs().max().item()
    assert max(worst.values()) < 1e-5, worst
