"""model/heads.py: the FP8 head (emulated, and this torch's CPU torch._scaled_mm where it takes float8) against
the dequantize-then-multiply formula written out here, its saturation at the scales' edges, the bf16 head's
warning, the records' loss (bf16 logits, sum in training, mean at eval) and the config keys. The CUDA
_scaled_mm path runs only on an FP8 GPU. The scripts' own ops: tests/records/test_fp8_head_vs_scripts.py."""
from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F

from model import heads
from model.config import Fp8Impl, HeadMatmul, LossLogits, ModelConfig, SoftCap
from model.heads import (RECORD20_SCALES, Fp8Scales, bf16_linear, capped_logits, check_head_choice, fp8_linear,
                         head_logits, head_loss, quantize, record29_scales, scaled_mm_available)

E4M3, E5M2 = torch.float8_e4m3fn, torch.float8_e5m2
N, C, V = 32, 64, 96


def dequantized(t: torch.Tensor, scale: float, dtype: torch.dtype) -> torch.Tensor:
    """The independent formula: (t / s) in fp32 rounded to the float8 dtype, read back in float64, times s."""
    return (t.float() / scale).to(dtype).double() * scale


def inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = F.rms_norm(torch.randn(N, C, generator=g), (C,))  # the head's input: rms-normed rows
    w = torch.randn(V, C, generator=g) * 0.05
    dlogits = torch.randn(N, V, generator=g) * 0.05  # per-token grad of a summed loss through the softcap: |.| < 1
    return x, w, dlogits


def run(impl: Fp8Impl, x, w, dlogits, scales: Fp8Scales):
    x, w = x.clone().requires_grad_(), w.clone().requires_grad_()
    out = fp8_linear(x, w, scales, impl)
    out.backward(dlogits.to(out.dtype))
    return out, x.grad, w.grad


def bf16_ulps(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest |a - b| in units of b's bf16 spacing (2^-7 of b's power of two)."""
    spacing = torch.exp2(torch.floor(torch.log2(b.double().abs().clamp_min(1e-30))) - 7)
    return float(((a.double() - b.double()).abs() / spacing).max())


def one_bf16_rounding(a: torch.Tensor, want: torch.Tensor, magnitude: torch.Tensor) -> bool:
    """a is want rounded once to bf16 after an fp32 sum: |a - want| <= want's bf16 spacing plus the fp32 sum's
    error bound, 2^-20 times the sum of the terms' magnitudes (`magnitude`, same shape)."""
    spacing = torch.exp2(torch.floor(torch.log2(want.abs().clamp_min(1e-30))) - 7)
    return bool(((a.double() - want).abs() <= spacing + 2.0 ** -20 * magnitude).all())


# record 20's loss is a mean over 2^19 tokens: its logits' grads are ~2^-19 times a summed loss's (grad_s 2^-29)
@pytest.mark.parametrize("scales,grad_size", [(record29_scales(C), 1.0), (RECORD20_SCALES, 2.0 ** -19)],
                         ids=["record29", "record20"])
def test_emulated_forward_and_backward_match_the_dequantized_formula(scales, grad_size):
    x, w, dlogits = inputs()
    dlogits = dlogits * grad_size
    out, dx, dw = (t.detach() for t in run(Fp8Impl.emulate, x, w, dlogits, scales))
    xd, wd = dequantized(x, scales.x, E4M3), dequantized(w, scales.w, E4M3)
    gd = dequantized(dlogits.bfloat16().float(), scales.grad, E5M2)  # the grad reaches the op as bf16
    want_out, want_dx, want_dw = xd @ wd.T, gd @ wd, gd.T @ xd
    assert out.dtype == torch.bfloat16 and dx.dtype == torch.float32 and dw.dtype == torch.float32
    # out and dx: rounded once to bf16 from an fp32 sum (the formula sums in float64)
    assert one_bf16_rounding(out, want_out, xd.abs() @ wd.abs().T)
    assert one_bf16_rounding(dx, want_dx, gd.abs() @ wd.abs())
    assert (out.double() == want_out.bfloat16().double()).float().mean() > 0.99
    assert bool(((dw.double() - want_dw).abs() <= 2.0 ** -20 * (gd.abs().T @ xd.abs())).all())
    assert bool(out.isfinite().all() and dx.isfinite().all()) and float(out.abs().max()) > 0.1
    assert float(gd.abs().max()) > 0 and (gd != 0).float().mean() > 0.9  # the grad is not flushed to 0
    # and the quantization is real: the plain fp32 matmul differs by far more than rounding
    assert bf16_ulps(out, x.double() @ w.double().T) > 4


