"""Heads and losses: the LM head's matmul (plain, bf16, or the records' FP8) and the records' loss.

Shapes: N = tokens (batch x sequence, flattened), C = model width (n_embd), V = padded vocabulary.

FP8 head: record 20 (2025-01-16, Sub3Min; the float8 op by @YouJiacheng), then records 29 (FA3), 43
(CautiousWD) and 46 (BatchSizeSchedule) with new constants; the op is the same text in 29, 43 and 46.
It runs in training only (every record's eval is the plain linear). With dequantization scales
(s_x, s_w, s_g), e4m3 = float8_e4m3fn and e5m2 = float8_e5m2:

    forward   x8 = e4m3(x / s_x) [N, C]     w8 = e4m3(w / s_w) [V, C]
              logits = bf16(s_x s_w * x8 @ w8^T)                [N, V]
    backward  g8 = e5m2(dlogits / s_g)                          [N, V]
              dx = bf16(s_g s_w * g8 @ w8)                      [N, C]
              dw = fp32(s_x s_g * g8^T @ x8)                    [V, C]  (autograd casts it to w's dtype)

Records 29-46: s_x = sqrt(C)/448 (an rms-normed row's largest possible entry, sqrt(C), lands on e4m3's
largest finite value), s_w = 2^-9, s_g = 1/448. Record 20 writes its scales as multipliers (x*2, w*32,
g*2^29); as dequantization scales they are 1/2, 1/32, 2^-29, powers of two, so its product equals our
quotient exactly (RECORD20_SCALES).

Each cast divides in fp32 and rounds once to float8. That is what the scripts' compiled kernels do (inductor
keeps the fp32 intermediate of a bf16 input: this torch's CPU inductor emits x / fp32(s) -> float8); an eager
bf16 division would round to bf16 first, which changes about 5% of the float8 values of N(0, 9) bf16 entries. This torch's casts: e4m3fn saturates at +-448 (inf
included), e5m2 overflows to +-inf from 61440 (its largest finite value is 57344).

The matmul: `torch._scaled_mm` with the scripts' arguments where it runs (a CUDA GPU with FP8, sm >= 8.9;
this torch's CPU kernel also takes float8), else an emulation: the same float8 tensors widened to fp32, an
fp32 matmul, times the product of the fp32 scales, rounded to the same output dtype. Both see the same
quantized operands and differ in the order of the fp32 accumulation (and this torch's CPU kernel scales the
operands before its matmul, cuBLASLt and the emulation scale the product: a difference of fp32 rounding). Like the scripts', the forward
and backward are custom ops (model_heads::fp8_mm, model_heads::fp8_mm_backward): torch.compile runs them as
they are, bit for bit the eager result.

Loss (model.loss_logits, and the caller's reduction): records 43 and 46 softcap the head's bf16 output in bf16
and take cross-entropy on those bf16 logits in training, on their fp32 copy at eval; records 20 and 29 cast
to fp32 before the softcap. Records 29-46 sum the token losses in training and average them at eval: the
caller passes reduction="sum" (GPT.forward's reduction; the trainer's train.loss_reduction).
"""
from __future__ import annotations

import math
import warnings
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from model.config import Fp8Impl, HeadMatmul, LossLogits, ModelConfig, SoftCap
from model.layers import algebraic_softcap

__all__ = ["Fp8Scales", "RECORD20_SCALES", "record29_scales", "quantize", "scaled_mm_available", "fp8_linear",
           "bf16_linear", "check_head_choice", "head_logits", "softcap", "capped_logits", "head_loss"]

E4M3, E5M2 = torch.float8_e4m3fn, torch.float8_e5m2


class Fp8Scales(NamedTuple):
    """Dequantization scales: a float8 value q stands for q * scale (x and w: e4m3, the logits' grad: e5m2)."""
    x: float
    w: float
    grad: float


RECORD20_SCALES = Fp8Scales(x=0.5, w=1 / 32, grad=2.0 ** -29)  # record 20's multipliers 2, 32, 2^29 inverted


def record29_scales(n_embd: int) -> Fp8Scales:
    """Records 29, 43, 46: x_s = sqrt(n_embd)/448, w_s = 2^-9, grad_s = 1/448."""
    return Fp8Scales(x=math.sqrt(n_embd) / 448, w=2.0 ** -9, grad=1 / 448)


def quantize(t: torch.Tensor, scale: float, dtype: torch.dtype) -> torch.Tensor:
    """float8 `dtype` of t / scale, divided in fp32 and rounded once (the scripts' compiled cast)."""
    return t.float().div(scale).to(dtype)


_CPU_SCALED_MM: list[bool] = []  # probed once: does this torch's CPU _scaled_mm take float8?


