"""The polar-factor kernel against independent references: NumPy's SVD (float64), closed-form singular-value maps."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from torch import nn

from fire_rl.polar import NS_COEFFS, PE_COEFFS, check_polar_options, polar, polar_with_info
from fire_rl.resets import fire_
from fire_rl.validation import check_range, range_error

DTYPES = [torch.float32, torch.float64]
ITERATIVE = ["newton_schulz", "polar_express"]
TOL = {torch.float32: 1e-4, torch.float64: 1e-9}
SHAPES = {"tall": (48, 20), "wide": (20, 48), "square": (32, 32)}
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))]


def _orthogonal(n: int, p: int, gen: torch.Generator) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(n, p, generator=gen, dtype=torch.float64))
    return q  # (n, p), orthonormal columns


def make_matrix(kind: str, shape: tuple[int, int], dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    """Gaussian, or singular values log-spaced over four decades ("ill") with random singular vectors."""
    gen = torch.Generator().manual_seed(seed)
    m, n = shape
    if kind == "gauss":
        w = torch.randn(m, n, generator=gen, dtype=torch.float64)
    else:
        p = min(m, n)
        sigma = torch.logspace(0, -4, p, dtype=torch.float64)
        w = (_orthogonal(m, p, gen) * sigma) @ _orthogonal(n, p, gen).T
    return w.to(dtype)


def svd_polar(w: torch.Tensor) -> np.ndarray:
    """Reference U Vᵀ in float64 from NumPy's LAPACK SVD of the (exactly representable) input values."""
    u, _, vh = np.linalg.svd(w.detach().double().numpy(), full_matrices=False)
    return u @ vh


def rounding_bound(kind: str, dtype: torch.dtype) -> float:
    """‖Q − UVᵀ‖_F that input rounding alone can cause: a few hundred ε for Gaussians, ~κ·ε·√r for κ = 1e4 (measured
    with NumPy's float64 SVD of float32 SVD results: at most 6e-6 and 4.3e-4)."""
    return torch.finfo(dtype).eps * (2e4 if kind == "ill" else 200.0)


def true_residual(q: torch.Tensor) -> float:
    return float(np.abs(np.linalg.svd(q.detach().double().numpy(), compute_uv=False) - 1.0).max())


# ---- accuracy against the exact polar factor--------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("method", ITERATIVE)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["gauss", "ill"])
@pytest.mark.parametrize("orient", list(SHAPES))
def test_tolerance_mode_reaches_exact_polar_factor(device, method, dtype, kind, orient):
    w = make_matrix(kind, SHAPES[orient], dtype, seed=list(SHAPES).index(orient) + (10 if kind == "ill" else 0))
    tol = TOL[dtype]
    q, info = polar_with_info(w.to(device), method=method, tol=tol)
    assert q.shape == w.shape and q.dtype == dtype and q.device.type == device
    q = q.cpu()
    assert info.converged is True and info.method == method
    assert 0 < info.steps < 100
    assert true_residual(q) <= tol
    # ‖Q − UVᵀ‖_F = ‖p(Σ) − I‖_F ≤ √r·tol, plus rounding of the input amplified by the conditioning.
    bound = math.sqrt(min(w.shape)) * tol + rounding_bound(kind, dtype)
    assert np.linalg.norm(q.double().numpy() - svd_polar(w)) <= bound


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["gauss", "ill"])
@pytest.mark.parametrize("orient", list(SHAPES))
def test_svd_method_is_exact(dtype, kind, orient):
    w = make_matrix(kind, SHAPES[orient], dtype, seed=3)
    q, info = polar_with_info(w, method="svd")
    assert np.linalg.norm(q.double().numpy() - svd_polar(w)) <= rounding_bound(kind, dtype)
    assert info.steps == 0 and info.rank == min(w.shape) and info.residual <= 1e3 * torch.finfo(dtype).eps


