"""Newton-Schulz orthogonalization: symmetries, singular-value behaviour and accuracy (docs/optimizer.md)."""
import pytest
import torch

from optim import orthogonalize
from optim.maps import exact_polar
from optim.newton_schulz import METHODS, scalar_iteration, schedule

ALL = sorted(METHODS)
# Output singular-value range on rectangular Gaussian inputs (aspect >= 2), from the spec's table,
# with a small margin; and the spec's typical relative error to U V^T (upper bounds).
BOUNDS = {"quintic": (0.67, 1.21), "polar_express": (0.85, 1.15), "six_step": (0.99, 1.0 + 1e-4),
          "cubic": (0.99, 1.0 + 1e-4), "track3": (0.99, 1.0 + 1e-4)}
MAX_ERR = {"quintic": 0.25, "polar_express": 0.11, "six_step": 0.005, "cubic": 0.005, "track3": 0.005}


def gaussian(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).float()


def random_orthogonal(n, seed):
    q, _ = torch.linalg.qr(gaussian(n, n, seed=seed).double())
    return q.float()


@pytest.mark.parametrize("method", ALL)
def test_transpose_scale_sign_symmetries(method):
    G = gaussian(48, 96)
    out = orthogonalize(G, method)
    torch.testing.assert_close(orthogonalize(G.T, method), out.T, atol=1e-5, rtol=0)
    torch.testing.assert_close(orthogonalize(7.5 * G, method), out, atol=1e-5, rtol=0)
    # (c small enough to matter, large enough that the eps in the normalization stays negligible)
    torch.testing.assert_close(orthogonalize(0.05 * G, method), out, atol=1e-5, rtol=0)
    torch.testing.assert_close(orthogonalize(-G, method), -out, atol=1e-6, rtol=0)


@pytest.mark.parametrize("method", ALL)
def test_zero_maps_to_zero_without_nan(method):
    for shape in [(16, 32), (3, 8, 4)]:
        out = orthogonalize(torch.zeros(*shape), method)
        assert torch.equal(out, torch.zeros(*shape))


@pytest.mark.parametrize("method", ALL)
def test_orthogonal_equivariance(method):
    G = gaussian(32, 64)
    P, Q = random_orthogonal(32, 1), random_orthogonal(64, 2)
    torch.testing.assert_close(orthogonalize(P @ G @ Q, method), P @ orthogonalize(G, method) @ Q,
                               atol=2e-5, rtol=0)


@pytest.mark.parametrize("method", ALL)
def test_singular_values_follow_the_scalar_iteration(method):
    # G = U diag(s) V^T with chosen s: the output must be U diag(p(s / ||s||)) V^T.
    U = random_orthogonal(24, 3)[:, :16]
    V = random_orthogonal(40, 4)[:, :16]
    s = torch.logspace(-2, 0, 16, dtype=torch.float64).flip(0) * 3.0
    G = (U.double() * s) @ V.double().T
    expected = scalar_iteration(s, method)
    got = torch.linalg.svdvals(orthogonalize(G.float(), method).double())
    torch.testing.assert_close(got[:16], expected.sort(descending=True).values, atol=5e-5, rtol=0)
    assert got[16:].abs().max() < 1e-4  # exact zeros up to fp32 rounding
    # ... and the singular vectors are G's: U^T out V is diagonal.
    inner = U.double().T @ orthogonalize(G.float(), method).double() @ V.double()
    torch.testing.assert_close(inner, torch.diag(expected), atol=5e-5, rtol=0)


@pytest.mark.parametrize("method", ALL)
def test_rank_is_preserved(method):
    G = gaussian(40, 5) @ gaussian(5, 80, seed=1)  # rank 5
    out = orthogonalize(G, method)
    s = torch.linalg.svdvals(out.double())
    assert (s[:5] > 0.5).all() and (s[5:] < 1e-4).all()


