"""SOAP preconditioning of the momentum before Newton-Schulz (switch `optim.soap`), with the trust gate.

Source: Vyas, Morwani, Zhao, Kwun, Shapira, Brandfonbrener, Janson & Kakade, "SOAP: Improving and
Stabilizing Shampoo using Adam", arXiv 2409.11321 (Adam's second moment in Shampoo's eigenbasis), as
track-3 result #46 runs it on Muon's Nesterov direction (track3_best46_cwd_rowfloor_tailema.py: its
SOAP helpers, trust gate and Muon step). Per linear-map matrix W [m, n] (each block of a fused weight
alone), with g its raw gradient, U the Nesterov direction (fp32), t the 0-based step, beta =
optim.soap_beta, eps = optim.soap_eps, S4(X) = max(sqrt(||X X^T||_F), eps) (Schatten-4,
optim/newton_schulz.py's schatten4):

  precondition, once a basis exists (t >= 1; at t = 0 U~ = U and V is left alone):
    P  = (Q_L^T U) Q_R
    V <- beta V + (1 - beta) P^2                        (second moment in the rotated basis)
    U~ = (Q_L (P / max(V, eps^2)^soap_denom_power)) Q_R^T,   U~ <- U~ S4(U) / S4(U~)   (size kept)
  by role:  soap_roles \\ soap_blend_roles:  U <- U~
            soap_blend_roles:  B = U + (U~ - U) a,  U <- B S4(U) / S4(B);  a = 1, or the trust gate below
                               for soap_trust_roles (#46: q, k, v blend with a = 1; attn.proj is gated)
  statistics (#46 updates them after the weight step; nothing in between reads or writes this state,
  so doing it here, right after the precondition, is the same computation):
    L <- lerp(L, g g^T, 1 - beta),   R <- lerp(R, g^T g, 1 - beta)
    t = 0:  Q_L, Q_R = eigenvectors of L + 1e-30 I, R + 1e-30 I (eigh; fp64 retry), descending eigenvalue
    later, every soap_freq steps: order Q_L's columns by diag(Q_L^T L Q_L), descending, permute V's rows
           alike, Q_L <- Q of qr(L Q_L); the same for Q_R with V's columns (one power step; V is
           permuted, never rotated)

Trust gate (soap_trust_*; cos(x, y) = <x, y> / max(||x|| ||y||, 1e-8)), a = clamp(a_raw, floor_t, cap_t):
    agree = clamp((cos(U~, U) - min_agree) / (1 - min_agree), 0, 1)
    align = clamp((cos(U~, g) - min_align) / max(cos(U, g) - min_align, 1e-8), 0, 1)
    a_raw = clamp(agree align, 0, 1) ^ power
    floor_t = floor (t < floor_end), floor (fade_end - t) / (fade_end - floor_end) (until fade_end), then 0
    cap_t   = cap (t < fade_end), then 1

State per matrix (fp32; a fused weight's blocks add the suffix _0, _1, _2): soap_V [m, n], soap_L [m, m],
soap_R [n, n], soap_QL, soap_QR (from step 0's end), and soap_step (int), all in state_dict(). Memory:
mn + 2m^2 + 2n^2 floats per matrix: 680 M (2.7 GB) for GPT-2 124M's 72 matrices, dominated by the MLP's
3072^2 Grams. Distributed: the stage runs on every rank for every matrix (before_ns, optim/stages/base.py),
so any rank's state_dict is a checkpoint; the price is that each rank repeats every matrix's work:
4 GEMMs of the precondition, 2 Gram GEMMs, and per refresh 3 m^3 + 3 n^3 GEMM work plus a QR of m x m
and n x n (#46 does it on the owning rank only). On one GPU nothing is repeated.
"""
from __future__ import annotations

from functools import partial

import torch

from optim.newton_schulz import schatten4
from optim.roles import HIDDEN_ROLES
from optim.stages.base import Key, MatrixContext, Stage

ATTN_QKV = ["attn_q", "attn_k", "attn_v", "attn_qkv"]