@pytest.mark.parametrize("shape", [(64, 64), (256, 128), (128, 512)])
@pytest.mark.parametrize("smallest", [1.5e-6, 1e-6, 1e-8])
def test_svd_method_is_exact_for_ill_conditioned_float32(shape, smallest):
    """``"svd"`` is the exact polar factor of a float32 weight whose singular values span six to eight decades: against
    scipy.linalg.polar of the same float32 entries in float64 the error is float32 rounding of the result (measured
    ~1.5e-8). A float32 SVD was off by 3e-3 … 8e-3; a rank rule at float32's 10·ε₃₂·σ_max ≈ 1.2e-6 dropped the
    smallest directions (error 3.4e-2 at condition 1e6)."""
    scipy_linalg = pytest.importorskip("scipy.linalg")
    m, n = shape
    k = min(m, n)
    g = torch.Generator().manual_seed(k)
    u = torch.linalg.qr(torch.randn(m, k, generator=g, dtype=torch.float64))[0]
    v = torch.linalg.qr(torch.randn(n, k, generator=g, dtype=torch.float64))[0]
    w = ((u * torch.logspace(0, math.log10(smallest), k, dtype=torch.float64)) @ v.T).float()
    exact = w.double().numpy()
    reference = scipy_linalg.polar(exact)[0] if m >= n else scipy_linalg.polar(exact.T)[0].T  # U Vᵀ
    q, info = polar_with_info(w, method="svd")
    assert q.dtype == torch.float32 and info.rank == k
    assert np.abs(q.double().numpy() - reference).max() <= 1e-6


def test_polar_express_needs_fewer_steps_than_cubic():
    w = make_matrix("ill", (32, 32), torch.float32, seed=5)
    _, cubic = polar_with_info(w, method="newton_schulz", tol=1e-3, check_every=1)
    _, quintic = polar_with_info(w, method="polar_express", tol=1e-3, check_every=1)
    # Four decades take ~11 Polar Express steps and ~30 cubic ones (fire_rl.polar.polar's docstring).
    assert quintic.steps <= 13 and cubic.steps >= 25


# ---- the fixed-step path is exactly the paper's recurrence------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("orient", list(SHAPES))
def test_fixed_steps_match_the_official_recurrence(dtype, orient):
    """Official FIRE: tall orientation, X₀ = W/‖W‖_F, X ← 1.5X − 0.5X(XᵀX), 10 steps; we iterate on the wide side."""
    w = make_matrix("gauss", SHAPES[orient], torch.float64, seed=7)
    x = w.T if w.shape[1] > w.shape[0] else w
    x = x / torch.linalg.matrix_norm(x)
    for _ in range(10):
        x = 1.5 * x - 0.5 * x @ (x.T @ x)
    expected = x.T if w.shape[1] > w.shape[0] else x
    got = polar(w.to(dtype), method="newton_schulz", steps=10)
    atol = {torch.float32: 1e-5, torch.float64: 1e-12}[dtype]
    torch.testing.assert_close(got.double(), expected, atol=atol, rtol=0)


@pytest.mark.parametrize("method", ITERATIVE)
@pytest.mark.parametrize("steps", [1, 3, 10])
def test_singular_values_follow_the_scalar_map(method, steps):
    """Q = U p(Σ) Vᵀ: each singular value follows the scalar polynomial from its normalised start (closed form)."""
    w = make_matrix("ill", (24, 16), torch.float64, seed=11)
    sigma = np.linalg.svd(w.numpy(), compute_uv=False)
    if method == "newton_schulz":
        x = sigma / np.sqrt((sigma**2).sum())
        for _ in range(steps):
            x = NS_COEFFS[0] * x + NS_COEFFS[1] * x**3
    else:
        x = sigma / (1.01 * (sigma**8).sum() ** 0.125)
        for k in range(steps):
            a, b, c = PE_COEFFS[min(k, len(PE_COEFFS) - 1)]
            x = a * x + b * x**3 + c * x**5
    got = np.linalg.svd(polar(w, method=method, steps=steps).numpy(), compute_uv=False)
    np.testing.assert_allclose(np.sort(got), np.sort(x), atol=1e-11)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("orient", list(SHAPES))
