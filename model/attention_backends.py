"""The attention kernels behind model.attn_impl, and how `auto` picks one.

Every kernel computes the same thing, softmax(scale q k^T over the visible keys) v, for the one
visibility predicate of model/masks.py; they differ only in how that predicate reaches them:

- sdpa: torch's scaled_dot_product_attention with a dense boolean mask [B|1, 1, T, T] (or its
  is_causal fast path for plain causal attention). Exact on any device; O(T^2) memory. The CPU reference.
- flex: FlexAttention (record 12 on) with a BlockMask built from the predicate. Fused and block-sparse on
  CUDA; on CPU torch runs it unfused and forward-only ("FlexAttention does not support backward on CPU").
- fa3: FlashAttention-3's `flash_attn_varlen_func` (records 29-46) over the tokens flattened to
  [B*T, H, D] with int32 `cu_seqlens` document starts and `window_size=(left, 0)`. It takes only
  token-exact windows (unit 1), half precision, and (as built for the records) a Hopper GPU.
  `flash_attn_interface` is imported lazily, on first use.

`choose` turns the configured value into one of those three, with the reason in words:
auto = fa3 when it is importable and applicable (a packed cu_seqlens row, token-exact window, CUDA sm90,
bf16/fp16 compute), else flex on CUDA, else sdpa. Plain causal attention (no documents, no window) runs
SDPA's is_causal kernel unless fa3 is asked for by name.

Shapes: q, k, v and the outputs are [B, T, H, D] (batch, tokens, heads, head dim) throughout.
"""
from __future__ import annotations

import importlib
import inspect
from types import ModuleType
from typing import Any, Optional

import torch
import torch.nn.functional as F

from model.config import AttnImpl

try:  # FlexAttention: torch >= 2.5 (sdpa does not need it)
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention
    HAS_COMPILE_KW = "_compile" in inspect.signature(create_block_mask).parameters
except ImportError:  # pragma: no cover
    create_block_mask = flex_attention = None
    HAS_COMPILE_KW = False

FA3_MODULE = "flash_attn_interface"  # FlashAttention-3's Python package (record 29 imports it by this name)
HALF = (torch.bfloat16, torch.float16)


_fa3: Any = None  # flash_attn_interface once looked up (False: not importable); a plain global, not
_capability: dict = {}  # functools.lru_cache, so that torch.compile reads it instead of tracing an import


def fa3_module() -> Optional[ModuleType]:
    """`flash_attn_interface`, or None when it cannot be imported (looked up on first use, once per
    process; `forget_fa3()` looks again)."""
    global _fa3
    if _fa3 is None:
        try:
            _fa3 = importlib.import_module(FA3_MODULE)
        except ImportError:
            _fa3 = False
    return _fa3 or None


def forget_fa3() -> None:
    global _fa3
    _fa3 = None


def cuda_capability(device: torch.device) -> tuple[int, int]:
    """(major, minor) of `device`'s GPU, asked once per device."""
    key = device.index if device.index is not None else torch.cuda.current_device()
    if key not in _capability:
        _capability[key] = tuple(torch.cuda.get_device_capability(key))
    return _capability[key]


def fa3_blocker(device: torch.device, dtype: torch.dtype, unit: int, auto: bool) -> Optional[str]:
    """Why fa3 cannot run here (None: it can). `unit`: the window's unit in tokens (1 = token-exact).
    `auto` adds the check auto makes before choosing it (a Hopper GPU, the one FA3 is built for);
    asked for by name, fa3 is tried on any CUDA GPU and FA3 itself says if it does not run there."""
    if unit != 1:
        return (f"FA3's window_size=(left, 0) is token-exact; this window is whole blocks of {unit} tokens "
                "(model.window_block, record 20)")
    if device.type != "cuda":
        return f"FA3 runs on CUDA only (device {device.type})"
    if dtype not in HALF:
        return f"FA3 takes bf16/fp16 inputs (compute dtype {str(dtype).replace('torch.', '')}; train.precision)"
    if fa3_module() is None:
        return f"{FA3_MODULE} is not importable"
    if auto:
        if not torch.cuda.is_available():
            return "no CUDA device is visible to check for Hopper (sm90)"
        major, minor = cuda_capability(device)
        if major != 9:
            return f"FA3 is built for Hopper (sm90); this GPU is sm{major}{minor}"
    return None


