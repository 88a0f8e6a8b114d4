"""The attention backends (sdpa, flex, fa3) agree on one mask; fa3's call convention; auto's choice.

fa3 runs on CPU here with FlashAttention-3's varlen call stood in for by tests/support/reference_scripts.py's
`fa3_varlen_reference` (a per-document loop with FA3's window rule), wrapped to check how we call it.
FlexAttention on CPU is forward-only (torch's limit), so the comparisons run without gradients.
"""
from __future__ import annotations

import sys
import types
import warnings

import pytest
import torch

from model import attention_backends as AB
from model.config import AttnImpl, ModelConfig
from model.gpt import GPT
from model.masks import (AttentionSpec, DocLayout, Window, attend, attention, build_masks, choose_backend, dense_mask,
                         document_ids, prepare)
from tests.support.reference_scripts import fa3_varlen_reference
from tests.unit.model.test_arch import V, ids, randomize, same_weights, tiny

BOS = V - 1
H, D = 2, 8


@pytest.fixture(autouse=True)
def quiet_one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    with warnings.catch_warnings():  # CPU flex: unfused (warns once)
        warnings.simplefilter("ignore")
        yield
    torch.set_num_threads(n)


class RecordingFA3:
    """flash_attn_interface on CPU: checks the call convention of records 29-46, then computes
    fa3_varlen_reference's result."""

    def __init__(self):
        self.calls = []

    def flash_attn_varlen_func(self, q, k, v, **kw):
        total = q.size(0)
        assert q.dim() == k.dim() == v.dim() == 3 and q.shape == k.shape == v.shape  # [total, H, D]
        cu = kw["cu_seqlens_q"]
        assert cu is kw["cu_seqlens_k"] and cu.dtype == torch.int32 and cu.dim() == 1
        assert int(cu[0]) == 0 and int(cu[-1]) == total and bool((cu[1:] >= cu[:-1]).all())
        assert kw["max_seqlen_q"] == kw["max_seqlen_k"] and isinstance(kw["max_seqlen_q"], int)
        assert int((cu[1:] - cu[:-1]).max()) <= kw["max_seqlen_q"]
        assert kw["causal"] is True and isinstance(kw["softmax_scale"], float)
        left, right = kw["window_size"]
        assert isinstance(left, int) and right == 0 and left >= -1
        self.calls.append(kw)
        return fa3_varlen_reference(q, k, v, **kw)


@pytest.fixture
def fa3(monkeypatch):
    """FA3 importable and usable on CPU fp32 (the stand-in); auto's own checks are tested separately."""
    module = RecordingFA3()
    monkeypatch.setattr(AB, "fa3_module", lambda: module)
    monkeypatch.setattr(AB, "fa3_blocker", lambda device, dtype, unit, auto: None if unit == 1 else "blocks")
    return module


def qkv(B, T, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, T, H, D, generator=g) for _ in range(3)]