def test_reported_residual_is_the_true_one(dtype, orient):
    w = make_matrix("gauss", SHAPES[orient], dtype, seed=13)
    q, info = polar_with_info(w)  # the paper's 10 cubic steps
    assert info.steps == 10 and info.converged is None
    assert info.residual == pytest.approx(true_residual(q), abs={torch.float32: 2e-6, torch.float64: 1e-13}[dtype])
    if orient == "square":
        assert info.residual > 0.5  # 10 steps leave a square Gaussian far from orthogonal


def test_ten_steps_leave_512_square_unconverged():
    """The docstring's figure: σ_min ≈ 0.002 for a 512×512 Gaussian after the paper's 10 steps."""
    w = torch.randn(512, 512, generator=torch.Generator().manual_seed(0))
    sigma = torch.linalg.svdvals(polar(w).double())
    assert 5e-4 < float(sigma.min()) < 1e-2
    assert float((sigma - 1).abs().max()) > 0.99


# ---- batching, dtypes, scale------------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("method", ["newton_schulz", "polar_express", "svd"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(3, 2, 16, 24), (5, 24, 16)])
def test_batched_equals_per_matrix(device, method, dtype, shape):
    w = torch.randn(*shape, generator=torch.Generator().manual_seed(17), dtype=dtype).to(device)
    batched = polar(w, method=method)
    flat_w, flat_q = w.reshape(-1, *shape[-2:]), batched.reshape(-1, *shape[-2:])
    atol = {torch.float32: 1e-5, torch.float64: 1e-12}[dtype]
    for wi, qi in zip(flat_w, flat_q, strict=True):
        torch.testing.assert_close(qi, polar(wi, method=method), atol=atol, rtol=0)


def test_batched_tolerance_mode_converges_every_matrix():
    w = torch.stack([make_matrix(k, (20, 30), torch.float32, seed=s) for s, k in enumerate(["gauss", "ill", "gauss"])])
    q, info = polar_with_info(w, method="polar_express", tol=1e-4)
    assert info.converged and all(true_residual(qi) <= 1e-4 for qi in q)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("method", ["newton_schulz", "polar_express", "svd"])
def test_half_precision_is_computed_in_float32(dtype, method):
    w = torch.randn(3, 24, 40, generator=torch.Generator().manual_seed(19)).to(dtype)
    q = polar(w, method=method)
    assert q.dtype == dtype
    torch.testing.assert_close(q, polar(w.float(), method=method).to(dtype), atol=0, rtol=0)


@pytest.mark.parametrize("method", ["newton_schulz", "polar_express", "svd"])
def test_scale_invariance(method):
    w = make_matrix("gauss", (20, 30), torch.float32, seed=23)
    q = polar(w, method=method)
    for k in (-60, 60):  # powers of two scale exactly: bit-identical results
        torch.testing.assert_close(polar(w * 2.0**k, method=method), q, atol=0, rtol=0)
    for s in (1e-20, 1e20):
        torch.testing.assert_close(polar(w * s, method=method), q, atol=1e-5, rtol=0)


# ---- degenerate input and the rank rule-------------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("method", ["newton_schulz", "polar_express", "svd"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize("tol", [None, 1e-3])
def test_zero_matrix_gives_zeros(device, method, dtype, tol):
    q, info = polar_with_info(torch.zeros(2, 6, 4, dtype=dtype, device=device), method=method, tol=tol)
    assert torch.equal(q, torch.zeros_like(q))
    assert info.residual == 1.0 and info.rank == 0
    assert info.converged in (None, False)


@pytest.mark.parametrize("dtype", DTYPES)
def test_rank_deficient_svd_gives_partial_isometry(dtype):
    """Directions float64 cannot resolve (σ ≤ max(m, n)·ε₆₄·σ_max) are mapped to zero: U_r V_rᵀ."""
    gen = torch.Generator().manual_seed(29)
    w = torch.randn(3, 16, generator=gen, dtype=dtype)[[0, 1, 2, 0, 1, 2, 0, 1, 2, 0]]  # rank 3 in any dtype
    u, s, vh = np.linalg.svd(w.double().numpy(), full_matrices=False)
    q, info = polar_with_info(w, method="svd")
    assert info.rank == 3
    atol = {torch.float32: 1e-6, torch.float64: 1e-12}[dtype]
    np.testing.assert_allclose(q.double().numpy(), u[:, :3] @ vh[:3], atol=atol)
    assert info.residual <= atol