def test_gradients_flow_through_the_function_with_leading_dims():
    x, w, dlogits = inputs(1)
    scales = record29_scales(C)
    x3 = x.view(4, N // 4, C).clone().requires_grad_()
    wg = w.clone().requires_grad_()
    out = fp8_linear(x3, wg, scales, Fp8Impl.emulate)
    assert out.shape == (4, N // 4, V)
    (out.float() * dlogits.view(4, N // 4, V)).sum().backward()
    _, dx, dw = run(Fp8Impl.emulate, x, w, dlogits, scales)
    assert torch.equal(x3.grad.view(N, C), dx) and torch.equal(wg.grad, dw)
    # autograd casts the fp32 weight grad to a bf16 weight's dtype, as the scripts' bf16 head (records 43, 46)
    wb = w.bfloat16().requires_grad_()
    fp8_linear(x, wb, scales, Fp8Impl.emulate).backward(dlogits.bfloat16())
    assert wb.grad.dtype == torch.bfloat16 and torch.equal(wb.grad, dw.bfloat16())


@pytest.mark.skipif(not scaled_mm_available(torch.device("cpu")), reason="this torch's CPU _scaled_mm takes no float8")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_emulation_agrees_with_this_torchs_cpu_scaled_mm(dtype):
    """The same float8 operands: the kernel scales them before an fp32 matmul, the emulation scales the product,
    so they differ by fp32 rounding only (bf16 outputs: one rounding apart at most)."""
    x, w, dlogits = inputs(2)
    scales = record29_scales(C)
    emulated = [t.detach() for t in run(Fp8Impl.emulate, x.to(dtype), w.to(dtype), dlogits, scales)]
    kernel = [t.detach() for t in run(Fp8Impl.scaled_mm, x.to(dtype), w.to(dtype), dlogits, scales)]
    for a, b in zip(emulated, kernel):
        assert a.dtype == b.dtype
        assert bf16_ulps(a, b.double()) <= 1.0 and (a == b).float().mean() > (0.98 if a.dtype == torch.bfloat16 else 0)
    if dtype == torch.float32:  # an fp32 dw: within the fp32 sums' rounding (a bf16 one is rounded once more)
        dw_size = dlogits.abs().T @ x.abs()
        assert bool(((emulated[2].double() - kernel[2].double()).abs() <= 2.0 ** -20 * dw_size).all())


def test_quantize_divides_in_fp32_and_rounds_once():
    g = torch.Generator().manual_seed(3)
    x = (torch.randn(1 << 14, generator=g) * 3).bfloat16()
    s = record29_scales(768).x
    once = quantize(x, s, E4M3)
    assert torch.equal(once.float(), (x.double() / s).float().to(E4M3).float())
    twice = x.div(s).to(E4M3)  # eager bf16 division rounds to bf16 first: what the compiled scripts do not do
    frac = float((once.float() != twice.float()).float().mean())
    assert 0.02 < frac < 0.1, frac


def test_saturation_and_underflow_at_the_scales_edges():
    s = record29_scales(C)
    # x: an rms-normed one-hot row has the largest possible entry, sqrt(C); it lands on e4m3's 448, not past it
    onehot = F.rms_norm(torch.eye(C)[:1] + 0.0, (C,))
    assert math.isclose(float(onehot.max()), math.sqrt(C), rel_tol=1e-4)  # rms_norm's eps: just below
    assert float(quantize(onehot, s.x, E4M3).float().max()) == 448.0
    # e4m3fn saturates at +-448 (this torch's cast; inf included): twice the largest entry reads back as 448
    big = torch.tensor([2 * math.sqrt(C), -1e30, float("inf")])
    assert quantize(big, s.x, E4M3).float().tolist() == [448.0, -448.0, 448.0]
    # w: 448 * 2^-9 = 0.875 is the largest weight kept; the smallest nonzero is e4m3's 2^-9 times 2^-9
    w = torch.tensor([0.875, 1.5, 2.0 ** -18, 2.0 ** -19, 2.0 ** -19 * 1.01])
    assert (quantize(w, s.w, E4M3).double() * s.w).tolist() == [0.875, 0.875, 2.0 ** -18, 0.0, 2.0 ** -18]
    # grad: e5m2 has inf: a logits grad past 57344 * (1/448) = 128 overflows (the softcapped summed loss's
    # per-logit grad is below 1, so the records never get there); below 2^-16 / 448 / 2 it flushes to 0
    gd = quantize(torch.tensor([128.0, 137.0, -200.0, 2.0 ** -16 / 448, 2.0 ** -18 / 448]), s.grad, E5M2).float()
    assert gd.tolist() == [57344.0, 57344.0, -float("inf"), 2.0 ** -16, 0.0]
    x, w, _ = inputs(4)
    dlogits = torch.zeros(N, V)
    dlogits[0, 0] = 300.0
    _, dx, dw = run(Fp8Impl.emulate, x, w, dlogits, s)
    assert not bool(dx[0].isfinite().all()) and bool(dx[1:].isfinite().all()) and not bool(dw[0].isfinite().all())


@pytest.mark.skipif(not (torch.cuda.is_available() and scaled_mm_available(torch.device("cuda"))),
                    reason="needs a CUDA GPU with FP8 (sm >= 8.9)")
def test_cuda_kernel_and_emulation_against_the_formula(monkeypatch):
    """Both CUDA paths against the dequantized formula: the emulation as tightly as on CPU even with TF32 on
    (float8 operands are exact in TF32), the kernel with room for its fast-accumulation forward."""
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", True)
    x, w, dlogits = inputs(5)
    scales = record29_scales(C)
    xd, wd = dequantized(x, scales.x, E4M3), dequantized(w, scales.w, E4M3)
    gd = dequantized(dlogits.bfloat16().float(), scales.grad, E5M2)
    cuda = torch.device("cuda")
    kernel = [t.detach().cpu() for t in run(Fp8Impl.scaled_mm, x.to(cuda), w.to(cuda), dlogits.to(cuda), scales)]
    emulated = [t.detach().cpu() for t in run(Fp8Impl.emulate, x.to(cuda), w.to(cuda), dlogits.to(cuda), scales)]
    assert torch.equal(fp8_linear(x.to(cuda), w.to(cuda), scales, Fp8Impl.auto).cpu(), kernel[0])  # auto: the kernel
    sizes = (xd.abs() @ wd.abs().T, gd.abs() @ wd.abs(), gd.abs().T @ xd.abs())
    wants = (xd @ wd.T, gd @ wd, gd.T @ xd)
    for (out, dx, dw), slack in ((emulated, 2.0 ** -20), (kernel, 2.0 ** -10)):
        assert one_bf16_rounding(out, wants[0], sizes[0] * (slack / 2.0 ** -20))
        assert one_bf16_rounding(dx, wants[1], sizes[1])
        assert bool(((dw.double() - wants[2]).abs() <= 2.0 ** -20 * sizes[2]).all())
    assert bf16_ulps(kernel[0], x.double() @ w.double().T) > 4  # and the kernel did quantize


def test_impl_choice():
    x, w, _ = inputs()
    if not torch.cuda.is_available():  # auto emulates off CUDA, even where the CPU kernel takes float8
        assert heads._use_scaled_mm(Fp8Impl.auto, x, w) is False
    assert heads._use_scaled_mm(Fp8Impl.emulate, x, w) is False
    with pytest.raises(RuntimeError, match="model.head_fp8_impl=scaled_mm"):
        heads._use_scaled_mm(Fp8Impl.scaled_mm, x.to("meta"), w.to("meta"))


def cfg(**kw) -> ModelConfig:
    base = dict(n_embd=C, n_head=4, tie_embeddings=False, softcap=SoftCap.sigmoid, softcap_scale=30.0,
                softcap_div=7.5, bias=False)
    return ModelConfig(**{**base, **kw})


def test_bf16_head_warns_once_in_one_line(monkeypatch):
    monkeypatch.setattr(heads, "_WARNED", set())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_head_choice(cfg(head_matmul=HeadMatmul.fp8))
        check_head_choice(cfg())
        assert caught == []
        check_head_choice(cfg(head_matmul=HeadMatmul.bf16))
        check_head_choice(cfg(head_matmul=HeadMatmul.bf16))
    assert len(caught) == 1
    text = str(caught[0].message)
    assert "\n" not in text and "model.head_matmul=bf16" in text and "changes the ML" in text


def test_head_logits_per_choice_in_training_and_eval():
    x, w, _ = inputs(6)
    fp8 = cfg(head_matmul=HeadMatmul.fp8, head_fp8_impl=Fp8Impl.emulate)
    assert torch.equal(head_logits(x, w, None, fp8, training=True), fp8_linear(x, w, record29_scales(C), Fp8Impl.emulate))
    assert torch.equal(head_logits(x, w, None, fp8, training=False), F.linear(x, w))  # every record's eval: plain
    b16 = head_logits(x, w, None, cfg(head_matmul=HeadMatmul.bf16), training=True)
    assert b16.dtype == torch.bfloat16 and torch.equal(b16, bf16_linear(x, w))
    xb, wb = x.bfloat16().double(), w.bfloat16().double()
    assert one_bf16_rounding(b16, xb @ wb.T, xb.abs() @ wb.abs().T)
    # eval casts a bf16 weight to x's dtype (the scripts' F.linear(x, w.type_as(x)))
    assert torch.equal(head_logits(x, w.bfloat16(), None, cfg(), training=False), F.linear(x, w.bfloat16().float()))


def ce_by_definition(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Per-token -log softmax(z)[t] in float64."""
    z = z.double()
    return torch.logsumexp(z, -1) - z.gather(-1, t[:, None])[:, 0]


def test_loss_reductions_and_logits_precision():
    x, w, _ = inputs(7)
    raw = (x @ w.T) * 20  # spread logits: the cap and the bf16 rounding matter
    t = torch.randint(0, V, (N,), generator=torch.Generator().manual_seed(8))
    cap = lambda z: 30 * torch.sigmoid(z / 7.5)  # noqa: E731
    per_token32 = ce_by_definition(cap(raw.double()), t)
    # fp32 logits: the mean, or the sum (records 29-46 in training)
    torch.testing.assert_close(head_loss(raw, t, cfg(), True).double(), per_token32.mean(), rtol=1e-6, atol=0)
    torch.testing.assert_close(head_loss(raw, t, cfg(), True, "sum").double(), per_token32.sum(), rtol=1e-6, atol=0)
    torch.testing.assert_close(head_loss(raw, t, cfg(), False).double(), per_token32.mean(), rtol=1e-6, atol=0)
    with pytest.raises(ValueError, match="reduction must be 'mean' or 'sum'"):
        head_loss(raw, t, cfg(), True, "none")
    # bf16 logits (records 43, 46): capped in bf16; training keeps bf16 (a bf16 loss), eval widens after the cap
    b16 = cfg(loss_logits=LossLogits.bf16)
    capped16 = cap(raw.bfloat16())
    assert capped16.dtype == torch.bfloat16
    train, val = head_loss(raw, t, b16, True, "sum"), head_loss(raw, t, b16, False)
    assert train.dtype == torch.bfloat16 and val.dtype == torch.float32
    want_train = ce_by_definition(capped16, t).sum()
    assert abs(float(train) - float(want_train)) <= float(want_train) * 2 ** -7  # the bf16 loss: one bf16 rounding
    torch.testing.assert_close(val.double(), ce_by_definition(capped16, t).mean(), rtol=1e-6, atol=0)
    assert abs(float(val) - float(per_token32.mean())) > 1e-4  # the bf16 cap is visible at eval
    assert torch.equal(capped_logits(raw, b16, training=False), capped16.float())
    assert torch.equal(capped_logits(raw, b16, training=True), capped16)


def test_config_keys():
    assert cfg().head_fp8_scales == tuple(record29_scales(C))
    assert cfg(head_fp8_x_scale=0.5, head_fp8_w_scale=1 / 32, head_fp8_grad_scale=2.0 ** -29).head_fp8_scales == \
        tuple(RECORD20_SCALES)
    defaults = ModelConfig()
    assert (defaults.head_matmul, defaults.head_fp8_impl, defaults.loss_logits) == \
        (HeadMatmul.linear, Fp8Impl.auto, LossLogits.fp32)
    for key, bad in (("head_fp8_x_scale", 0.0), ("head_fp8_w_scale", -1.0), ("head_fp8_grad_scale", float("inf"))):
        with pytest.raises(ValueError, match=f"model.{key} must be a finite number > 0"):
            cfg(**{key: bad}).check()
    with pytest.raises(ValueError, match="model.head_matmul=fp8 has no bias term"):
        cfg(head_matmul=HeadMatmul.fp8, head_bias=True).check()
    cfg(head_matmul=HeadMatmul.fp8).check()


def test_keys_compose_from_the_command_line():
    from harness.config.compose import compose_config
    m = compose_config("model.tie_embeddings=false", "model.head_matmul=fp8", "model.head_fp8_impl=emulate",
                       "model.loss_logits=bf16").model
    assert (m.head_matmul, m.head_fp8_impl, m.loss_logits) == (HeadMatmul.fp8, Fp8Impl.emulate, LossLogits.bf16)
    with pytest.raises(Exception, match="model.head_fp8_grad_scale must be a finite number > 0"):
        compose_config("model.head_fp8_grad_scale=0")