def cosine(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """<a, b> / max(||a|| ||b||, eps), fp32, 0-dim."""
    a, b = a.float(), b.float()
    return (a * b).sum() / (a.norm() * b.norm()).clamp_min(eps)


def trust_floor(t: int, floor: float, floor_end: int, fade_end: int) -> float:
    """The gate's lower bound at 0-based step t: `floor`, faded linearly to 0 over [floor_end, fade_end)."""
    if fade_end <= floor_end:
        return 0.0 if t >= fade_end else floor
    if t < floor_end:
        return floor
    if t >= fade_end:
        return 0.0
    return floor * (fade_end - t) / (fade_end - floor_end)


def trust_gate(u: torch.Tensor, soap: torch.Tensor, g: torch.Tensor, min_agree: float, min_align: float,
               power: float, eps: float = 1e-8) -> torch.Tensor:
    """a_raw (module docstring): how far SOAP's direction may be trusted over the raw momentum. 0-dim fp32."""
    agree = ((cosine(soap, u, eps) - min_agree) / (1 - min_agree)).clamp(0, 1)
    align = ((cosine(soap, g, eps) - min_align) / (cosine(u, g, eps) - min_align).clamp_min(eps)).clamp(0, 1)
    gate = (agree * align).clamp(0, 1)
    return gate.pow(power) if power != 1.0 else gate


def blend(u: torch.Tensor, soap: torch.Tensor, gate: torch.Tensor, eps: float) -> torch.Tensor:
    """U + (U~ - U) a, rescaled to U's Schatten-4 norm."""
    mixed = u + (soap - u) * gate.to(u.dtype)
    return (mixed * (schatten4(u, eps) / schatten4(mixed, eps)).to(mixed.dtype)).to(u.dtype)


def eigenbasis(mat: torch.Tensor) -> torch.Tensor:
    """Eigenvectors of a symmetric PSD matrix, columns by descending eigenvalue (jitter 1e-30 I; fp64 retry)."""
    eye = torch.eye(mat.size(0), device=mat.device, dtype=mat.dtype)
    try:
        _, q = torch.linalg.eigh(mat + 1e-30 * eye)
    except RuntimeError:  # eigh failed to converge in fp32
        _, q = torch.linalg.eigh(mat.double() + 1e-30 * eye)
        q = q.float()
    return torch.flip(q, [1])


def refresh(gram: torch.Tensor, q: torch.Tensor, v: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One power step of the basis q of `gram`: columns sorted by their Rayleigh quotients (descending),
    v's `dim` permuted alike, then q <- Q of qr(gram q). Returns (q, v)."""
    order = torch.argsort(torch.diag(q.T @ gram @ q), descending=True)
    q = q[:, order]
    v = v.index_select(dim, order)
    q, _ = torch.linalg.qr(gram @ q)
    return q, v


def precondition(u: torch.Tensor, st: dict, sfx: str, beta: float, eps: float, power: float) -> torch.Tensor:
    """U~ of one matrix u [m, n] (fp32) with the basis in st; updates st["soap_V"+sfx] in place."""
    ql, qr = st["soap_QL" + sfx], st["soap_QR" + sfx]
    proj = ql.T @ u @ qr
    st["soap_V" + sfx].mul_(beta).add_(proj.square(), alpha=1 - beta)
    out = ql @ (proj / st["soap_V" + sfx].clamp_min(eps * eps).pow(power)) @ qr.T
    return out.mul_(schatten4(u, eps) / schatten4(out, eps))


def update_statistics(g: torch.Tensor, st: dict, sfx: str, beta: float, freq: int, first: bool) -> None:
    """The Gram EMAs from the raw gradient g [m, n], then the basis: eigh at the first step, else the refresh."""
    g = g.float()
    st["soap_L" + sfx].lerp_(g @ g.T, 1 - beta)
    st["soap_R" + sfx].lerp_(g.T @ g, 1 - beta)
    if first:
        st["soap_QL" + sfx], st["soap_QR" + sfx] = eigenbasis(st["soap_L" + sfx]), eigenbasis(st["soap_R" + sfx])
    elif st["soap_step"] % freq == 0:
        st["soap_QL" + sfx], st["soap_V" + sfx] = refresh(st["soap_L" + sfx], st["soap_QL" + sfx], st["soap_V" + sfx], 0)
        st["soap_QR" + sfx], st["soap_V" + sfx] = refresh(st["soap_R" + sfx], st["soap_QR" + sfx], st["soap_V" + sfx], 1)


def _before_ns(u: torch.Tensor, ctx: MatrixContext, roles: frozenset, blend_roles: frozenset,
               trust_roles: frozenset, beta: float, eps: float, power: float, freq: int, trust: tuple) -> torch.Tensor:
    """The stage at the before_ns hook: u [..., m, n] (leading dim: a fused weight's blocks) -> its SOAP copy."""
    if ctx.role not in roles:
        return u
    st, (m, n) = ctx.state, u.shape[-2:]
    blocks = u.reshape(-1, m, n)
    grads = ctx.grad.reshape(blocks.shape)
    sfxs = [""] if u.ndim == 2 else [f"_{i}" for i in range(blocks.size(0))]
    if "soap_step" not in st:
        st["soap_step"] = 0
        for sfx in sfxs:
            st["soap_V" + sfx] = torch.zeros(m, n, dtype=torch.float32, device=u.device)
            st["soap_L" + sfx] = torch.zeros(m, m, dtype=torch.float32, device=u.device)
            st["soap_R" + sfx] = torch.zeros(n, n, dtype=torch.float32, device=u.device)
    first = st["soap_step"] == 0
    out = []
    for block, g, sfx in zip(blocks, grads, sfxs):
        raw = block.float()
        soap = raw if first else precondition(raw, st, sfx, beta, eps, power)
        if ctx.role in blend_roles:
            if ctx.role in trust_roles:
                floor, cap, floor_end, fade_end, min_agree, min_align, tpower = trust
                gate = trust_gate(raw, soap, g, min_agree, min_align, tpower).clamp(
                    min=trust_floor(ctx.step, floor, floor_end, fade_end), max=cap if ctx.step < fade_end else 1.0)
            else:
                gate = torch.ones((), dtype=torch.float32, device=u.device)
            soap = blend(raw, soap, gate, eps)
        update_statistics(g, st, sfx, beta, freq, first)
        out.append(soap)
    st["soap_step"] += 1
    return torch.stack(out).view(u.shape) if u.ndim > 2 else out[0]


def _check(cfg) -> None:
    if cfg.soap_freq < 1:
        raise ValueError(f"optim.soap_freq={cfg.soap_freq} must be >= 1 (refresh the basis every that many steps)")
    if not 0.0 <= cfg.soap_trust_floor <= cfg.soap_trust_cap <= 1.0:
        raise ValueError(f"optim.soap_trust_floor={cfg.soap_trust_floor} and optim.soap_trust_cap="
                         f"{cfg.soap_trust_cap} must satisfy 0 <= floor <= cap <= 1")
    if not cfg.soap_trust_min_agree < 1.0:
        raise ValueError(f"optim.soap_trust_min_agree={cfg.soap_trust_min_agree} must be < 1")
    for key in ("soap_roles", "soap_blend_roles", "soap_trust_roles"):
        bad = sorted(set(getattr(cfg, key)) - HIDDEN_ROLES)
        if bad:
            raise ValueError(f"optim.{key}: {bad} are not hidden-matrix roles; choose from {sorted(HIDDEN_ROLES)}")
    if not set(cfg.soap_trust_roles) <= set(cfg.soap_blend_roles):
        raise ValueError("optim.soap_trust_roles must be a subset of optim.soap_blend_roles (the gate is a blend's)")


def _build(cfg):
    trust = (cfg.soap_trust_floor, cfg.soap_trust_cap, cfg.soap_trust_floor_end, cfg.soap_trust_fade_end,
             cfg.soap_trust_min_agree, cfg.soap_trust_min_align, cfg.soap_trust_power)
    return partial(_before_ns, roles=frozenset(cfg.soap_roles), blend_roles=frozenset(cfg.soap_blend_roles),
                   trust_roles=frozenset(cfg.soap_trust_roles), beta=cfg.soap_beta, eps=cfg.soap_eps,
                   power=cfg.soap_denom_power, freq=cfg.soap_freq, trust=trust)


STAGE = Stage(
    name="soap", hook="before_ns",
    doc="SOAP preconditioning of the Newton-Schulz input, with #46's trust gate (optim/stages/soap.py)",
    keys=(Key("soap_beta", float, 0.90, "EMA of the Grams L, R and of the rotated second moment V", range="in [0, 1)"),
          Key("soap_freq", int, 1, "refresh the eigenbasis (one QR power step) every this many steps"),
          Key("soap_denom_power", float, 0.5, "U~ divides by V^power (0.5: Adam's root)", range="> 0"),
          Key("soap_eps", float, 1e-8, "V is clamped at eps^2; Schatten-4 norms and cosines at eps", range="> 0"),
          Key("soap_roles", list[str], sorted(HIDDEN_ROLES), "roles that are preconditioned"),
          Key("soap_blend_roles", list[str], sorted(ATTN_QKV + ["attn_out"]),
              "roles that take the norm-preserving blend U + (U~ - U) a instead of U~"),
          Key("soap_trust_roles", list[str], ["attn_out"], "blend roles whose a is the trust gate (else 1)"),
          Key("soap_trust_floor", float, 0.45, "the gate's lower bound until soap_trust_floor_end"),
          Key("soap_trust_cap", float, 0.85, "the gate's upper bound until soap_trust_fade_end (then 1)"),
          Key("soap_trust_floor_end", int, 1375, "0-based step where the floor starts fading"),
          Key("soap_trust_fade_end", int, 1625, "0-based step where the floor reaches 0 and the cap lifts"),
          Key("soap_trust_min_agree", float, 0.2, "cos(U~, U) below which the gate closes"),
          Key("soap_trust_min_align", float, 0.0, "offset of the gradient-alignment ratio"),
          Key("soap_trust_power", float, 1.0, "exponent on the raw gate", range="> 0")),
    check=_check,
    build=_build)