@pytest.mark.parametrize("method", ITERATIVE)
@pytest.mark.parametrize("dtype", DTYPES)
def test_rank_deficient_tolerance_judged_on_the_range(method, dtype):
    """Rank rule: the tolerance is judged on the r nonzero singular values; the iteration stops once the range has
    converged (well before the cap) and Q restricted to the range equals U_r V_rᵀ."""
    gen = torch.Generator().manual_seed(31)
    w = torch.randn(12, 4, generator=gen, dtype=torch.float64) @ torch.randn(4, 20, generator=gen, dtype=torch.float64)
    w = w.to(dtype)
    tol = TOL[dtype]
    q, info = polar_with_info(w, method=method, tol=tol, max_steps=200)
    assert info.rank == 4 and info.converged and info.steps < 60
    u, _, vh = np.linalg.svd(w.double().numpy(), full_matrices=False)
    qd = q.double().numpy()
    sigma = np.linalg.svd(qd, compute_uv=False)
    assert np.abs(sigma[:4] - 1).max() <= tol
    # On the range of W, Q maps v_i to u_i.
    np.testing.assert_allclose(qd @ vh[:4].T, u[:, :4], atol=100 * tol)


@pytest.mark.parametrize("method", ["newton_schulz", "polar_express", "svd"])
def test_small_but_resolved_singular_values_count_as_range(method):
    """σ_min/σ_max = 3e-6 lies below LAPACK's max(m, n)·ε = 7.6e-6 but above our 10·ε: full rank, fully orthogonal."""
    gen = torch.Generator().manual_seed(41)
    sigma = torch.logspace(0, math.log10(3e-6), 64, dtype=torch.float64)
    w = ((_orthogonal(64, 64, gen) * sigma) @ _orthogonal(64, 64, gen).T).float()
    q, info = polar_with_info(w, method=method, tol=1e-4)
    assert info.rank == 64 and info.residual <= 1e-4 and true_residual(q) <= 1e-4


def test_tolerance_mode_needs_no_svd_for_well_conditioned_input(monkeypatch):
    """Polar Express on a thin Gaussian converges on the free certificate alone; a zero matrix makes the certificate
    stall, which is when the ranks are looked up (once), and the iteration stops at once."""
    calls = []
    svdvals = torch.linalg.svdvals
    monkeypatch.setattr(torch.linalg, "svdvals", lambda x: calls.append(x.shape) or svdvals(x))
    w = torch.randn(40, 100, generator=torch.Generator().manual_seed(43))
    q = polar(w, method="polar_express", tol=1e-4)
    assert calls == [] and true_residual(q) <= 1e-4
    z = torch.stack([w, torch.zeros_like(w)])
    q = polar(z, method="polar_express", tol=1e-4, max_steps=100)
    assert calls[0] == (2, 40, 100) and len(calls) <= 5
    assert true_residual(q[0]) <= 1e-4 and torch.equal(q[1], torch.zeros_like(w))


@pytest.mark.parametrize("method", ["newton_schulz", "polar_express", "svd"])
def test_zero_rows_stay_exactly_zero(method):
    w = torch.randn(8, 12, generator=torch.Generator().manual_seed(37), dtype=torch.float64)
    w[[1, 5]] = 0.0
    q = polar(w, method=method, tol=None if method == "svd" else 1e-9)
    if method == "svd":  # LAPACK's singular vectors carry rounding; only the iterations keep exact zeros
        assert float(q[[1, 5]].abs().max()) < 1e-15
    else:
        assert torch.equal(q[[1, 5]], torch.zeros(2, 12, dtype=torch.float64))
    rest = q[[0, 2, 3, 4, 6, 7]]
    torch.testing.assert_close(rest @ rest.T, torch.eye(6, dtype=torch.float64), atol=1e-8, rtol=0)