@pytest.mark.parametrize("method", ALL)
@pytest.mark.parametrize("shape", [(64, 128), (256, 64), (96, 384)])
def test_bounds_and_error_on_rectangular_gaussians(method, shape):
    G = gaussian(*shape, seed=5)
    out = orthogonalize(G, method)
    s = torch.linalg.svdvals(out.double())
    lo, hi = BOUNDS[method]
    assert lo <= s.min() and s.max() <= hi, (s.min().item(), s.max().item())
    ref = exact_polar(G)
    err = ((out - ref).norm() / ref.norm()).item()
    assert err <= MAX_ERR[method]


def test_quintic_does_not_converge_by_design_but_six_step_does():
    # Guards against silently swapping coefficient sets: the quintic's error is large, six-step's tiny.
    G = gaussian(128, 512, seed=7)
    ref = exact_polar(G)
    err = {m: ((orthogonalize(G, m) - ref).norm() / ref.norm()).item() for m in ("quintic", "six_step")}
    assert err["quintic"] > 0.1 and err["six_step"] < 0.005


@pytest.mark.parametrize("method", ALL)
def test_batch_matches_per_matrix(method):
    G = gaussian(2, 3, 16, 40)
    out = orthogonalize(G, method)
    assert out.shape == G.shape
    for i in range(2):
        for j in range(3):
            torch.testing.assert_close(out[i, j], orthogonalize(G[i, j], method), atol=1e-6, rtol=0)


def test_dtype_default_and_override():
    G = gaussian(32, 64)
    assert orthogonalize(G).dtype == torch.float32
    low = orthogonalize(G, "polar_express", dtype=torch.bfloat16)
    assert low.dtype == torch.float32  # returned in the input's dtype whatever the working dtype
    err = ((low - orthogonalize(G, "polar_express")).norm() / low.norm()).item()
    assert 0 < err < 0.05  # bf16 rounding is visible but small


def test_schedule_repeats_last_set_and_rejects_bad_input():
    assert schedule("polar_express", 7)[5:] == [schedule("polar_express")[-1]] * 2
    assert len(schedule("six_step", 3)) == 3 and len(schedule("quintic")) == 5
    assert orthogonalize(gaussian(4, 6), "quintic", 0).norm() == pytest.approx(1.0, abs=1e-5)  # normalized only
    with pytest.raises(ValueError, match="unknown Newton-Schulz method 'svd'"):
        orthogonalize(gaussian(4, 4), "svd")
    with pytest.raises(ValueError, match="matrix"):
        orthogonalize(torch.ones(5), "quintic")


# ---- batched over same-shape matrices --------------------------------------------------------------

@pytest.mark.parametrize("method", ALL)
def test_batched_equals_the_per_matrix_path(method):
    """Mixed shapes: square, wide, tall (batched with the wide ones after a transpose), fused 3-block."""
    mats = [gaussian(32, 32, seed=1), gaussian(32, 96, seed=2), gaussian(96, 32, seed=3), gaussian(32, 32, seed=4),
            gaussian(3, 32, 32, seed=5), gaussian(96, 32, seed=6) * 1e-3, torch.zeros(32, 96)]
    from optim.newton_schulz import orthogonalize_batched
    got = orthogonalize_batched(mats, method)
    assert [g.shape for g in got] == [m.shape for m in mats] and all(g.dtype == torch.float32 for g in got)
    worst = max((g - orthogonalize(m, method)).abs().max().item() for g, m in zip(got, mats))
    assert worst <= 1e-6, worst


def test_batched_makes_one_call_per_oriented_shape(monkeypatch):
    import optim.newton_schulz as ns
    calls = []
    original = ns.orthogonalize
    monkeypatch.setattr(ns, "orthogonalize", lambda X, *a, **k: calls.append(tuple(X.shape)) or original(X, *a, **k))
    # GPT-2-like block x 2: fused QKV [3d, d] seen as [3, d, d], out [d, d], MLP [4d, d] and [d, 4d]
    d = 16
    mats = [gaussian(3, d, d), gaussian(d, d), gaussian(4 * d, d), gaussian(d, 4 * d)] * 2
    ns.orthogonalize_batched(mats, "quintic")
    assert sorted(calls) == [(4, d, 4 * d), (8, d, d)]  # 4 tall/wide MLP matrices; 6 Q/K/V blocks + 2 square