def scaled_mm_available(device: torch.device) -> bool:
    """True where torch._scaled_mm multiplies float8: a CUDA GPU of compute capability >= 8.9 (Ada, Hopper
    and later), or this torch's CPU kernel when it takes float8."""
    if device.type == "cuda":
        return torch.cuda.get_device_capability(device) >= (8, 9)
    if device.type != "cpu":
        return False
    if not _CPU_SCALED_MM:
        try:
            one = torch.ones(16, 16).to(E4M3)
            torch._scaled_mm(one, one.T, scale_a=torch.tensor(1.0), scale_b=torch.tensor(1.0), out_dtype=torch.float32)
            _CPU_SCALED_MM.append(True)
        except (RuntimeError, NotImplementedError):
            _CPU_SCALED_MM.append(False)
    return _CPU_SCALED_MM[0]


def _use_scaled_mm(impl: Fp8Impl, x: torch.Tensor, w: torch.Tensor) -> bool:
    shapes_ok = all(d % 16 == 0 for d in (*x.shape, w.size(0)))  # _scaled_mm's CUDA kernels need multiples of 16
    if impl is Fp8Impl.emulate:
        return False
    if impl is Fp8Impl.auto:
        return x.device.type == "cuda" and shapes_ok and scaled_mm_available(x.device)
    if not scaled_mm_available(x.device):
        raise RuntimeError(f"model.head_fp8_impl=scaled_mm: torch._scaled_mm cannot multiply float8 on {x.device} "
                           f"(CUDA needs compute capability >= 8.9); use auto or emulate")
    if x.device.type == "cuda" and not shapes_ok:
        raise RuntimeError(f"model.head_fp8_impl=scaled_mm needs tokens, n_embd and vocab rows divisible by 16 "
                           f"(got x {tuple(x.shape)}, w {tuple(w.shape)})")
    return True


def _emulated_mm(a8: torch.Tensor, b8: torch.Tensor, scale_a: float, scale_b: float,
                 out_dtype: torch.dtype) -> torch.Tensor:
    """out_dtype(scale_a scale_b * (a8 @ b8)): the float8 operands widened exactly to fp32, an fp32 matmul, the
    fp32 scales' product applied to the result, as cuBLASLt applies them to its accumulator. Float8 values
    fit bf16 and TF32 exactly, so a GPU matmul with TF32 on (train.py turns it on) multiplies them exactly."""
    scale = torch.tensor(scale_a, dtype=torch.float32) * torch.tensor(scale_b, dtype=torch.float32)
    return (a8.float() @ b8.float()).mul_(scale.to(a8.device)).to(out_dtype)


# Two custom ops, as the scripts register theirs: opaque to torch.compile, so a compiled model keeps the bf16
# rounding of the logits and of dx (inductor would drop a bf16 round trip it could see) and the fp32 division
# of each cast, and runs the same code as eager.
@torch.library.custom_op("model_heads::fp8_mm", mutates_args=())
def _fp8_mm(x: Tensor, w: Tensor, x_s: float, w_s: float, grad_s: float,
            scaled_mm: bool) -> tuple[Tensor, Tensor, Tensor]:
    """x [N, C], w [V, C] -> (bf16 logits [N, V], x8 [N, C], w8 [V, C]); grad_s is for the backward."""
    x8, w8 = quantize(x, x_s, E4M3), quantize(w, w_s, E4M3)
    if scaled_mm:
        out = torch._scaled_mm(x8, w8.T, out_dtype=torch.bfloat16, use_fast_accum=True,
                               scale_a=x.new_tensor(x_s, dtype=torch.float32),
                               scale_b=x.new_tensor(w_s, dtype=torch.float32))
    else:
        out = _emulated_mm(x8, w8.T, x_s, w_s, torch.bfloat16)
    return out, x8, w8


@_fp8_mm.register_fake
def _(x, w, x_s, w_s, grad_s, scaled_mm):
    return (x.new_empty(x.size(0), w.size(0), dtype=torch.bfloat16), x.new_empty(x.shape, dtype=E4M3),
            w.new_empty(w.shape, dtype=E4M3))


@torch.library.custom_op("model_heads::fp8_mm_backward", mutates_args=())
def _fp8_mm_backward(grad: Tensor, x8: Tensor, w8: Tensor, x_s: float, w_s: float, grad_s: float,
                     scaled_mm: bool) -> tuple[Tensor, Tensor]:
    """dlogits [N, V] -> (bf16 dx [N, C], fp32 dw [V, C], column-major as the scripts' .T)."""
    g8 = quantize(grad, grad_s, E5M2)
    if scaled_mm:
        def f32(v: float) -> Tensor:
            return grad.new_tensor(v, dtype=torch.float32)
        dx = torch._scaled_mm(g8, w8.T.contiguous().T, out_dtype=torch.bfloat16, use_fast_accum=False,
                              scale_a=f32(grad_s), scale_b=f32(w_s))
        dw = torch._scaled_mm(x8.T.contiguous(), g8.T.contiguous().T, out_dtype=torch.float32,
                              use_fast_accum=False, scale_a=f32(x_s), scale_b=f32(grad_s)).T
    else:
        dx = _emulated_mm(g8, w8, grad_s, w_s, torch.bfloat16)
        dw = _emulated_mm(x8.T, g8, x_s, grad_s, torch.float32).T
    return dx, dw