# ---- bad input--------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("w", "match"),
    [
        (torch.ones(5), r"shape \(5,\)"),
        (torch.ones(0, 3), r"shape \(0, 3\)"),
        (torch.ones(2, 0, 3), r"shape \(2, 0, 3\)"),
        (torch.ones(3, 3, dtype=torch.int64), "torch.int64"),
        (torch.ones(3, 3, dtype=torch.complex64), "torch.complex64"),
        (np.ones((3, 3)), "ndarray"),
    ],
)
def test_bad_matrix_raises(w, match):
    with pytest.raises(ValueError, match=match):
        polar(w)
    with pytest.raises(ValueError, match=match):
        polar_with_info(w)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"method": "qr"}, "'qr'"),
        ({"steps": 0}, "steps.*0"),
        ({"steps": 2.5}, "steps.*2.5"),
        ({"tol": -1.0}, "tol.*-1.0"),
        ({"tol": 1.5}, "tol.*1.5"),
        ({"tol": math.nan}, "tol.*nan"),
        ({"max_steps": 0}, "max_steps.*0"),
        ({"check_every": 0}, "check_every.*0"),
    ],
)
def test_bad_options_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        polar(torch.eye(3), **kwargs)
    with pytest.raises(ValueError, match=match):
        check_polar_options(**kwargs)


# ---- property test----------------------------------------------------------------------------------------------------

_HYPO_DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    m=st.integers(1, 64),
    n=st.integers(1, 64),
    exponent=st.floats(-20, 20),
    dtype=st.sampled_from(_HYPO_DTYPES),
    kind=st.sampled_from(["gauss", "rank1", "zero"]),
    method=st.sampled_from(["newton_schulz", "polar_express", "svd"]),
    tol=st.sampled_from([None, 1e-3]),
    seed=st.integers(0, 2**16),
)
def test_polar_and_fire_never_produce_nan_or_inf(m, n, exponent, dtype, kind, method, tol, seed):
    gen = torch.Generator().manual_seed(seed)
    if kind == "gauss":
        w = torch.randn(m, n, generator=gen, dtype=torch.float64)
    elif kind == "rank1":
        w = torch.randn(m, 1, generator=gen, dtype=torch.float64) @ torch.randn(
            1, n, generator=gen, dtype=torch.float64
        )
    else:
        w = torch.zeros(m, n, dtype=torch.float64)
    w = (w * 10.0**exponent).to(dtype)
    assume(bool(torch.isfinite(w).all()))  # 1e20 does not fit in float16
    q, info = polar_with_info(w, method=method, tol=tol)
    assert bool(torch.isfinite(q).all()) and math.isfinite(info.residual)
    assert float(q.double().abs().max()) <= 1.5  # an (approximate) isometry has entries ≤ 1

    layer = nn.Linear(n, m).to(dtype)
    with torch.no_grad():
        layer.weight.copy_(w)
    wrapper = nn.Sequential(layer)
    fire_(wrapper, ["0"], method=method, tol=tol, measure=False)
    assert bool(torch.isfinite(layer.weight).all())


def test_range_error_and_check_range():
    # The one range check every constructor and flag uses: bounds, ints, bools, non-finite values, huge ints.
    assert range_error(1, 1) is None and range_error(10**400, 1, integer=True) is None
    assert range_error(1, 1, bounds="(]") == "a finite number > 1"
    assert (
        range_error(0.5, 0, 1, bounds="[)") is None
        and range_error(1.0, 0, 1, bounds="[)") == "a finite number in [0, 1)"
    )
    assert range_error(True, 0, integer=True) == "an integer >= 0" and range_error(1.5, 0, integer=True) is not None
    assert range_error(float("nan"), 0) is not None and range_error(float("inf"), 0) is not None
    assert (
        check_range("n", np.int64(3), 1, integer=True) == 3
        and type(check_range("n", np.int64(3), 1, integer=True)) is int
    )
    with pytest.raises(ValueError, match=r"^n must be an integer >= 1, got 0$"):
        check_range("n", 0, 1, integer=True)
