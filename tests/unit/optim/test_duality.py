"""Duality maps: the exact-SVD linear map's identities, the Embed map's identities, Adam's path."""
import math

import pytest
import torch

from optim.hybrid_config import DualConfig
from optim.maps import EmbedMap, LinearMap, adam_direction, exact_polar, linear_scale

linear_norm, linear_dual_norm, embed_norm, embed_dual_norm = (LinearMap.norm, LinearMap.dual_norm, EmbedMap.norm,
                                                              EmbedMap.dual_norm)


def dualize_linear(G, scale="spectral", method="quintic", exact=False):
    return LinearMap(DualConfig(scale=scale, ns_method=method)).dualize(G, exact=exact)


def dualize_embed(G, eps=0.0):
    return EmbedMap(DualConfig(embed_eps=eps)).dualize(G)


def gaussian(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


SHAPES = [(24, 24), (16, 48), (48, 16)]  # square, wide (fan-in > fan-out), tall


# ---- linear map, exact path ------------------------------------------------------------------

@pytest.mark.parametrize("shape", SHAPES)
def test_linear_map_attains_the_dual_norm(shape):
    G = gaussian(*shape)
    D = dualize_linear(G, "spectral", exact=True)
    d_out, d_in = shape
    inner = (G * D).sum()
    assert inner.item() == pytest.approx(math.sqrt(d_out / d_in) * torch.linalg.matrix_norm(G, "nuc").item(), rel=1e-10)
    assert inner.item() == pytest.approx(linear_dual_norm(G).item(), rel=1e-10)
    assert linear_norm(D).item() == pytest.approx(1.0, rel=1e-10)  # unit RMS->RMS operator norm


@pytest.mark.parametrize("shape", SHAPES)
def test_linear_map_is_homogeneous_and_idempotent(shape):
    G = gaussian(*shape, seed=1)
    D = dualize_linear(G, "spectral", exact=True)
    torch.testing.assert_close(dualize_linear(3.7 * G, "spectral", exact=True), D, atol=1e-12, rtol=0)
    torch.testing.assert_close(dualize_linear(D, "spectral", exact=True), D, atol=1e-12, rtol=0)


def test_linear_map_beats_any_other_unit_direction():
    # The defining argmax: no unit-norm T does better than D (checked against random unit T's).
    G = gaussian(20, 30)
    best = (G * dualize_linear(G, "spectral", exact=True)).sum()
    for seed in range(20):
        T = gaussian(20, 30, seed=100 + seed)
        T = T / linear_norm(T)
        assert (G * T).sum() < best


def test_exact_path_keeps_rank_and_zero():
    G = gaussian(30, 3) @ gaussian(3, 40, seed=1)
    s = torch.linalg.svdvals(exact_polar(G))
    assert torch.allclose(s[:3], torch.ones(3, dtype=s.dtype)) and s[3:].abs().max() < 1e-12
    assert torch.equal(dualize_linear(torch.zeros(5, 8), exact=True), torch.zeros(5, 8))


def test_scale_rules():
    assert linear_scale(3072, 768, "spectral") == pytest.approx(2.0)
    assert linear_scale(768, 3072, "spectral") == pytest.approx(0.5)
    assert linear_scale(768, 3072, "muon") == 1.0 and linear_scale(3072, 768, "muon") == pytest.approx(2.0)
    assert linear_scale(768, 3072, "rms_match") == pytest.approx(0.2 * math.sqrt(3072))
    # rms_match: the update's RMS is 0.2, like a typical AdamW step.
    D = dualize_linear(gaussian(64, 256), "rms_match", exact=True)
    assert D.pow(2).mean().sqrt().item() == pytest.approx(0.2, rel=1e-9)
    with pytest.raises(ValueError, match="unknown linear scale rule 'fro'"):
        linear_scale(2, 2, "fro")


@pytest.mark.parametrize("method,tol", [("quintic", 0.25), ("polar_express", 0.11), ("six_step", 0.005)])
def test_newton_schulz_path_approximates_the_exact_path(method, tol):
    G = gaussian(3, 32, 96).float()  # batch of matrices, e.g. fused Q/K/V blocks
    exact = dualize_linear(G, "spectral", exact=True)
    approx = dualize_linear(G, "spectral", method=method)
    assert approx.shape == G.shape
    assert ((approx - exact).norm() / exact.norm()).item() < tol


# ---- embed map -----------------------------------------------------------------------------

def embed_grad():
    G = gaussian(50, 16, seed=3)
    G[[0, 7, 49]] = 0.0  # tokens absent from the batch
    G[5] *= 1e-6  # a rare token with a tiny gradient
    return G


def test_embed_rows_unit_rms_parallel_and_zero_rows_stay_zero():
    G = embed_grad()
    D = dualize_embed(G)
    rms = D.pow(2).mean(dim=1).sqrt()
    nonzero = G.abs().sum(dim=1) > 0
    torch.testing.assert_close(rms[nonzero], torch.ones(int(nonzero.sum()), dtype=rms.dtype))
    assert torch.equal(D[~nonzero], torch.zeros_like(D[~nonzero]))
    cos = torch.nn.functional.cosine_similarity(D[nonzero], G[nonzero], dim=1)
    torch.testing.assert_close(cos, torch.ones_like(cos))
    assert not torch.isnan(D).any()


def test_embed_map_attains_the_dual_norm_and_has_unit_norm():
    G = embed_grad()
    D = dualize_embed(G)
    d = G.size(1)
    expected = math.sqrt(d) * torch.linalg.vector_norm(G, dim=1).sum()
    assert (G * D).sum().item() == pytest.approx(expected.item(), rel=1e-10)
    assert (G * D).sum().item() == pytest.approx(embed_dual_norm(G).item(), rel=1e-10)
    assert embed_norm(D).item() == pytest.approx(1.0, rel=1e-10)


def test_embed_map_is_homogeneous_and_idempotent():
    G = embed_grad()
    D = dualize_embed(G)
    torch.testing.assert_close(dualize_embed(0.01 * G), D, atol=1e-12, rtol=0)
    torch.testing.assert_close(dualize_embed(D), D, atol=1e-12, rtol=0)
    # the relative floor keeps homogeneity
    torch.testing.assert_close(dualize_embed(250.0 * G, eps=0.1), dualize_embed(G, eps=0.1), atol=1e-12, rtol=0)


def test_embed_eps_floor_damps_rare_rows_only():
    G = embed_grad()
    D = dualize_embed(G, eps=1e-3)
    rms = D.pow(2).mean(dim=1).sqrt()
    row_rms = G.pow(2).mean(dim=1).sqrt()
    floor = 1e-3 * row_rms.max()
    big = row_rms >= floor
    torch.testing.assert_close(rms[big], torch.ones(int(big.sum()), dtype=rms.dtype))
    # the rare token's row is damped in proportion to its size instead of blown up to RMS 1
    assert rms[5].item() == pytest.approx((row_rms[5] / floor).item(), rel=1e-9)
    assert rms[5] < 1e-2
    assert torch.equal(D[0], torch.zeros(16, dtype=D.dtype))


def test_embed_rejects_non_tables():
    with pytest.raises(ValueError, match=r"\[vocab, d\]"):
        dualize_embed(torch.ones(2, 3, 4))


# ---- Adam path -------------------------------------------------------------------------------

def test_adam_direction_matches_torch_adam():
    torch.manual_seed(0)
    p_ref = torch.nn.Parameter(torch.randn(10))
    p = p_ref.detach().clone()
    ref = torch.optim.Adam([p_ref], lr=0.01, betas=(0.8, 0.95), eps=1e-10)
    m, v = torch.zeros(10), torch.zeros(10)
    for step in range(1, 6):
        g = torch.randn(10)
        p_ref.grad = g.clone()
        ref.step()
        p -= 0.01 * adam_direction(g, m, v, step, (0.8, 0.95), 1e-10)
    torch.testing.assert_close(p, p_ref.detach(), atol=1e-6, rtol=0)
