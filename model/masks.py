"""Attention masks: causal, document-causal, sliding window, and the window schedule.

One predicate defines which keys a query may see (q, k are positions in a packed row):

    allowed(q, k) = k <= q                                   (causal)
                and doc[q] == doc[k]                         (doc_causal: doc = cumsum(idx == bos))
                and q // u - k // u < window_units           (window > 0; u = window_block or 1)

With u = 1 the window is token-exact (record 12: q - k < 1024). With u = 128 it is whole
blocks (record 20): query block i sees key blocks i - w/u + 1 .. i, which is what the record's
hand-built FlexAttention BlockMask computes. A document starts *at* its bos token (the bos
belongs to the new document), so no query ever sees a token of an earlier document.

The same predicate is evaluated two ways, chosen by model.attn_impl:
- FlexAttention (`flex_block_mask`): a mask_mod over block-sparse tiles; fast on CUDA.
- SDPA with an explicit boolean mask [B, 1, T, T] (`dense_mask`): exact, O(T^2) memory; the CPU path.
The diagonal is always allowed, so no query row is fully masked (no NaN from an empty softmax).
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Optional

import torch

from model.config import AttnImpl, ModelConfig

try:  # FlexAttention: torch >= 2.5 (the CPU fallback does not need it)
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention
    _HAS_COMPILE_KW = "_compile" in inspect.signature(create_block_mask).parameters
except ImportError:  # pragma: no cover
    create_block_mask = flex_attention = None
    _HAS_COMPILE_KW = False

DENSE_MASK_LIMIT = 2**30  # elements of an explicit [B, T, T] mask before we refuse (1 GiB of bools)


def document_ids(idx: torch.Tensor, bos_token: int) -> torch.Tensor:
    """idx [..., T] token ids -> [..., T] int32: the index of the document each position belongs to
    within its row. It increases at every `bos_token`, so two positions may attend to each other under
    document-causal attention iff their ids are equal; a row that starts mid-document (contiguous
    loading) has id 0 until its first `bos_token`."""
    return (idx == bos_token).cumsum(dim=-1, dtype=torch.int32)


def window_units(cfg: ModelConfig, step: int = 0, max_steps: int = 1) -> tuple[int, int]:
    """(long, short) window in units of `window_block` tokens (1 token when window_block = 0)
    at optimizer step `step` of `max_steps`; (0, 0) when there is no window.

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