@_fp8_mm_backward.register_fake
def _(grad, x8, w8, x_s, w_s, grad_s, scaled_mm):
    return x8.new_empty(x8.shape, dtype=torch.bfloat16), w8.new_empty(w8.shape[::-1], dtype=torch.float32).T


def _setup_context(ctx, inputs, output) -> None:
    *_, x_s, w_s, grad_s, scaled_mm = inputs
    _, x8, w8 = output
    ctx.save_for_backward(x8, w8)  # one byte per entry, as the scripts keep them
    ctx.scales, ctx.scaled_mm = (x_s, w_s, grad_s), scaled_mm


def _backward(ctx, grad_out: Tensor, *_):
    x8, w8 = ctx.saved_tensors
    dx, dw = _fp8_mm_backward(grad_out.contiguous(), x8, w8, *ctx.scales, ctx.scaled_mm)
    return dx, dw, None, None, None, None


_fp8_mm.register_autograd(_backward, setup_context=_setup_context)


def fp8_linear(x: Tensor, w: Tensor, scales: Fp8Scales, impl: Fp8Impl = Fp8Impl.auto) -> Tensor:
    """The records' FP8 head: x [..., C], w [V, C] -> bf16 logits [..., V] (module docstring's formulas).
    Gradients: dx in bf16 and dw in fp32, which autograd casts to x's and w's dtypes."""
    flat = x.flatten(0, -2).contiguous()
    w = w.contiguous()
    out = _fp8_mm(flat, w, scales.x, scales.w, scales.grad, _use_scaled_mm(impl, flat, w))[0]
    return out.reshape(*x.shape[:-1], -1)


def bf16_linear(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """model.head_matmul=bf16: x [..., C] and w [V, C] rounded to bf16, a bf16 matmul -> bf16 [..., V]."""
    return F.linear(x.bfloat16(), w.bfloat16())


_WARNED: set[str] = set()


def check_head_choice(cfg: ModelConfig) -> None:
    """Called once per model construction: model.head_matmul=bf16 warns, once per process, in one line."""
    if cfg.head_matmul is HeadMatmul.bf16 and "bf16" not in _WARNED:
        _WARNED.add("bf16")
        warnings.warn("model.head_matmul=bf16 trains the LM head with a bf16 matmul where records 20-46 use FP8 "
                      "(scaled float8): this changes the ML relative to the record", UserWarning, stacklevel=2)


def head_logits(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, cfg: ModelConfig,
                training: bool) -> torch.Tensor:
    """The head's raw logits [..., V] from the final normed x [..., C]: model.head_matmul in training (fp8 and
    bf16 give bf16), F.linear with the weight cast to x's dtype otherwise (the scripts' eval head)."""
    if training and cfg.head_matmul is HeadMatmul.fp8:
        return fp8_linear(x, weight, Fp8Scales(*cfg.head_fp8_scales), cfg.head_fp8_impl)
    if training and cfg.head_matmul is HeadMatmul.bf16:
        return bf16_linear(x, weight)
    return F.linear(x, weight.type_as(x), None if bias is None else bias.type_as(x))


def softcap(z: torch.Tensor, cfg: ModelConfig) -> torch.Tensor:
    """model.softcap applied in z's dtype: tanh (record 9), sigmoid 30 * sigmoid(z / 7.5) (record 20 on),
    algebraic (track 3), or none."""
    if cfg.softcap is SoftCap.tanh:
        return cfg.softcap_scale * torch.tanh(z / cfg.softcap_div)
    if cfg.softcap is SoftCap.sigmoid:
        return cfg.softcap_scale * torch.sigmoid(z / cfg.softcap_div)
    if cfg.softcap is SoftCap.algebraic:
        return algebraic_softcap(z, cfg.softcap_scale, cfg.softcap_div)
    return z


def capped_logits(logits: torch.Tensor, cfg: ModelConfig, training: bool) -> torch.Tensor:
    """Softcapped logits [..., V] in the precision model.loss_logits names: fp32 (cast, then cap), or bf16
    (round to bf16, cap in bf16; kept bf16 in training, widened to fp32 after the cap otherwise)."""
    if cfg.loss_logits is LossLogits.bf16:
        z = softcap(logits.bfloat16(), cfg)
        return z if training else z.float()
    return softcap(logits.float(), cfg)


def head_loss(logits: torch.Tensor, targets: torch.Tensor, cfg: ModelConfig, training: bool,
              reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy (nats) of the raw head logits [..., V] against int64 targets [...], capped and in the
    precision model.loss_logits names (capped_logits): the mean over tokens, or their sum (reduction="sum",
    records 29-46 in training). A bf16 training loss (model.loss_logits=bf16) is a bf16 scalar, as in
    records 43 and 46."""
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum' (got {reduction!r})")
    z = capped_logits(logits, cfg, training)
    return F.cross_entropy(z.view(-1, z.size(-1)), targets.reshape(-1), reduction=reduction)