def choose(impl: AttnImpl, device: torch.device, dtype: torch.dtype, masked: bool, unit: int,
           packed: bool = False) -> tuple[AttnImpl, str]:
    """The backend that runs (sdpa | flex | fa3, never auto) and why, in words.

    impl: model.attn_impl; dtype: the compute dtype of q, k, v (the autocast dtype under autocast);
    masked: documents or a window are in play (model.masked_attention, or a packed row); unit: the
    window's unit in tokens (model.window_block or 1); packed: the batch is one cu_seqlens row (records
    29-46). auto gives fa3 only to packed rows: bos-delimited rows (records 12, 20) keep the FlexAttention
    kernel their scripts ran (fa3 by name runs them too). Raises ValueError naming model.attn_impl when
    fa3 is asked for by name and cannot run (e.g. record 20's block-wise window)."""
    if impl is AttnImpl.fa3:
        why = fa3_blocker(device, dtype, unit, auto=False)
        if why:
            raise ValueError(f"model.attn_impl=fa3 cannot run here: {why}; use model.attn_impl=auto, flex or sdpa")
        return AttnImpl.fa3, "model.attn_impl=fa3"
    if not masked:
        return AttnImpl.sdpa, "plain causal attention: SDPA's is_causal kernel"
    if impl is AttnImpl.sdpa:
        return AttnImpl.sdpa, "model.attn_impl=sdpa"
    if impl is AttnImpl.flex:
        if flex_attention is None:
            raise ValueError("model.attn_impl=flex needs FlexAttention (torch >= 2.5); use model.attn_impl=sdpa")
        return AttnImpl.flex, "model.attn_impl=flex"
    if device.type != "cuda" or flex_attention is None:
        return AttnImpl.sdpa, f"auto: on {device.type}, SDPA with a dense mask"
    why = fa3_blocker(device, dtype, unit, auto=True) if packed else "bos-delimited rows keep FlexAttention"
    if why is None:
        return AttnImpl.fa3, f"auto: {FA3_MODULE} importable, CUDA sm90, {str(dtype).replace('torch.', '')}"
    return AttnImpl.flex, f"auto: on CUDA; not fa3: {why}"


def compute_dtype(device: torch.device) -> torch.dtype:
    """The dtype attention's inputs have on `device` in the current context: the autocast dtype
    when autocast is on there, else fp32 (the model keeps fp32 activations outside autocast)."""
    if torch.is_autocast_enabled(device.type):
        return torch.get_autocast_dtype(device.type)
    return torch.float32


def run_sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Optional[torch.Tensor],
             scale: Optional[float]) -> torch.Tensor:
    """[B, T, H, D] -> [B, T, H, D]. mask: bool [B|1, 1, T, T] (True = visible), or None for plain causal."""
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))
    if mask is None:
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale)
    else:
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    return y.transpose(1, 2)


_compiled_flex = None


def run_flex(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_mask: Any, scale: Optional[float]) -> torch.Tensor:
    """[B, T, H, D] -> [B, T, H, D] through FlexAttention with a BlockMask (model/masks.py)."""
    global _compiled_flex
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))
    if q.is_cuda and not torch.compiler.is_compiling():
        # Eager flex_attention is an unfused reference implementation; compile it once.
        _compiled_flex = _compiled_flex or torch.compile(flex_attention, dynamic=False)
        y = _compiled_flex(q, k, v, block_mask=block_mask, scale=scale)
    else:
        y = flex_attention(q, k, v, block_mask=block_mask, scale=scale)
    return y.transpose(1, 2)


def run_fa3(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor, max_seqlen: int,
            left: int, scale: Optional[float]) -> torch.Tensor:
    """[B, T, H, D] -> [B, T, H, D] through FA3's varlen kernel, as records 29-46 call it: the B*T tokens
    as one [B*T, H, D] sequence cut into documents by cu_seqlens (int32 [n + 1], starts, last = B*T;
    empty documents allowed), causal=True, window_size=(left, 0) (left = -1: no window), softmax_scale
    = scale (None: 1/sqrt(D), SDPA's default). max_seqlen: an upper bound on a document's length."""
    fa3 = fa3_module()
    if fa3 is None:
        raise ValueError(f"model.attn_impl=fa3 cannot run here: {FA3_MODULE} is not importable")
    B, T, H, D = q.shape
    flat = [t.reshape(B * T, H, D) for t in (q, k, v)]
    y = fa3.flash_attn_varlen_func(*flat, cu_seqlens_q=cu_seqlens, cu_seqlens_k=cu_seqlens,
                                   max_seqlen_q=max_seqlen, max_seqlen_k=max_seqlen, causal=True,
                                   softmax_scale=scale if scale is not None else D ** -0.5,
                                   window_size=(left, 0))
    if isinstance(y, tuple):  # some FA3 builds return (out, softmax_lse)
        y = y[0]
    return y.view(B, T, H, D)