def brute_force(q, k, v, docs, left, unit, scale):
    """softmax over the visible keys, one query at a time, from the predicate's definition."""
    B, T = q.shape[:2]
    out = torch.empty_like(q)
    for b in range(B):
        for i in range(T):
            keys = [j for j in range(i + 1) if (docs is None or docs[b, i] == docs[b, j])
                    and (left is None or i // unit - j // unit <= left)]
            s = torch.einsum("hd,jhd->hj", q[b, i], k[b, keys]) * scale
            out[b, i] = torch.einsum("hj,jhd->hd", s.softmax(-1), v[b, keys])
    return out


def rows_with_bos(B=2, T=32):
    x = ids(T, B=B, seed=3)
    x[0, [0, 5, 6, 7, 20]] = BOS  # documents of length 1 (positions 5, 6)
    if B > 1:
        x[1, [9, T - 1]] = BOS    # row 1 starts mid-document; its last document has one token
    return x


WINDOWS = [None, 0, 1, 4, 100]  # left in tokens: none, only itself, 2 tokens, 5, longer than any document


@pytest.mark.parametrize("left", WINDOWS)
@pytest.mark.parametrize("doc_causal", [True, False])
def test_backends_agree_on_rows(left, doc_causal, fa3):
    x = rows_with_bos()
    q, k, v = qkv(*x.shape)
    layout = DocLayout.rows(x, BOS if doc_causal else None)
    window = None if left is None else Window(left)
    ref = brute_force(q, k, v, layout.docs, left, 1, 0.12)
    with torch.no_grad():
        outs = {b: attention(q, k, v, layout, window, 0.12, b) for b in (AttnImpl.sdpa, AttnImpl.flex, AttnImpl.fa3)}
    for b, out in outs.items():
        assert (out - ref).abs().max() < 1e-5, b
    assert len(fa3.calls) == 1


def packed_cu_seqlens(T=48):
    """A packed row as the records' loader makes it: starts, T, then padded with T (empty documents);
    a leading empty document and documents of length 1 included."""
    return torch.tensor([0, 0, 7, 8, 9, 30, 47, T, T, T], dtype=torch.int32)


@pytest.mark.parametrize("left", WINDOWS)
def test_backends_agree_on_a_packed_row(left, fa3):
    T = 48
    cu = packed_cu_seqlens(T)
    q, k, v = qkv(1, T, seed=1)
    layout = DocLayout.packed(cu, T, max_seqlen=24)
    docs = layout.document_ids()
    assert docs[0].tolist() == [1] * 7 + [2, 3] + [4] * 21 + [5] * 17 + [6]
    window = None if left is None else Window(left)
    ref = brute_force(q, k, v, docs, left, 1, 0.2)
    with torch.no_grad():
        for b in (AttnImpl.sdpa, AttnImpl.flex, AttnImpl.fa3):
            assert (attention(q, k, v, layout, window, 0.2, b) - ref).abs().max() < 1e-5, b
    call = fa3.calls[-1]
    assert call["cu_seqlens_q"] is layout.cu_seqlens and call["max_seqlen_q"] == 24
    assert call["window_size"] == ((-1 if left is None else left), 0) and call["softmax_scale"] == 0.2


def test_a_packed_row_equals_the_same_documents_as_bos_rows():
    """cu_seqlens and bos-derived ids describe the same documents: identical masks, identical outputs."""
    x = rows_with_bos(B=1, T=32)
    starts = [0] + (x[0] == BOS).nonzero().flatten().tolist()
    cu = torch.tensor(sorted(set(starts)) + [32], dtype=torch.int32)
    rows, packed = DocLayout.rows(x, BOS), DocLayout.packed(cu, 32)
    assert torch.equal(rows.docs - rows.docs[0, 0], packed.document_ids() - packed.document_ids()[0, 0])
    assert torch.equal(rows.varlen(x.device)[0], cu)
    w = Window(3)
    assert torch.equal(dense_mask(rows.docs, 32, w, x.device), dense_mask(packed.document_ids(), 32, w, x.device))


@pytest.mark.parametrize("blocks", [1, 2, 3])
def test_block_windows_agree_on_sdpa_and_flex_and_fa3_refuses_them(blocks, fa3):
    """Record 20's block-wise window (unit 8 here, 128 there): sdpa and flex agree; fa3 cannot express it."""
    x = rows_with_bos(B=1, T=32)
    q, k, v = qkv(1, 32, seed=2)
    layout, window = DocLayout.rows(x, BOS), Window.from_window_size(torch.tensor(blocks), 8)
    ref = brute_force(q, k, v, layout.docs, blocks - 1, 8, 0.3)
    with torch.no_grad():
        for b in (AttnImpl.sdpa, AttnImpl.flex):
            assert (attention(q, k, v, layout, window, 0.3, b) - ref).abs().max() < 1e-5, b
    with pytest.raises(ValueError, match="model.attn_impl=fa3 .*token-exact"):
        prepare(AttnImpl.fa3, layout, window, x.device)


@pytest.mark.parametrize("W", [1, 2, 7, 16])
def test_window_size_w_is_fa3_left_w_minus_1(W):
    """model.window_size = W (q - k < W, record 12) is FA3's window_size=(W - 1, 0): W visible tokens."""
    T = 24
    got = dense_mask(None, T, Window.from_window_size(W), torch.device("cpu"))[0, 0]
    i, j = torch.arange(T)[:, None], torch.arange(T)[None, :]
    assert torch.equal(got, (j <= i) & (i - j < W))
    q, k, v = qkv(1, T, seed=4)
    fa3_out = fa3_varlen_reference(q[0], k[0], v[0], torch.tensor([0, T], dtype=torch.int32),
                                   torch.tensor([0, T], dtype=torch.int32), T, T, causal=True, window_size=(W - 1, 0))
    ours = attend(q, k, v, AttentionSpec(AttnImpl.sdpa, DocLayout(1, T), Window.from_window_size(W),
                                         dense_mask(None, T, Window.from_window_size(W), q.device)), None)
    assert (ours[0] - fa3_out).abs().max() < 1e-5


@pytest.mark.parametrize("kw", [dict(doc_causal=True, window_size=8), dict(doc_causal=True, window_size=8,
                                short_window_layers=[1]), dict(window_size=5), dict(doc_causal=True)])
def test_the_model_on_fa3_equals_the_model_on_sdpa(kw, fa3):
    """Token windows (record 12's model.window_size meaning) through the model: fa3 = sdpa = flex."""
    kw = dict(n_layer=2, attn_scale=0.12, block_size=64, **kw)
    dense = randomize(GPT(tiny(**kw, attn_impl=AttnImpl.sdpa)))
    x = rows_with_bos(B=2, T=32)
    with torch.no_grad():
        ref = dense(x)
        for impl in (AttnImpl.flex, AttnImpl.fa3):
            other = same_weights(GPT(tiny(**kw, attn_impl=impl)), dense)
            assert (other(x) - ref).abs().max() < 1e-5, impl
    assert len(fa3.calls) == 2  # one call per attention layer
    if kw.get("window_size"):
        assert fa3.calls[0]["window_size"] == (kw["window_size"] - 1, 0)


def test_build_masks_takes_a_packed_row(fa3):
    cfg = tiny(n_layer=2, doc_causal=True, window_size=6, short_window_layers=[1], attn_impl=AttnImpl.fa3)
    cu = torch.tensor([0, 10, 11, 32, 32], dtype=torch.int32)
    masks = build_masks(cfg, ids(32, B=1), torch.tensor([6, 3]), cu_seqlens=cu, max_seqlen=21)
    assert masks.long.mask == (cu, 21) and masks.long.window == Window(5) and masks.short.window == Window(2)
    sd = build_masks(ModelConfig(**{**cfg.__dict__, "attn_impl": AttnImpl.sdpa}), ids(32, B=1), torch.tensor([6, 3]), cu)
    assert torch.equal(sd.long.mask[0, 0], dense_mask(DocLayout.packed(cu, 32).document_ids(), 32, Window(5),
                                                      torch.device("cpu"))[0, 0])
    lefts = build_masks(cfg, ids(32, B=1), (Window(256), Window(128)), cu_seqlens=cu, max_seqlen=21)  # ws * 128
    assert lefts.long.window == Window(256) and lefts.short.window == Window(128)
    with pytest.raises(ValueError, match="one row"):
        build_masks(cfg, ids(32, B=2), torch.tensor([6, 3]), cu_seqlens=cu)


# ---- auto's choice and the refusals -------------------------------------------------------------

def environment(monkeypatch, importable: bool, capability=(9, 0)):
    module = types.SimpleNamespace(flash_attn_varlen_func=fa3_varlen_reference) if importable else None
    monkeypatch.setattr(AB, "fa3_module", lambda: module)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(AB, "_capability", {0: capability})


CUDA, CPU = torch.device("cuda", 0), torch.device("cpu")
REC = dict(doc_causal=True, window_size=1024)  # record 12's mask (token window)


@pytest.mark.parametrize("importable,capability,device,dtype,cfg,want,why", [
    (True, (9, 0), CUDA, torch.bfloat16, REC, "fa3", "importable, CUDA sm90, bfloat16"),
    (False, (9, 0), CUDA, torch.bfloat16, REC, "flex", "not importable"),
    (True, (8, 0), CUDA, torch.bfloat16, REC, "flex", "this GPU is sm80"),
    (True, (10, 0), CUDA, torch.float16, REC, "flex", "this GPU is sm100"),
    (True, (9, 0), CUDA, torch.float32, REC, "flex", "bf16/fp16"),
    (True, (9, 0), CUDA, torch.bfloat16, dict(doc_causal=True, window_size=1792, window_block=128), "flex", "blocks of 128"),
    (True, (9, 0), CPU, torch.bfloat16, REC, "sdpa", "on cpu, SDPA with a dense mask"),
])
def test_auto_picks_fa3_then_flex_then_sdpa(monkeypatch, importable, capability, device, dtype, cfg, want, why):
    """A packed row (records 29-46) in every environment; bos-delimited rows (records 12, 20) never get fa3."""
    environment(monkeypatch, importable, capability)
    backend, reason = choose_backend(ModelConfig(**cfg), device, dtype, packed=True)
    assert backend.value == want and why in reason
    rows, reason = choose_backend(ModelConfig(**cfg), device, dtype)
    assert rows.value == ("flex" if want == "fa3" else want)
    assert want != "fa3" or "bos-delimited rows keep FlexAttention" in reason


def test_plain_causal_rows_keep_sdpa_is_causal_and_a_packed_row_is_document_causal(monkeypatch):
    environment(monkeypatch, True)
    backend, reason = choose_backend(ModelConfig(), CUDA, torch.bfloat16)
    assert backend is AttnImpl.sdpa and "is_causal" in reason
    assert choose_backend(ModelConfig(), CUDA, torch.bfloat16, packed=True)[0] is AttnImpl.fa3


def test_auto_reads_the_autocast_dtype(monkeypatch):
    environment(monkeypatch, True)
    assert choose_backend(ModelConfig(**REC), CUDA, packed=True)[0] is AttnImpl.flex  # fp32 outside autocast
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert AB.compute_dtype(CPU) is torch.bfloat16


def test_fa3_by_name_refuses_what_it_cannot_run_naming_the_key(monkeypatch):
    environment(monkeypatch, True)
    block = ModelConfig(doc_causal=True, window_size=1792, window_block=128, attn_impl=AttnImpl.fa3)
    with pytest.raises(ValueError, match=r"model.attn_impl=fa3 cannot run here: .*whole blocks of 128"):
        choose_backend(block, CUDA, torch.bfloat16)
    token = ModelConfig(**REC, attn_impl=AttnImpl.fa3)
    with pytest.raises(ValueError, match="model.attn_impl=fa3 .*CUDA only"):
        choose_backend(token, CPU, torch.bfloat16)
    assert choose_backend(token, CUDA, torch.bfloat16, )[0] is AttnImpl.fa3
    assert choose_backend(token, CUDA, torch.float16)[0] is AttnImpl.fa3
    environment(monkeypatch, True, capability=(8, 0))  # by name, any GPU: FA3 says itself if it cannot
    assert choose_backend(token, CUDA, torch.bfloat16)[0] is AttnImpl.fa3
    environment(monkeypatch, False)
    with pytest.raises(ValueError, match="flash_attn_interface is not importable"):
        choose_backend(token, CUDA, torch.bfloat16)


def test_the_real_import_is_lazy_and_cached(monkeypatch):
    AB.forget_fa3()
    monkeypatch.setitem(sys.modules, "flash_attn_interface", types.SimpleNamespace(marker=1))
    try:
        assert AB.fa3_module().marker == 1
        monkeypatch.delitem(sys.modules, "flash_attn_interface")
        assert AB.fa3_module().marker == 1  # looked up once
        AB.forget_fa3()
        monkeypatch.setitem(sys.modules, "flash_attn_interface", None)  # import of it raises ImportError
        assert AB.fa3_module() is None
    finally:
        AB.forget_fa3()


def test_document_ids_of_rows_and_packed_rows_agree_on_a_fixed_example():
    x = torch.tensor([[BOS, 1, 2, BOS, BOS, 3]])
    assert document_ids(x, BOS).tolist() == [[1, 1, 1, 2, 3, 3]]
    cu = torch.tensor([0, 3, 4, 6, 6], dtype=torch.int32)
    assert DocLayout.packed(cu, 6).document_ids().tolist() == [[0, 0, 0, 1, 2, 2]]


def test_check_start_refuses_fa3_by_name_before_any_compute(monkeypatch):
    environment(monkeypatch, False)
    from model.masks import attention_path, check_start
    cfg = ModelConfig(**REC, attn_impl=AttnImpl.fa3)
    with pytest.raises(ValueError, match="^model.attn_impl=fa3 cannot run here: FA3 runs on CUDA only"):
        check_start(cfg, CPU, 1, 64)
    assert attention_path(ModelConfig(**REC), CPU).startswith("sdpa (auto: on cpu, SDPA with a dense mask; "
                                                               "document-causal, sliding window 1024)")