def allowed(q: torch.Tensor, k: torch.Tensor, docs_q: Optional[torch.Tensor], docs_k: Optional[torch.Tensor],
            window: Optional[torch.Tensor], unit: int) -> torch.Tensor:
    """The mask predicate on broadcastable index tensors (see module docstring)."""
    ok = q >= k
    if docs_q is not None:
        ok = ok & (docs_q == docs_k)
    if window is not None:
        ok = ok & ((q // unit - k // unit) < window)
    return ok


def check_dense_mask_size(rows: int, T: int) -> None:
    """ValueError naming the fix when an explicit [rows, T, T] mask would exceed DENSE_MASK_LIMIT."""
    if rows * T * T > DENSE_MASK_LIMIT:
        raise ValueError(f"masked attention over {T}-token sequences needs a {rows} x {T} x {T} mask on the SDPA "
                         "path (model.doc_causal / model.window_size off CUDA): run on CUDA with model.attn_impl=auto "
                         "(FlexAttention), shorten train.seq_len, or add shrink=cpu (README: Speedrun records)")


def dense_mask(docs: Optional[torch.Tensor], T: int, window: Optional[torch.Tensor], unit: int,
               device: torch.device) -> torch.Tensor:
    """Boolean mask [B or 1, 1, T, T] (True = may attend) for scaled_dot_product_attention."""
    check_dense_mask_size(docs.size(0) if docs is not None else 1, T)
    q = torch.arange(T, device=device)[:, None]
    k = torch.arange(T, device=device)[None, :]
    if docs is None:
        return allowed(q, k, None, None, window, unit)[None, None]
    return allowed(q, k, docs[:, :, None], docs[:, None, :], window, unit)[:, None]


def flex_block_mask(docs: Optional[torch.Tensor], B: int, T: int, window: Optional[torch.Tensor], unit: int,
                    device: torch.device) -> Any:
    """FlexAttention BlockMask for the same predicate (docs: [B, T] or None)."""
    if docs is None:
        def mask_mod(b, h, q_idx, kv_idx):
            return allowed(q_idx, kv_idx, None, None, window, unit)
        batch = None
    else:
        def mask_mod(b, h, q_idx, kv_idx):
            return allowed(q_idx, kv_idx, docs[b, q_idx], docs[b, kv_idx], window, unit)
        batch = B
    # Outside torch.compile, build the mask with a compiled kernel: the eager path materializes T x T.
    kw = {"_compile": device.type == "cuda" and not torch.compiler.is_compiling()} if _HAS_COMPILE_KW else {}
    return create_block_mask(mask_mod, batch, None, T, T, device=device, **kw)


@dataclass
class AttentionMasks:
    """What every attention layer needs for one forward pass: per window kind ('long', 'short'),
    None (plain causal: SDPA's is_causal fast path), a dense bool mask, or a FlexAttention BlockMask."""

    long: Any = None
    short: Any = None
    use_flex: bool = False

    def for_layer(self, short: bool) -> Any:
        return self.short if short else self.long


def use_flex(cfg: ModelConfig, device: torch.device) -> bool:
    if not cfg.masked_attention or cfg.attn_impl is AttnImpl.sdpa or flex_attention is None:
        return False
    return cfg.attn_impl is AttnImpl.flex or device.type == "cuda"


def attention_path(cfg: ModelConfig, device: torch.device) -> str:
    """Which kernel attention runs on `device`, in words (printed at start)."""
    if not cfg.masked_attention:
        return "SDPA, plain causal (is_causal)"
    what = "document-causal" if cfg.doc_causal else "causal"
    what += f", sliding window {cfg.window_size}" if cfg.window_size else ""
    if use_flex(cfg, device):
        return f"FlexAttention ({what})" + ("; on CPU unfused and slow" if device.type != "cuda" else "")
    return f"SDPA with an explicit [B, 1, T, T] mask ({what}; model.attn_impl={cfg.attn_impl.value} on {device.type})"


def check_start(cfg: ModelConfig, device: torch.device, micro_batch_seqs: int, seq_len: int) -> None:
    """At start, before any compute: refuse a dense mask that would not fit (ValueError naming the fix)."""
    if cfg.masked_attention and not use_flex(cfg, device):
        check_dense_mask_size(micro_batch_seqs if cfg.doc_causal else 1, seq_len)


def build_masks(cfg: ModelConfig, idx: torch.Tensor, windows: torch.Tensor) -> AttentionMasks:
    """Masks for input ids idx [B, T]; windows: int tensor [2] = (long, short) window units."""
    if not cfg.masked_attention:
        return AttentionMasks()
    B, T = idx.shape
    docs = document_ids(idx, cfg.bos_token) if cfg.doc_causal else None
    unit = cfg.window_block or 1
    flex = use_flex(cfg, idx.device)
    masks = []
    for i in (0, 1) if cfg.short_window_layers else (0,):
        w = windows[i] if cfg.window_size > 0 else None
        masks.append(flex_block_mask(docs, B, T, w, unit, idx.device) if flex
                     else dense_mask(docs, T, w, unit, idx.device))
    return AttentionMasks(long=masks[0], short=masks[-1], use_flex=flex)


_compiled_flex = None


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Any, use_flex_path: bool,
           scale: Optional[float]) -> torch.Tensor:
    """q, k, v: [B, H, T, D] -> [B, H, T, D]. mask: None (causal), bool [B|1, 1, T, T], or a BlockMask."""
    if mask is None:
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale)
    if not use_flex_path:
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    global _compiled_flex
    if q.is_cuda and not torch.compiler.is_compiling():
        # Eager flex_attention is an unfused reference implementation; compile it once.
        _compiled_flex = _compiled_flex or torch.compile(flex_attention, dynamic=False)
        return _compiled_flex(q, k, v, block_mask=mask, scale=scale)
    return flex_attention(q, k, v, block_mask=mask, scale=scale)
