"""Document-causal sliding-window attention: the masks, the window schedule, FlexAttention vs SDPA."""
import math
import warnings

import pytest
import torch

from model.config import AttnImpl, ModelConfig
from model.gpt import GPT
from model.masks import Window, dense_mask, document_ids, window_units
from tests.support.threads import one_thread  # noqa: F401  (autouse: one torch thread)
from tests.unit.model.test_arch import V, ids, randomize, same_weights, tiny

BOS = V - 1


def brute_force_allowed(tokens: list[int], window: int, unit: int, doc_causal: bool) -> torch.Tensor:
    """allowed[q, k] from the definitions, one pair at a time."""
    T = len(tokens)
    doc, d = [], 0
    for t in tokens:
        d += t == BOS
        doc.append(d)
    out = torch.zeros(T, T, dtype=torch.bool)
    for q in range(T):
        for k in range(q + 1):
            same_doc = doc[q] == doc[k] or not doc_causal
            in_window = window == 0 or (q // unit - k // unit) < window // unit
            out[q, k] = same_doc and in_window
    return out


def with_bos(T=96, every=(10, 37, 38, 70), seed=0):
    x = ids(T, B=1, seed=seed)
    x[0, list(every)] = BOS
    return x


@pytest.mark.parametrize("window,unit,doc", [(0, 1, True), (24, 1, False), (24, 1, True), (32, 16, True)])
def test_dense_mask_equals_the_definition(window, unit, doc):
    x = with_bos()
    docs = document_ids(x, BOS) if doc else None
    w = Window.from_window_size(torch.tensor(window // unit), unit) if window else None
    got = dense_mask(docs, x.size(1), w, x.device)[0, 0]
    assert torch.equal(got, brute_force_allowed(x[0].tolist(), window, unit, doc))


def record20_block_mask(tokens: list[int], sw_blocks: int, block: int) -> torch.Tensor:
    """The keys record 20's hand-built BlockMask lets each query see, restated: per query block,
    'full' key blocks (strictly earlier, query and key block both inside one single document) and
    'partial' ones (causal and overlapping in document range, not full), each kept most recent
    first: at most sw-1 full blocks and max(sw - #full, 1) partial blocks; inside kept blocks the
    token-level document-causal mask applies."""
    T = len(tokens)
    nb = T // block
    doc = torch.tensor(tokens).eq(BOS).cumsum(0)
    lo, hi = doc.view(nb, block)[:, 0], doc.view(nb, block)[:, -1]
    out = torch.zeros(T, T, dtype=torch.bool)
    for qb in range(nb):
        full = [kb for kb in range(qb) if lo[qb] == hi[qb] == lo[kb] == hi[kb]]
        partial = [kb for kb in range(qb + 1) if lo[kb] <= hi[qb] and lo[qb] <= hi[kb] and kb not in full]
        kept = sorted(full, reverse=True)[:max(sw_blocks - 1, 0)]
        kept += sorted(partial, reverse=True)[:max(sw_blocks - len(full), 1)]
        for kb in kept:
            for q in range(qb * block, (qb + 1) * block):
                for k in range(kb * block, min((kb + 1) * block, q + 1)):
                    out[q, k] = doc[q] == doc[k]
    return out


@pytest.mark.parametrize("sw_blocks", [1, 2, 3, 5])
def test_block_window_matches_record20_block_mask(sw_blocks):
    x = with_bos(T=128, every=(0, 5, 40, 41, 90))
    got = dense_mask(document_ids(x, BOS), 128, Window.from_window_size(torch.tensor(sw_blocks), 8), x.device)[0, 0]
    assert torch.equal(got, record20_block_mask(x[0].tolist(), sw_blocks, 8))


def test_window_schedule_matches_record20_for_every_step():
    cfg = ModelConfig(window_size=1728, window_block=128, window_grow=True, short_window_layers=[1])
    N = 1393
    for step in range(N + 1):
        v = 1728 * step / N
        record = next(x for x in range(128, int(v) + 1 + 128, 128) if x >= v)  # next multiple of 128, >= 128
        long, short = window_units(cfg, step, N)
        assert long * 128 == record and short == max(1, long // 2)
    assert window_units(cfg, 0, N) == (1, 1) and window_units(cfg, N, N) == (14, 7)  # 128 -> 1792 tokens
    assert window_units(ModelConfig(window_size=1024), 7, 10) == (1024, 512)  # fixed token window


def test_one_layer_sees_exactly_its_window():
    W = 16
    m = randomize(GPT(tiny(n_layer=1, window_size=W)))
    x = ids(64, B=1)
    base = m(x)
    q = 50
    far, near = x.clone(), x.clone()
    far[0, q - W] = (far[0, q - W] + 1) % (V - 1)  # just outside the window of query q
    near[0, q - W + 1] = (near[0, q - W + 1] + 1) % (V - 1)  # just inside
    assert torch.allclose(m(far)[0, q], base[0, q], atol=1e-6)
    assert not torch.allclose(m(near)[0, q], base[0, q], atol=1e-4)


@pytest.mark.parametrize("window", [0, 20])
def test_document_causal_never_attends_across_a_bos(window):
    kw = dict(n_layer=3, doc_causal=True, window_size=window, x0_mix=True, value_residual=True,
              value_embed_tables=1, value_embed_layers=[0], unet_skips=False)
    m = randomize(GPT(tiny(**kw)))
    x = with_bos(T=96, every=(10, 60))
    base = m(x)
    earlier = x.clone()
    earlier[0, 11:60] = (earlier[0, 11:60] + 7) % (V - 1)  # rewrite the whole previous document
    after = m(earlier)
    assert torch.allclose(after[0, 60:], base[0, 60:], atol=1e-6)  # the last document never saw it
    assert not torch.allclose(after[0, 11:60], base[0, 11:60], atol=1e-4)
    # without document masking the same edit leaks into the last document
    leaky = same_weights(GPT(tiny(**{**kw, "doc_causal": False, "window_size": 0})), m)
    assert not torch.allclose(leaky(earlier)[0, 60:], leaky(x)[0, 60:], atol=1e-4)


def test_window_schedule_reaches_the_forward_pass():
    m = randomize(GPT(tiny(n_layer=1, window_size=64, window_block=8, window_grow=True)))
    x = ids(64, B=1)
    m.set_train_progress(0, 100)
    early = m(x)
    assert m.window_tokens() == (8, 8)
    m.set_train_progress(100, 100)
    assert m.window_tokens() == (64, 32)
    late = m(x)
    assert torch.allclose(early[0, :8], late[0, :8], atol=1e-6)  # first block: same keys either way
    assert not torch.allclose(early[0, 8:], late[0, 8:], atol=1e-4)


def test_short_window_layers_use_half_the_window():
    kw = dict(n_layer=2, window_size=32, window_block=8, doc_causal=True)
    m = randomize(GPT(tiny(**kw, short_window_layers=[1])))
    m_long = same_weights(GPT(tiny(**kw)), m)
    x = with_bos(T=64, every=(3,))
    assert not torch.allclose(m(x), m_long(x), atol=1e-4)
    m_short = same_weights(GPT(tiny(**{**kw, "window_size": 16})), m)  # both layers at half the window
    m2 = same_weights(GPT(tiny(**kw, short_window_layers=[0, 1])), m)
    assert torch.allclose(m2(x), m_short(x), atol=1e-6)


def test_flex_attention_equals_the_sdpa_fallback():
    """FlexAttention's mask_mod (run unfused on CPU) and the dense SDPA mask give the same model output."""
    kw = dict(n_layer=2, doc_causal=True, window_size=32, window_block=8, short_window_layers=[1],
              attn_scale=0.12, block_size=128)
    dense = randomize(GPT(tiny(**kw, attn_impl=AttnImpl.sdpa)))
    flex = same_weights(GPT(tiny(**kw, attn_impl=AttnImpl.flex)), dense)
    x = with_bos(T=128, every=(0, 30, 31, 100))
    with torch.no_grad(), warnings.catch_warnings():  # CPU flex: forward only, unfused (warns once)
        warnings.simplefilter("ignore")
        out, ref = flex(x), dense(x)
    assert torch.allclose(out, ref, atol=1e-5)
    assert not math.isnan(out.sum().item())


def test_dense_mask_refuses_a_64k_sequence_with_a_clear_message():
    with pytest.raises(ValueError, match="65536-token sequences .* model.attn_impl=auto"):
        dense_mask(None, 65536, Window(7, 128), torch.device("cpu"))
