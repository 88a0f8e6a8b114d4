"""Attention masks: which keys each query sees, for every backend (model/attention_backends.py).

One predicate, on positions q (query) and k (key) of one packed row, is what every backend computes:

    visible(q, k) = k <= q                                  causal
                and doc(q) == doc(k)                        when the row has documents
                and q // u - k // u <= left                 when there is a window (left >= 0, in units of u)

- u = 1, token-exact: FlashAttention-3's window_size=(left, 0) (records 29-46): query i sees key j iff
  j <= i and i - j <= left, i.e. left + 1 tokens counting itself; left = 0 sees only itself.
- u > 1, whole blocks: query block i sees key blocks i - left .. i (record 20, u = 128), which is what
  that record's hand-built FlexAttention BlockMask computes.
- model.window_size = W (q - k < W, record 12's FlexAttention mask `q_idx - kv_idx < 1024`) is left = W - 1
  in units of u = model.window_block or 1; records 29-46 pass left = bm_size = ws * 128 tokens directly.

Documents come in one of two layouts (`DocLayout`):
- rows [B, T] (records 12, 20): doc = cumsum(idx == bos) per row; a document starts *at* its bos token, so
  no query sees an earlier document; a row that starts mid-document has doc 0 until its first bos.
- packed: one row [1, T] with cu_seqlens, int32 [n + 1] document starts, first 0, last T; repeats are
  empty documents (records 29-46 pad cu_seqlens with T to a fixed count). doc(p) = #{i >= 1: cu[i] <= p}.

The diagonal is always visible, so no query row is fully masked (no NaN from an empty softmax).
`attend` runs one layer's attention given an `AttentionSpec` (backend + layout + window + the mask in that
backend's form, prepared once per forward by `build_masks` and shared by the layers with that window).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Union

import torch

from model.attention_backends import (HAS_COMPILE_KW, choose, compute_dtype, create_block_mask, run_fa3, run_flex,
                                      run_sdpa)
from model.config import AttnImpl, ModelConfig

DENSE_MASK_LIMIT = 2**30  # elements of an explicit [B, T, T] mask before we refuse (1 GiB of bools)
Left = Union[int, torch.Tensor]  # a window's left reach in units; an int tensor keeps a compiled graph


def document_ids(idx: torch.Tensor, bos_token: int) -> torch.Tensor:
    """idx [..., T] token ids -> [..., T] int32: the index of the document each position belongs to
    within its row. It increases at every `bos_token`, so two positions may attend to each other under
    document-causal attention iff their ids are equal; a row that starts mid-document (contiguous
    loading) has id 0 until its first `bos_token`."""
    return (idx == bos_token).cumsum(dim=-1, dtype=torch.int32)


def packed_document_ids(cu_seqlens: torch.Tensor, T: int) -> torch.Tensor:
    """cu_seqlens int32 [n + 1] (document starts, first 0, last T) -> [1, T] int32 document ids,
    doc(p) = the number of cu_seqlens[1:] entries <= p (empty documents never hold a position)."""
    pos = torch.arange(T, device=cu_seqlens.device, dtype=cu_seqlens.dtype)
    return torch.bucketize(pos, cu_seqlens[1:], right=True).to(torch.int32)[None]


def rows_cu_seqlens(docs: Optional[torch.Tensor], B: int, T: int, device: torch.device) -> torch.Tensor:
    """The B rows of T tokens flattened to one B*T sequence: int32 document starts + [B*T] (FA3's
    cu_seqlens). Every row starts a document; docs [B, T] (document ids) or None (one per row)."""
    if docs is None:
        return torch.arange(0, B * T + 1, T, dtype=torch.int32, device=device)
    flat = (docs.long() + torch.arange(B, device=device)[:, None] * (T + 1)).reshape(-1)  # distinct across rows
    start = torch.ones(B * T, dtype=torch.bool, device=device)
    start[1:] = flat[1:] != flat[:-1]
    ends = torch.full((1,), B * T, dtype=torch.long, device=device)
    return torch.cat([start.nonzero().flatten(), ends]).to(torch.int32)


@dataclass(frozen=True)
class DocLayout:
    """Where documents start in a batch of B rows of T tokens: `docs` [B, T] int32 ids (rows layout;
    None = one document per row) or `cu_seqlens` int32 [n + 1] for a single packed row (B = 1) whose
    longest document is at most `max_seqlen` tokens (FA3's scheduling bound; the records pass
    args.train_max_seq_len in training, the whole row in validation)."""

    B: int
    T: int
    docs: Optional[torch.Tensor] = None
    cu_seqlens: Optional[torch.Tensor] = None
    max_seqlen: Optional[int] = None

    @staticmethod
    def rows(idx: torch.Tensor, bos_token: Optional[int]) -> "DocLayout":
        """idx [B, T]; bos_token None: no documents (only causal / window masking)."""
        docs = document_ids(idx, bos_token) if bos_token is not None else None
        return DocLayout(idx.size(0), idx.size(1), docs=docs)

    @staticmethod
    def packed(cu_seqlens: torch.Tensor, T: int, max_seqlen: Optional[int] = None) -> "DocLayout":
        if cu_seqlens.dim() != 1:
            raise ValueError(f"cu_seqlens must be 1-D [n_docs + 1] (got shape {list(cu_seqlens.shape)})")
        return DocLayout(1, T, cu_seqlens=cu_seqlens.to(torch.int32), max_seqlen=max_seqlen or T)

    def document_ids(self) -> Optional[torch.Tensor]:
        """[B, T] int32 document ids in either layout (None: one document per row)."""
        if self.cu_seqlens is not None:
            return packed_document_ids(self.cu_seqlens, self.T)
        return self.docs

    def varlen(self, device: torch.device) -> tuple[torch.Tensor, int]:
        """(cu_seqlens int32, max_seqlen) over the B*T flattened tokens, as FA3 takes them."""
        if self.cu_seqlens is not None:
            return self.cu_seqlens, self.max_seqlen or self.T
        return rows_cu_seqlens(self.docs, self.B, self.T, device), self.T


@dataclass(frozen=True)
class Window:
    """left: how far back a query sees, in units of `unit` tokens (the predicate's q//u - k//u <= left)."""

    left: Left
    unit: int = 1

    @staticmethod
    def from_window_size(window: Left, unit: int = 1) -> "Window":
        """model.window_size's meaning, q // u - k // u < window (in units of u), as a Window: left = window - 1."""
        return Window(window - 1, unit)


def visible(q: torch.Tensor, k: torch.Tensor, docs_q: Optional[torch.Tensor], docs_k: Optional[torch.Tensor],
            window: Optional[Window]) -> torch.Tensor:
    """The predicate (module docstring) on broadcastable position / document-id tensors."""
    ok = q >= k
    if docs_q is not None:
        ok = ok & (docs_q == docs_k)
    if window is not None:
        u = window.unit
        ok = ok & ((q // u - k // u) <= window.left)
    return ok


def check_dense_mask_size(rows: int, T: int) -> None:
    """ValueError naming the fix when an explicit [rows, T, T] mask would exceed DENSE_MASK_LIMIT."""
    if rows * T * T > DENSE_MASK_LIMIT:
        raise ValueError(f"masked attention over {T}-token sequences needs a {rows} x {T} x {T} mask on the SDPA "
                         "path (model.doc_causal / model.window_size off CUDA): run on CUDA with model.attn_impl=auto "
                         "(FlexAttention or FA3), shorten train.seq_len, or add shrink=cpu (README: Speedrun records)")


def dense_mask(docs: Optional[torch.Tensor], T: int, window: Optional[Window], device: torch.device) -> torch.Tensor:
    """Boolean mask [B or 1, 1, T, T] (True = visible) for scaled_dot_product_attention; docs [B, T] or None."""
    check_dense_mask_size(docs.size(0) if docs is not None else 1, T)
    q = torch.arange(T, device=device)[:, None]
    k = torch.arange(T, device=device)[None, :]
    if docs is None:
        return visible(q, k, None, None, window)[None, None]
    return visible(q, k, docs[:, :, None], docs[:, None, :], window)[:, None]


def flex_block_mask(docs: Optional[torch.Tensor], B: int, T: int, window: Optional[Window], device: torch.device) -> Any:
    """FlexAttention BlockMask for the same predicate (docs: [B, T] or None)."""
    if docs is None:
        def mask_mod(b, h, q_idx, kv_idx):
            return visible(q_idx, kv_idx, None, None, window)
        batch = None
    else:
        def mask_mod(b, h, q_idx, kv_idx):
            return visible(q_idx, kv_idx, docs[b, q_idx], docs[b, kv_idx], window)
        batch = B
    # Outside torch.compile, build the mask with a compiled kernel: the eager path materializes T x T.
    kw = {"_compile": device.type == "cuda" and not torch.compiler.is_compiling()} if HAS_COMPILE_KW else {}
    return create_block_mask(mask_mod, batch, None, T, T, device=device, **kw)


def window_units(cfg: ModelConfig, step: int = 0, max_steps: int = 1) -> tuple[int, int]:
    """(long, short) window in units of `window_block` tokens (1 token when window_block = 0)
    at optimizer step `step` of `max_steps`; (0, 0) when there is no window. In model.window_size's
    meaning (q // u - k // u < window); `Window.from_window_size` turns one into the predicate's left.

    window_grow: the window is window_size * step / max_steps rounded up to whole units, at least
    one unit (record 20: next_multiple_of_n(1728 * step / steps, n=128) tokens), in exact integer
    arithmetic. Short-window layers get half the units, at least one.
    """
    if cfg.window_size <= 0:
        return 0, 0
    unit = cfg.window_block or 1
    if cfg.window_grow:
        step = min(max(step, 0), max_steps)
        long = -(-cfg.window_size * step // (max(max_steps, 1) * unit))  # ceil, exact
    else:
        long = -(-cfg.window_size // unit)
    long = max(1, long)
    return long, max(1, long // 2)


@dataclass(frozen=True)
class AttentionSpec:
    """One layer's attention, all a backend needs besides q, k, v and the scale. backend: sdpa | flex | fa3
    (resolved, never auto); layout None and window None: plain causal. mask: the predicate in the backend's
    form: a dense bool [B|1, 1, T, T] (sdpa; None = is_causal), a BlockMask (flex), or (cu_seqlens, max_seqlen)
    (fa3)."""

    backend: AttnImpl = AttnImpl.sdpa
    layout: Optional[DocLayout] = None
    window: Optional[Window] = None
    mask: Any = None


def prepare(backend: AttnImpl, layout: Optional[DocLayout], window: Optional[Window], device: torch.device) -> AttentionSpec:
    """The spec for a resolved backend (see attention_backends.choose): builds that backend's mask.
    fa3 needs a token-exact window whose left is a Python int (a tensor is read once here)."""
    if backend is AttnImpl.fa3:
        if window is not None and window.unit != 1:
            raise ValueError(f"model.attn_impl=fa3 cannot run here: FA3's window is token-exact; this one is whole "
                             f"blocks of {window.unit} tokens (model.window_block)")
        if window is not None and isinstance(window.left, torch.Tensor):
            window = Window(int(window.left), 1)
        if layout is None:
            raise ValueError("fa3 needs a DocLayout (the batch's rows or a packed cu_seqlens row)")
        return AttentionSpec(backend, layout, window, layout.varlen(device))
    if layout is None or (layout.docs is None and layout.cu_seqlens is None and window is None):
        return AttentionSpec(AttnImpl.sdpa, layout, None, None)  # plain causal: SDPA's is_causal kernel
    docs = layout.document_ids()
    if backend is AttnImpl.flex:
        return AttentionSpec(backend, layout, window, flex_block_mask(docs, layout.B, layout.T, window, device))
    return AttentionSpec(AttnImpl.sdpa, layout, window, dense_mask(docs, layout.T, window, device))


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, spec: AttentionSpec, scale: Optional[float]) -> torch.Tensor:
    """q, k, v: [B, T, H, D] -> [B, T, H, D], softmax(scale q k^T over the keys the predicate leaves
    visible) v, through spec.backend. scale None: 1 / sqrt(D)."""
    if spec.backend is AttnImpl.fa3:
        cu_seqlens, max_seqlen = spec.mask
        left = -1 if spec.window is None else spec.window.left
        return run_fa3(q, k, v, cu_seqlens, max_seqlen, left, scale)
    if spec.backend is AttnImpl.flex:
        return run_flex(q, k, v, spec.mask, scale)
    return run_sdpa(q, k, v, spec.mask, scale)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout: Optional[DocLayout], window: Optional[Window],
              scale: Optional[float], backend: AttnImpl = AttnImpl.auto) -> torch.Tensor:
    """The whole path in one call: [B, T, H, D] q, k, v, a document layout (None: plain causal), a window
    (None: none), the softmax scale and the backend (model.attn_impl's values; auto resolves for q's device
    and dtype) -> [B, T, H, D]. The model itself prepares each mask once per forward (`build_masks`)."""
    packed = layout is not None and layout.cu_seqlens is not None
    masked = packed or window is not None or (layout is not None and layout.docs is not None)
    chosen, _ = choose(backend, q.device, q.dtype, masked, window.unit if window is not None else 1, packed)
    if layout is None and chosen is AttnImpl.fa3:
        layout = DocLayout(q.size(0), q.size(1))
    return attend(q, k, v, prepare(chosen, layout, window, q.device), scale)


@dataclass
class AttentionMasks:
    """What every attention layer needs for one forward pass: the spec per window kind (long, short).
    The default is plain causal SDPA."""

    long: AttentionSpec = AttentionSpec()
    short: AttentionSpec = AttentionSpec()

    def for_layer(self, short: bool) -> AttentionSpec:
        return self.short if short else self.long


def choose_backend(cfg: ModelConfig, device: torch.device, dtype: Optional[torch.dtype] = None,
                   packed: bool = False) -> tuple[AttnImpl, str]:
    """The backend this model runs on `device` (attention_backends.choose) and why. dtype: attention's
    input dtype, by default the current autocast dtype on `device` or fp32; packed: the batches are
    packed cu_seqlens rows (records 29-46), the only ones auto gives to fa3."""
    dtype = dtype or compute_dtype(device)
    unit = (cfg.window_block or 1) if cfg.window_size > 0 else 1
    return choose(cfg.attn_impl, device, dtype, cfg.masked_attention or packed, unit, packed)


def build_masks(cfg: ModelConfig, idx: torch.Tensor, windows: Union[torch.Tensor, tuple[int, int], tuple[Window, Window]],
                cu_seqlens: Optional[torch.Tensor] = None, max_seqlen: Optional[int] = None) -> AttentionMasks:
    """Masks for input ids idx [B, T]; windows: (long, short) in model.window_size's units (window_units;
    a tensor keeps a compiled graph, fa3 reads it once as ints), or two Windows as they are (records 29-46:
    Window(ws * 128) tokens, FA3's left). cu_seqlens (int32 [n + 1]) with max_seqlen: idx is one packed
    row [1, T] of documents (records 29-46) instead of bos-delimited rows."""
    backend, _ = choose_backend(cfg, idx.device, packed=cu_seqlens is not None)
    if backend is AttnImpl.sdpa and not cfg.masked_attention and cu_seqlens is None:
        return AttentionMasks()
    B, T = idx.shape
    if cu_seqlens is not None:
        if B != 1:
            raise ValueError(f"a packed cu_seqlens batch is one row [1, T] (got {B} rows)")
        layout = DocLayout.packed(cu_seqlens, T, max_seqlen)
    else:
        layout = DocLayout.rows(idx, cfg.bos_token if cfg.doc_causal else None)
    unit = cfg.window_block or 1
    specs = []
    for i in (0, 1) if cfg.short_window_layers else (0,):
        if isinstance(windows[i], Window):
            window = windows[i]
        else:
            window = Window.from_window_size(windows[i], unit) if cfg.window_size > 0 else None
        specs.append(prepare(backend, layout, window, idx.device))
    return AttentionMasks(long=specs[0], short=specs[-1])


def attention_path(cfg: ModelConfig, device: torch.device, dtype: Optional[torch.dtype] = None,
                   packed: bool = False) -> str:
    """Which backend attention runs on `device`, why, and over which mask, in words (printed at start)."""
    backend, why = choose_backend(cfg, device, dtype, packed)
    what = "document-causal" if cfg.doc_causal else "causal"
    what += f", sliding window {cfg.window_size}" if cfg.window_size else ""
    note = "; on CPU unfused and forward-only" if backend is AttnImpl.flex and device.type != "cuda" else ""
    return f"{backend.value} ({why}; {what}{note})"


def check_start(cfg: ModelConfig, device: torch.device, micro_batch_seqs: int, seq_len: int,
                packed: bool = False) -> None:
    """At start, before any compute: refuse a backend that cannot run here (fa3 by name) or a dense
    mask that would not fit (ValueError naming the fix)."""
    backend, _ = choose_backend(cfg, device, packed=packed)
    if cfg.masked_attention and backend is AttnImpl.sdpa:
        check_dense_mask_size(micro_batch_seqs if cfg.doc_causal else 1, seq_len)
