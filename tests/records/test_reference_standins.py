"""The CPU stand-ins that let the equivalence tests load records 29 on (tests/support/reference_scripts.py),
each against an independent formula: FlashAttention-3's varlen call against attention written from its
definition (a hand-built mask per query, one query at a time), the Newton-Schulz launchers against the
products they name. Skipped without ../shared."""
from __future__ import annotations

import math

import pytest
import torch

from tests.support.reference_scripts import REF_DIR, fa3_varlen_reference, load

pytestmark = pytest.mark.skipif(not REF_DIR.exists(), reason="needs ../shared/reference/modded-nanogpt")


def attention_by_definition(q, k, v, starts: list[int], left: int, scale: float) -> torch.Tensor:
    """One query at a time: the keys of its document at distance 0..left (left < 0: all earlier ones)."""
    out = torch.empty_like(q)
    doc_start = {}
    for a, b in zip(starts[:-1], starts[1:]):
        for i in range(a, b):
            doc_start[i] = a
    for i in range(q.size(0)):
        lo = doc_start[i] if left < 0 else max(doc_start[i], i - left)
        keys = range(lo, i + 1)
        for h in range(q.size(1)):
            logits = torch.tensor([float(q[i, h] @ k[j, h]) * scale for j in keys], dtype=torch.float64)
            w = torch.softmax(logits, 0)
            out[i, h] = sum(w[n] * v[j, h].double() for n, j in enumerate(keys)).float()
    return out


@pytest.mark.parametrize("left", [-1, 0, 2, 5])
def test_fa3_stand_in_is_windowed_document_causal_attention(left):
    torch.manual_seed(0)
    starts = [0, 3, 4, 11, 16]
    q, k, v = (torch.randn(16, 2, 8) for _ in range(3))
    cu = torch.tensor(starts, dtype=torch.int32)
    got = fa3_varlen_reference(q, k, v, cu, cu, 16, 16, causal=True, softmax_scale=0.3, window_size=(left, 0))
    want = attention_by_definition(q, k, v, starts, left, 0.3)
    assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()


@pytest.mark.parametrize("script", ["record29_fa3", "record43_cautiouswd"])
def test_newton_schulz_launchers_are_their_products(script):
    module = load(script)
    xxt, bacaa = (module.XXT, module.ba_plus_cAA) if "XXT" in module.__dict__ else (module.ns_line_1, module.ns_line_2)
    torch.manual_seed(1)
    A = torch.randn(2, 5, 7)
    out = torch.empty(2, 5, 5)
    xxt(A, out)
    want = torch.stack([sum(torch.outer(A[b, :, n], A[b, :, n]) for n in range(7)) for b in range(2)])
    assert torch.allclose(out, want, atol=1e-5)
    S = out
    got = torch.empty_like(S)
    bacaa(S, 0.5, -2.0, got)
    assert torch.allclose(got, -2.0 * S + 0.5 * torch.einsum("bij,bjk->bik", S, S), atol=1e-4)
    assert math.isfinite(float(got.sum()))
