"""Load the speedrun records' own scripts (../shared/reference/modded-nanogpt) for equivalence tests.

The scripts train at import time, on CUDA, under torchrun, so they cannot be imported. `load`
parses one with `ast` and executes only its imports, function and class definitions (and the
module-level table `zeropower_backends`), after these source edits, which make it run on CPU in
fp32 without changing its math:

- every `.bfloat16()` call is dropped and `torch.bfloat16` reads `torch.float32` (bf16 Newton-Schulz,
  bf16 rotary caches, bf16 update buffers: rounding, not math; the GPU path of our configs keeps
  bf16 where the records had it, see each experiment file);
- `.cuda()` is dropped, the string "cuda" reads "cpu", `pin_memory=True` reads False;
- `@torch.compile` decorators are dropped; record 20's FP8 custom ops are not registered;
- optional integer constants are replaced inside one function and those nested in it (`constants`):
  the hard-coded <|endoftext|> id 50256 of a shrunk vocabulary, a shrunk attention window.

After the exec, these names of the script's namespace are replaced (the scripts look them up at
call time):
- `dist`: a one-process stand-in (all_reduce is the identity, all_gather copies);
- `os.environ`: WORLD_SIZE=1, RANK=0;
- `flex_attention`: the same attention through `scaled_dot_product_attention` with the BlockMask
  materialized as a dense boolean mask (partial blocks through its mask_mod, full blocks all
  visible). FlexAttention computes softmax(scale q k^T) v over exactly those keys, so this is
  the reference math; its CPU kernel has no backward, and we need gradients;
- `create_block_mask`: torch's, built eagerly on CPU (no `_compile`);
- `lm_head_fp8`: the plain matmul x w^T it approximates in float8 (record 20's training head).

Records 29 on (FlashAttention-3, Triton kernels, the FP8 head) need more, and get it only where the
script has the name:
- `import triton`, `triton.language` and `kernels` (none is importable on CPU) are not executed: the
  names are bound to a permissive stand-in, so the Triton kernels' decorators and annotations evaluate
  (the kernels themselves are never called: `XXT` / `ba_plus_cAA` (record 29: `ns_line_1` / `ns_line_2`),
  the Newton-Schulz steps' launchers, are replaced by their torch formulas, `triton_ns_reference`);
- `BOS_ID` and `polar_express_coeffs` (module-level constants the functions read) are kept;
- FlashAttention-3's `flash_attn_varlen_func` (record 29 imports it, 43 and 46 get it through
  `flash_attn_interface`) is `fa3_varlen_reference`: a per-document causal softmax with FA3's window
  rule, looped in plain torch (checked against a hand-built dense mask in tests/records);
- `DISABLE_FP8=1` in the stand-in environment: the scripts' head is then `F.linear`, the math their
  float8 matmul approximates (tests of our FP8 head compare against the script's `mm_op` formulas).

`top_level` and `loop_statements` run chosen statements of the script's main code (its
optimizer construction, lr schedule, momentum warmup, window schedule) in that namespace.
"""
from __future__ import annotations

import ast
import itertools
import sys
import types
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention.flex_attention import create_block_mask as _torch_create_block_mask

REF_DIR = Path(__file__).resolve().parents[3] / "shared" / "reference" / "modded-nanogpt"
_counter = itertools.count()


class _CpuFp32(ast.NodeTransformer):
    def __init__(self, constants: dict[int, int], within: str | None):
        self.constants, self.within, self.scope = constants, within, []

    def visit_FunctionDef(self, node):
        node.decorator_list = [d for d in node.decorator_list if "torch.compile" not in ast.unparse(d)]
        self.scope.append(node.name)
        self.generic_visit(node)
        self.scope.pop()
        return node

    def visit_ClassDef(self, node):
        self.scope.append(node.name)
        self.generic_visit(node)
        self.scope.pop()
        return node

    def visit_Call(self, node):
        self.generic_visit(node)
        f = node.func
        if isinstance(f, ast.Attribute) and f.attr in ("bfloat16", "cuda") and not node.args and not node.keywords:
            return f.value
        if isinstance(f, ast.Attribute) and f.attr == "cuda":  # .cuda(non_blocking=True)
            return f.value
        for kw in node.keywords:
            if kw.arg == "pin_memory":
                kw.value = ast.Constant(False)
        return node

    def visit_Attribute(self, node):
        self.generic_visit(node)
        if node.attr == "bfloat16" and isinstance(node.value, ast.Name) and node.value.id == "torch":
            return ast.copy_location(ast.Attribute(value=node.value, attr="float32", ctx=node.ctx), node)
        return node

    def visit_Constant(self, node):
        if node.value == "cuda":
            return ast.copy_location(ast.Constant("cpu"), node)
        inside = self.within is None or self.within in ".".join(self.scope)  # nested functions too
        if inside and type(node.value) is int and node.value in self.constants:
            return ast.copy_location(ast.Constant(self.constants[node.value]), node)
        return node


