"""model/heads.py against the records' own text: the FP8 ops of records 20, 29, 43 and 46 (their mm_op and
mm_backward_op bodies, run eagerly on this torch's CPU torch._scaled_mm, which takes float8: ours through
the same kernel bit for bit, our emulation within fp32 rounding), the head's
scales as each script constructs them, and the tail of each script's GPT.forward (softcap, logits precision,
cross-entropy reduction). Skipped without ../shared."""
from __future__ import annotations

import ast
import copy
import functools
import types
import warnings

import pytest
import torch
import torch.nn.functional as F

from model.config import Fp8Impl, LossLogits, ModelConfig, SoftCap
from model.heads import RECORD20_SCALES, Fp8Scales, fp8_linear, head_loss, record29_scales, scaled_mm_available
from tests.support.reference_scripts import REF_DIR

pytestmark = pytest.mark.skipif(not REF_DIR.exists(), reason="needs ../shared/reference/modded-nanogpt")

MODERN = ["record29_fa3", "record43_cautiouswd", "record46_batchsizeschedule"]
N, C, V = 32, 64, 96


@functools.lru_cache(maxsize=None)
def tree(script: str) -> ast.Module:
    """The script parsed (shared: callers copy what they edit)."""
    with warnings.catch_warnings():  # the scripts' docstrings hold escapes like '\s' (theirs, verbatim)
        warnings.simplefilter("ignore", SyntaxWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        return ast.parse((REF_DIR / f"{script}.py").read_text())


def top_function(script: str, name: str) -> ast.FunctionDef:
    return next(n for n in tree(script).body if isinstance(n, ast.FunctionDef) and n.name == name)


def script_ops(script: str) -> types.SimpleNamespace:
    """The script's mm_op and mm_backward_op as plain eager functions: the custom-op registration and the inner
    @torch.compile dropped, nothing else changed (bf16 stays bf16, the _scaled_mm calls are theirs)."""
    ns: dict = {"torch": torch, "Tensor": torch.Tensor}
    for name in ("mm_op", "mm_backward_op"):
        fn = copy.deepcopy(top_function(script, name))
        for node in ast.walk(fn):
            if isinstance(node, ast.FunctionDef):
                node.decorator_list = []
        exec(compile(ast.fix_missing_locations(ast.Module(body=[fn], type_ignores=[])), script, "exec"), ns)
    return types.SimpleNamespace(forward=ns["mm_op"], backward=ns["mm_backward_op"])


def test_the_fp8_ops_of_records_29_43_46_are_one_text():
    for name in ("mm_op", "mm_backward_op", "backward", "setup_context"):
        dumps = {ast.dump(top_function(s, name)) for s in MODERN}
        assert len(dumps) == 1, name


def head_scales(script: str, model_dim: int) -> Fp8Scales:
    """x_s, w_s, grad_s of the script's lm_head = CastedLinear(...), evaluated at model_dim."""
    call = next(n for n in ast.walk(tree(script)) if isinstance(n, ast.Call)
                and ast.unparse(n.func) == "CastedLinear" and any(k.arg == "x_s" for k in n.keywords))
    kw = {k.arg: eval(ast.unparse(k.value), {"model_dim": model_dim}) for k in call.keywords
          if k.arg in ("x_s", "w_s", "grad_s")}
    return Fp8Scales(kw["x_s"], kw["w_s"], kw["grad_s"])


@pytest.mark.parametrize("script", MODERN)
def test_the_scripts_head_scales(script):
    for model_dim in (768, C):
        assert head_scales(script, model_dim) == record29_scales(model_dim)
    assert ModelConfig(n_embd=768, n_head=6).head_fp8_scales == tuple(record29_scales(768))


def test_record20_scales_are_its_multipliers_inverted():
    call = next(n for n in ast.walk(top_function("record20_sub3min", "lm_head_fp8")) if isinstance(n, ast.Call)
                and ast.unparse(n.func) == "torch.ops.nanogpt.mm")
    kw = {k.arg: eval(ast.unparse(k.value), {}) for k in call.keywords}  # 2.0, 32.0, 2.0**29
    assert (1 / kw["x_s"], 1 / kw["w_s"], 1 / kw["grad_s"]) == tuple(RECORD20_SCALES)
    # record 20 multiplies where 29-46 divide; with powers of two the two casts agree exactly
    ops20 = script_ops("record20_sub3min")
    x = torch.randn(N, C) * 3
    assert torch.equal(ops20.forward(x, x, kw["x_s"], 1.0, 1.0)[1].float(), (x / RECORD20_SCALES.x).to(torch.float8_e4m3fn).float())


needs_cpu_fp8 = pytest.mark.skipif(not scaled_mm_available(torch.device("cpu")),
                                   reason="this torch's CPU _scaled_mm takes no float8")


def ours(x, w, dlogits, scales, impl):
    x, w = x.clone().requires_grad_(), w.clone().requires_grad_()
    out = fp8_linear(x, w, scales, impl)
    out.backward(dlogits)
    return out.detach(), x.grad, w.grad


@needs_cpu_fp8
@pytest.mark.parametrize("script,dtype", [("record29_fa3", torch.float32), ("record43_cautiouswd", torch.bfloat16),
                                          ("record46_batchsizeschedule", torch.bfloat16), ("record20_sub3min", torch.float32)])
def test_forward_and_backward_equal_the_scripts_ops(script, dtype):
    """Record 29's head weight is fp32 (only its embeddings are bf16), 43 and 46 store it in bf16. A bf16
    operand goes into the script's op widened to fp32: its compiled kernel divides in fp32 (model/heads.py)."""
    g = torch.Generator().manual_seed(0)
    x = F.rms_norm(torch.randn(N, C, generator=g), (C,)).to(dtype)
    w = (torch.randn(V, C, generator=g) * 0.05).to(dtype)
    dlogits = (torch.randn(N, V, generator=g) * 0.05).bfloat16()
    if script == "record20_sub3min":
        scales, theirs, dlogits = RECORD20_SCALES, (2.0, 32.0, 2.0 ** 29), dlogits * 2.0 ** -19
    else:
        scales = record29_scales(C)
        theirs = tuple(scales)
    ops = script_ops(script)
    out, x8, w8 = ops.forward(x.float(), w.float(), *theirs)
    dx, dw = ops.backward(dlogits.float(), x8, w8, *theirs)
    assert out.dtype == torch.bfloat16 and dx.dtype == torch.bfloat16 and dw.dtype == torch.float32
    o, gx, gw = ours(x, w, dlogits, scales, Fp8Impl.scaled_mm)  # the same kernel: bit for bit
    assert torch.equal(o, out) and torch.equal(gx, dx.to(dtype)) and torch.equal(gw, dw.to(dtype))
    # the emulation: the same float8 operands, the scales applied after the matmul (fp32 rounding apart)
    o, gx, gw = ours(x, w, dlogits, scales, Fp8Impl.emulate)
    for a, b in ((o, out), (gx, dx.to(dtype))):
        assert (a == b).float().mean() > 0.98 and float(((a.float() - b.float()).abs() /
                                                         b.float().abs().clamp_min(1e-30)).max()) <= 2 ** -7
    if dtype == torch.float32:  # dw stays fp32: apart by the fp32 sums' rounding, 2^-20 of the terms' magnitude
        size = dlogits.float().abs().T @ x.abs()
        assert bool(((gw - dw).abs() <= 2.0 ** -20 * size).all())
    else:  # a bf16 weight's grad: one bf16 rounding apart at most
        assert float(((gw.float() - dw.bfloat16().float()).abs() / dw.float().abs().clamp_min(1e-30)).max()) <= 2 ** -7


def forward_tail(script: str) -> list[ast.stmt]:
    """GPT.forward's statements from the head's `logits = ...` to `loss = ...`."""
    gpt = next(n for n in tree(script).body if isinstance(n, ast.ClassDef) and n.name == "GPT")
    body = next(n for n in gpt.body if isinstance(n, ast.FunctionDef) and n.name == "forward").body
    start = next(i for i, s in enumerate(body) if isinstance(s, ast.Assign) and "lm_head" in ast.unparse(s.value))
    stop = next(i for i, s in enumerate(body) if isinstance(s, ast.Assign) and ast.unparse(s.targets[0]) == "loss")
    return body[start:stop + 1]


class _RawHead:
    """Stands in for the script's lm_head: returns what it is given (the raw logits)."""
    weight = None

    def __call__(self, x):
        return x


def script_loss(script: str, raw: torch.Tensor, targets: torch.Tensor, training: bool) -> torch.Tensor:
    """The script's tail with its head replaced by the raw logits it would produce."""
    ns = {"torch": torch, "F": F, "x": raw, "target_seq": targets, "lm_head_fp8": lambda x, w: x,
          "self": types.SimpleNamespace(training=training, lm_head=_RawHead())}
    exec(compile(ast.Module(body=forward_tail(script), type_ignores=[]), script, "exec"), ns)
    return ns["loss"]


# model.loss_logits and the training reduction of each record (eval: the mean in all four)
LOSS = {"record20_sub3min": (LossLogits.fp32, "mean"), "record29_fa3": (LossLogits.fp32, "sum"),
        "record43_cautiouswd": (LossLogits.bf16, "sum"), "record46_batchsizeschedule": (LossLogits.bf16, "sum")}


@pytest.mark.parametrize("script", list(LOSS))
def test_loss_equals_the_scripts_forward_tail(script):
    logits_dtype, reduction = LOSS[script]
    cfg = ModelConfig(softcap=SoftCap.sigmoid, softcap_scale=30.0, softcap_div=7.5, loss_logits=logits_dtype)
    g = torch.Generator().manual_seed(1)
    raw = (torch.randn(N, V, generator=g) * 8).bfloat16()  # the records' head output: bf16 (FP8 or bf16 matmul)
    targets = torch.randint(0, V, (N,), generator=g)
    for training in (True, False):
        got = head_loss(raw, targets, cfg, training, reduction if training else "mean")
        theirs = script_loss(script, raw, targets, training)
        assert got.dtype == theirs.dtype and torch.equal(got, theirs), (script, training)
    # the choices differ from each other: each script's tail is matched by its own settings only
    other = ModelConfig(softcap=SoftCap.sigmoid, softcap_scale=30.0, softcap_div=7.5,
                        loss_logits=LossLogits.fp32 if logits_dtype is LossLogits.bf16 else LossLogits.bf16)
    assert not torch.equal(head_loss(raw, targets, other, True, reduction), script_loss(script, raw, targets, True))
    assert not torch.equal(head_loss(raw, targets, cfg, True, "sum" if reduction == "mean" else "mean"),
                           script_loss(script, raw, targets, True))