def _keep(node: ast.stmt) -> bool:
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) else [])
        return not any(n.split(".")[0] in _UNAVAILABLE for n in names)
    if isinstance(node, ast.ClassDef):
        return True
    if isinstance(node, ast.FunctionDef):
        decorators = " ".join(ast.unparse(d) for d in node.decorator_list)
        return "custom_op" not in decorators and "register_fake" not in decorators
    if isinstance(node, ast.Assign):
        return [ast.unparse(t) for t in node.targets] in (["zeropower_backends"], ["BOS_ID"], ["polar_express_coeffs"])
    return False


class _Dist:
    """torch.distributed for one process, as far as the scripts' optimizers use it."""

    class ReduceOp:
        SUM, AVG = "sum", "avg"

    class _Done:
        def wait(self):
            return None

    @staticmethod
    def all_reduce(tensor, op=None, async_op=False):
        return _Dist._Done() if async_op else None

    @staticmethod
    def get_world_size():
        return 1

    @staticmethod
    def get_rank():
        return 0

    @staticmethod
    def reduce_scatter_tensor(out, tensor, op=None, async_op=False):
        out.view(-1).copy_(tensor.reshape(-1)[:out.numel()])
        return _Dist._Done() if async_op else None

    @staticmethod
    def all_gather_into_tensor(out, tensor, async_op=False):
        out.view(-1).copy_(tensor.reshape(-1))
        return _Dist._Done() if async_op else None


def block_mask_to_dense(block_mask, T: int) -> torch.Tensor:
    """A FlexAttention BlockMask over T x T as a bool [1, 1, T, T] (True = may attend)."""
    q_block, kv_block = block_mask.BLOCK_SIZE
    n_q, n_kv = -(-T // q_block), -(-T // kv_block)
    partial = torch.zeros(n_q, n_kv, dtype=torch.bool)
    full = torch.zeros(n_q, n_kv, dtype=torch.bool)
    for table, counts, indices in ((partial, block_mask.kv_num_blocks, block_mask.kv_indices),
                                   (full, block_mask.full_kv_num_blocks, block_mask.full_kv_indices)):
        if counts is None:
            continue
        for i in range(n_q):  # a negative count (record 20's short window of 0 blocks: -1 full blocks) is
            table[i, indices[0, 0, i, :max(0, int(counts[0, 0, i]))].long()] = True  # none, as in the kernels
    q = torch.arange(T)[:, None]
    k = torch.arange(T)[None, :]
    elementwise = block_mask.mask_mod(torch.tensor(0), torch.tensor(0), q, k)
    dense = (partial[q // q_block, k // kv_block] & elementwise) | full[q // q_block, k // kv_block]
    return dense[None, None]


def flex_attention_via_sdpa(q, k, v, block_mask=None, scale=None, **_):
    """FlexAttention's result through SDPA with the dense mask (q, k, v: [B, H, T, D])."""
    mask = block_mask_to_dense(block_mask, q.size(-2))
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)


def create_block_mask_on_cpu(mask_mod, B, H, Q_LEN, KV_LEN, device="cpu", _compile=False, **kw):
    return _torch_create_block_mask(mask_mod, B, H, Q_LEN, KV_LEN, device="cpu", **kw)


_UNAVAILABLE = ("triton", "kernels", "flash_attn_interface")  # imports the CPU cannot satisfy


class _Anything:
    """Stands in for triton / triton.language / kernels: any attribute or call gives itself, and as a
    decorator it returns the function unchanged."""

    def __getattr__(self, name):
        return self

    def __call__(self, *args, **kwargs):
        if len(args) == 1 and not kwargs and callable(args[0]) and not isinstance(args[0], _Anything):
            return args[0]
        return self


def fa3_varlen_reference(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q=None, max_seqlen_k=None,
                         causal=True, softmax_scale=None, window_size=(-1, -1), **_):
    """FlashAttention-3's flash_attn_varlen_func on CPU, in plain torch. q, k, v: [total_tokens, H, D];
    cu_seqlens: int32 [n_docs + 1] document starts (the last = total_tokens). Within each document, query
    i sees key j iff j <= i (causal) and i - j <= window_size[0] (FA3's rule; -1 = no limit); the
    softmax runs over those keys in fp32 with softmax_scale (default 1/sqrt(D)). Returns [total, H, D]."""
    assert torch.equal(cu_seqlens_q, cu_seqlens_k) and causal
    scale = softmax_scale if softmax_scale is not None else q.size(-1) ** -0.5
    left = window_size[0]
    out = torch.zeros_like(q)
    bounds = cu_seqlens_q.tolist()
    for a, b in zip(bounds[:-1], bounds[1:]):
        if b <= a:
            continue
        i = torch.arange(b - a)[:, None]
        j = torch.arange(b - a)[None, :]
        allowed = (j <= i) & ((i - j <= left) if left >= 0 else True)
        s = torch.einsum("ihd,jhd->hij", q[a:b].float(), k[a:b].float()) * scale
        p = s.masked_fill(~allowed, float("-inf")).softmax(dim=-1)
        out[a:b] = torch.einsum("hij,jhd->ihd", p, v[a:b].float()).to(q.dtype)
    return out


def triton_ns_reference(module: types.ModuleType) -> None:
    """Replace the scripts' Triton kernels XXT(A, out) and ba_plus_cAA(A, alpha, beta, out) by their
    formulas: out = A A^T and out = beta A + alpha A A^T (A symmetric), batched over leading dims."""
    def xxt(A, out):
        out.copy_(A @ A.mT)
        return out

    def ba_plus_caa(A, alpha, beta, out):
        out.copy_(beta * A + alpha * (A @ A.mT))
        return out

    # record 29 names them ns_line_1 / ns_line_2, records 43 on XXT / ba_plus_cAA
    module.XXT = module.ns_line_1 = xxt
    module.ba_plus_cAA = module.ns_line_2 = ba_plus_caa


def _parse(path: Path) -> ast.Module:
    with warnings.catch_warnings():  # the scripts' docstrings hold escapes like '\s' (theirs, verbatim)
        warnings.simplefilter("ignore", SyntaxWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        return ast.parse(path.read_text())


def load(script: str, constants: dict[int, int] | None = None, within: str | None = None) -> types.ModuleType:
    """The definitions of REF_DIR/<script>.py as a module, edited for CPU fp32 (see the docstring)."""
    path = REF_DIR / f"{script}.py"
    tree = _parse(path)
    tree.body = [n for n in tree.body if _keep(n)]
    tree = ast.fix_missing_locations(_CpuFp32(constants or {}, within).visit(tree))
    module = types.ModuleType(f"reference_{script}_{next(_counter)}")
    module.__file__ = str(path)
    module.__dict__["_tree"] = _parse(path)  # the full script, for top_level / loop_statements
    module.__dict__["_edit"] = lambda node: ast.fix_missing_locations(_CpuFp32(constants or {}, within).visit(node))
    sys.modules[module.__name__] = module  # dataclasses look their module up
    anything = _Anything()
    module.__dict__.update(triton=anything, tl=anything, get_kernel=anything)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SyntaxWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        exec(compile(tree, str(path), "exec"), module.__dict__)
    module.dist = _Dist
    module.os = types.SimpleNamespace(environ={"WORLD_SIZE": "1", "RANK": "0", "DISABLE_FP8": "1"},
                                      path=__import__("os").path)
    module.flash_attn_varlen_func = fa3_varlen_reference
    module.flash_attn_interface = types.SimpleNamespace(flash_attn_varlen_func=fa3_varlen_reference)
    if "XXT" in module.__dict__ or "ns_line_1" in module.__dict__:
        triton_ns_reference(module)
    module.flex_attention = flex_attention_via_sdpa
    module.create_block_mask = create_block_mask_on_cpu
    module.lm_head_fp8 = lambda x, w: F.linear(x, w)
    return module


def _names(stmt: ast.stmt) -> set[str]:
    if isinstance(stmt, ast.Assign):
        return {ast.unparse(t) for t in stmt.targets}
    if isinstance(stmt, (ast.FunctionDef, ast.ClassDef)):
        return {stmt.name}
    return set()


def _run(module: types.ModuleType, stmts: list[ast.stmt], env: dict) -> dict:
    code = module._edit(ast.Module(body=stmts, type_ignores=[]))
    ns = {**module.__dict__, **env}
    exec(compile(code, module.__file__, "exec"), ns)
    return ns


def top_level(module: types.ModuleType, first: str, last: str, env: dict) -> dict:
    """Run the script's top-level statements from the one defining `first` to the one defining `last`
    (inclusive), with `env` bound (e.g. raw_model, args). Returns the namespace they ran in."""
    body = module._tree.body
    start = next(i for i, s in enumerate(body) if first in _names(s))
    stop = next(i for i, s in enumerate(body) if last in _names(s) and i >= start)
    return _run(module, body[start:stop + 1], env)


def loop_statements(module: types.ModuleType, target: str, count: int, env: dict) -> dict:
    """Run `count` statements of the training loop's body (`for step in ...`), starting with the
    assignment to `target` (e.g. the momentum warmup, the window size), with `env` bound."""
    loop = next(s for s in module._tree.body if isinstance(s, ast.For) and ast.unparse(s.target) == "step")
    body = loop.body
    start = next(i for i, s in enumerate(body) if target in _names(s))
    return _run(module, body[start:start + count], env)
