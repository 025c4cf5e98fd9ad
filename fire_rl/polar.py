"""The polar-factor kernel shared by FIRE, the plasticity metrics and the tests (one copy, by design).

Pure tensor functions; walking modules and choosing layers lives in `fire_rl.resets`. The orthogonal polar factor of
W = UΣVᵀ is Q = UVᵀ, the isometry nearest to W in Frobenius norm: the solution of FIRE's problem
min ‖W − W̃‖²_F s.t. W̃ is an isometry (Han et al., "FIRE", ICLR 2026, arXiv 2602.08040).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from fire_rl.validation import check_range

METHODS = ("newton_schulz", "polar_express", "svd")

# Cubic Newton–Schulz X ← a·X + b·(XXᵀ)X (official FIRE code: github.com/isaac7778/FIRE @ c37a0ac,
# rl/dqn/cleanrl/dqn_atari_resume.py ``apply_fire`` and rl/sac/scale_rl/agents/simba/projection.py). Not Muon's
# quintic (3.4445, −4.7750, 2.0315), which the FIRE authors avoid because it leaves singular values away from 1.
NS_COEFFS = (1.5, -0.5)

# Polar Express, degree 5 (arXiv 2505.16932, Algorithm 1): X ← a·X + b·(XXᵀ)X + c·(XXᵀ)²X with step-dependent (a, b, c);
# the last triple repeats forever. The first seven are evaluated at x/1.01 (a/1.01, b/1.01³, c/1.01⁵), the paper's
# safety factor against rounding pushing singular values past the interval the polynomials were fitted on.
_PE_RAW = (
    (8.28721201814563, -23.595886519098837, 17.300387312530933),
    (4.107059111542203, -2.9478499167379106, 0.5448431082926601),
    (3.9486908534822946, -2.908902115962949, 0.5518191394370137),
    (3.3184196573706015, -2.488488024314874, 0.51004894012372),
    (2.300652019954817, -1.6689039845747493, 0.4188073119525673),
    (1.891301407787398, -1.2679958271945868, 0.37680408948524835),
    (1.8750014808534479, -1.2500016453999487, 0.3750001645474248),
    (1.875, -1.25, 0.375),
)
_PE_SAFETY = 1.01
PE_COEFFS = tuple((a / _PE_SAFETY, b / _PE_SAFETY**3, c / _PE_SAFETY**5) for a, b, c in _PE_RAW[:-1]) + (_PE_RAW[-1],)

FIRE_SCALES = ("muon", "isometry", "none")

# Singular values at or below RANK_RTOL·ε·σ_max count as zero. Rounding the entries of a rank-deficient matrix to the
# working dtype leaves its null directions at about ε·σ_max; LAPACK's and NumPy's max(m, n)·ε would also drop
# well-resolved directions of square float32 weights (a 512×512 Gaussian often has σ_min/σ_max below 512·ε = 6e-5).
RANK_RTOL = 10.0


def fire_scale(weight_shape: Sequence[int], rule: str = "muon") -> float:
    """The scale c FIRE multiplies the orthogonal polar factor by, for a Linear or Conv2d weight.

    * ``"muon"`` (official FIRE code, github.com/isaac7778/FIRE @ c37a0ac, rl/dqn/cleanrl/dqn_atari_resume.py
      ``apply_fire``: ``np.sqrt(C_out / C_in) / kernel_size``): Linear (d_out, d_in): c = √(d_out/d_in); Conv2d
      (C_out, C_in, k_h, k_w), whose k_h·k_w slices are orthogonalised one by one: c = √(C_out/C_in)/(k_h·k_w).
    * ``"isometry"``: Linear as ``"muon"``; Conv2d c = √(C_out/C_in)/√(k_h·k_w), the Linear rule of the unfolded
      (C_out, C_in·k_h·k_w) matrix W_u.
    * ``"none"``: c = 1.

    With P = k_h·k_w partial-isometry slices, ‖W_u‖²_F = c²·P·min(C_out, C_in): for C_out ≤ C_in every singular value of
    W_u is c·√P; for C_in < C_out < C_in·P (the Nature CNN's first two convs) their RMS is c·√(P·C_in/C_out), i.e. 1
    under ``"isometry"``. So ``"muon"`` leaves the unfolded convs √P below the isometry (RMS σ = 1/8, 1/4, 1/3 for the
    Nature CNN's 8×8, 4×4, 3×3 kernels; conv operator gains 0.22, 0.40, 0.59 on 84×84 input against about 1 at
    PyTorch's init; tests/test_resets.py ``test_fire_scale_muon_conv_operator_gains``).

    Raises:
        ValueError: a weight that is neither 2-D nor 4-D; an unknown `rule`.
    """
    if rule not in FIRE_SCALES:
        raise ValueError(f"FIRE's scale rule must be one of {list(FIRE_SCALES)}, got {rule!r}")
    if len(weight_shape) not in (2, 4):
        raise ValueError(f"FIRE's scale rule needs a 2-D or 4-D weight, got shape {tuple(weight_shape)}")
    if rule == "none":
        return 1.0
    d_out, d_in = weight_shape[:2]
    if len(weight_shape) == 2:
        return math.sqrt(d_out / d_in)
    positions = weight_shape[2] * weight_shape[3]
    return math.sqrt(d_out / d_in) / (positions if rule == "muon" else math.sqrt(positions))


def kernel_slices(weight: torch.Tensor) -> torch.Tensor:
    """The matrices FIRE orthogonalises: (d_out, d_in) -> (1, d_out, d_in); a conv kernel (C_out, C_in, k_h, k_w) ->
    (k_h·k_w, C_out, C_in), one slice per kernel position (a view when possible). Inverse: `from_kernel_slices`."""
    if weight.dim() == 2:
        return weight.unsqueeze(0)
    c_out, c_in, kh, kw = weight.shape
    # (C_out, C_in, k_h, k_w) -> (k_h, k_w, C_out, C_in) -> (k_h·k_w, C_out, C_in)
    return weight.permute(2, 3, 0, 1).reshape(kh * kw, c_out, c_in)


def from_kernel_slices(slices: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Inverse of `kernel_slices`: (P, d_out, d_in) slices back to a weight of `shape` (2-D or 4-D)."""
    if len(shape) == 2:
        return slices.reshape(shape)
    c_out, c_in, kh, kw = shape
    return slices.reshape(kh, kw, c_out, c_in).permute(2, 3, 0, 1)  # back to (C_out, C_in, k_h, k_w)


def work_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64; every other dtype is computed in float32 (half-precision Gram matrices lose the small
    singular values the iteration must grow)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


@dataclass(frozen=True)
class PolarInfo:
    """How a polar factor was computed: `method`; `steps` run (0 for ``"svd"``); `residual` = max|σᵢ(Q) − 1| of the
    returned tensor over the r = `rank` singular values on W's range, maximised over the batch (1.0 if a matrix is
    zero; exact, from `torch.linalg.svdvals`); `rank` = the smallest numerical rank in the batch; `converged` =
    residual ≤ tol, or None without a tolerance."""

    method: str
    steps: int
    residual: float
    rank: int
    converged: bool | None


def check_polar_options(
    method: str = "newton_schulz", steps: int = 10, tol: float | None = None, max_steps: int = 100, check_every: int = 2
) -> None:
    """Validate the options of `polar` without a tensor.

    Raises:
        ValueError: `method` not in `METHODS`; `steps`, `max_steps` or `check_every` not an int ≥ 1; `tol` neither None
            nor a finite float in (0, 1).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")
    for name, value in (("steps", steps), ("max_steps", max_steps), ("check_every", check_every)):
        check_range(name, value, 1, integer=True)
    if tol is not None:
        check_range("tol (a bound on max|sigma - 1|)", tol, 0, 1, "()")


def _check_matrix(W: object) -> None:
    if not isinstance(W, torch.Tensor):
        raise ValueError(f"W must be a torch.Tensor, got {type(W).__name__}")
    if W.dim() < 2 or W.numel() == 0 or not W.is_floating_point():
        raise ValueError(
            f"W must be a non-empty (..., m, n) real floating tensor, got shape {tuple(W.shape)} and dtype {W.dtype}"
        )


def _canonical(W: torch.Tensor, dtype: torch.dtype | None = None) -> tuple[torch.Tensor, bool]:
    """(..., m, n) -> (B, p, q) in `dtype` (default: the working dtype) with p = min(m, n) ≤ q, entries scaled into
    [−1, 1], and whether it was transposed.

    The wide orientation makes XXᵀ the smaller Gram matrix. Dividing by max|W| first is exact up to one rounding and
    keeps ‖W‖_F from overflowing (float32 entries of 1e20) or underflowing (1e-20); it changes neither U nor V.
    """
    m, n = W.shape[-2:]
    X = W.detach().reshape(-1, m, n).to(dtype or work_dtype(W.dtype))  # (B, m, n)
    transposed = m > n
    if transposed:
        X = X.mT  # (B, n, m)
    amax = X.abs().amax(dim=(-2, -1), keepdim=True)  # (B, 1, 1)
    return X / amax.clamp_min(torch.finfo(X.dtype).tiny), transposed


def _nonzero(sigma: torch.Tensor, eps: float | None = None) -> torch.Tensor:
    """sigma (B, p) descending -> (B, p) bool: σ > RANK_RTOL·ε·σ_max (ε: `eps`, default that of sigma's dtype)."""
    eps = torch.finfo(sigma.dtype).eps if eps is None else eps
    return sigma > sigma[:, :1] * (RANK_RTOL * eps)


def _rank(sigma: torch.Tensor) -> torch.Tensor:
    """sigma (B, p) descending -> (B,) int64 numerical rank."""
    return _nonzero(sigma).sum(dim=-1)


def _range_residual(sigma: torch.Tensor, rank: torch.Tensor) -> torch.Tensor:
    """max_{i < rank_b} |σ_bi − 1| per matrix: sigma (B, p) descending, rank (B,) -> (B,); 1 for rank 0."""
    idx = torch.arange(sigma.shape[-1], device=sigma.device)
    dev = torch.where(idx < rank.unsqueeze(-1), (sigma - 1.0).abs(), torch.zeros_like(sigma))
    return torch.where(rank > 0, dev.amax(dim=-1), torch.ones_like(dev[:, 0]))


def _ns_normalise(X: torch.Tensor) -> torch.Tensor:
    """X₀ = X/‖X‖_F per matrix (σ ≤ 1); a zero matrix stays zero."""
    fro = torch.linalg.matrix_norm(X, keepdim=True)  # (B, 1, 1)
    return X / fro.clamp_min(torch.finfo(X.dtype).tiny)


def _pe_normalise(X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """X₀ = X/(1.01·‖(XXᵀ)²‖_F^¼), with XXᵀ and (XXᵀ)² returned rescaled for reuse in the first step.

    ‖(XXᵀ)²‖_F^¼ = (Σσᵢ⁸)^⅛ ≥ σ_max is a guaranteed bound (power-iteration estimates undershoot ‖X‖₂ and make the
    quintics diverge). Frobenius normalisation first keeps σ⁸ in range.
    """
    X = _ns_normalise(X)
    A = X @ X.mT  # (B, p, p)
    A2 = A @ A
    bound = torch.linalg.matrix_norm(A2, keepdim=True).pow(0.25)  # (B, 1, 1)
    # A zero matrix has bound 0; dividing by 1 keeps it zero instead of 0/0.
    d = torch.where(bound > 0, _PE_SAFETY * bound, torch.ones_like(bound))
    return X / d, A / d**2, A2 / d**4


def _gram(X: torch.Tensor, quintic: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    A = X @ X.mT
    return A, (A @ A if quintic else None)


def _step(X: torch.Tensor, A: torch.Tensor, A2: torch.Tensor | None, k: int) -> torch.Tensor:
    if A2 is None:
        a, b = NS_COEFFS
        return torch.baddbmm(X, A, X, beta=a, alpha=b)  # a·X + b·A X
    a, b, c = PE_COEFFS[min(k, len(PE_COEFFS) - 1)]
    B = torch.add(b * A, A2, alpha=c)  # b·A + c·A²
    return torch.baddbmm(X, B, X, beta=a)  # a·X + B X


def _certificate(A: torch.Tensor) -> float:
    """max over the batch of ‖XXᵀ − I‖_F ≥ max|σ² − 1| ≥ max|σ − 1|: free, since XXᵀ is needed for the next step."""
    return float(torch.linalg.matrix_norm(A - torch.eye(A.shape[-1], dtype=A.dtype, device=A.device)).amax())


def _range_converged(X: torch.Tensor, rank: torch.Tensor, tol: float) -> bool:
    """The exact singular values of X on W's range within tol; zero matrices (no range) are left out."""
    dev = _range_residual(torch.linalg.svdvals(X), rank)
    return bool(torch.where(rank > 0, dev <= tol, torch.ones_like(rank, dtype=torch.bool)).all())


def _polar(
    W: torch.Tensor, method: str, steps: int, tol: float | None, max_steps: int, check_every: int, info: bool = False
) -> tuple[torch.Tensor, PolarInfo | None]:
    _check_matrix(W)
    check_polar_options(method, steps, tol, max_steps, check_every)
    X, transposed = _canonical(W)  # (B, p, q), p ≤ q
    X_in = X
    rank = _rank(torch.linalg.svdvals(X)) if info and method != "svd" else None  # (B,)

    done = 0
    if method == "svd":
        # float64 from the input on: a float32 SVD loses the singular vectors of small, close singular values (errors
        # ~ε₃₂·σ_max/gap), which an ill-conditioned weight has many of. The given entries are exact in float64, so
        # only what float64 cannot resolve counts as zero: σ ≤ q·ε₆₄·σ_max (LAPACK's and NumPy's matrix_rank rule).
        X64, _ = _canonical(W, torch.float64)
        U, S, Vh = torch.linalg.svd(X64, full_matrices=False)  # (B, p, p), (B, p), (B, p, q)
        nonzero = _nonzero(S, X64.shape[-1] * torch.finfo(torch.float64).eps / RANK_RTOL)  # (B, p)
        X = ((U * nonzero.to(S.dtype).unsqueeze(-2)) @ Vh).to(X.dtype)  # U_r V_rᵀ
        rank = nonzero.sum(dim=-1) if info else None
    else:
        quintic = method == "polar_express"
        if quintic:
            X, A, A2 = _pe_normalise(X)
        else:
            X = _ns_normalise(X)
            A, A2 = _gram(X, quintic)
        if tol is None:
            for k in range(steps):
                if k > 0:
                    A, A2 = _gram(X, quintic)
                X = _step(X, A, A2, k)
            done = steps
        else:
            p = X.shape[-2]
            full_rank = None if rank is None else bool((rank == p).all())
            previous = math.inf
            while True:
                if done > 0:
                    A, A2 = _gram(X, quintic)
                if (done % check_every == 0 and done > 0) or done >= max_steps:
                    if full_rank is not False:
                        cert = _certificate(A)
                        if cert <= tol:
                            break
                        # A stalled certificate means null directions (each adds ~1 to ‖XXᵀ − I‖²_F) or a slow phase
                        # of ill-conditioned ones: only then pay one SVD of the input to learn which it is.
                        if full_rank is None and cert > 0.9 * previous:
                            rank = _rank(torch.linalg.svdvals(X_in))
                            full_rank = bool((rank == p).all())
                        previous = cert
                    if full_rank is False and _range_converged(X, rank, tol):
                        break
                    if done >= max_steps:
                        break
                X = _step(X, A, A2, done)
                done += 1

    if transposed:
        X = X.mT
    Q = X.reshape(W.shape).to(W.dtype)
    if not info:
        return Q, None
    # The residual of what the caller receives, so a cast back to float16/bfloat16 counts.
    sigma = torch.linalg.svdvals(Q.detach().reshape(-1, *W.shape[-2:]).to(work_dtype(W.dtype)))  # (B, p)
    residual = float(_range_residual(sigma, rank).amax())
    converged = None if tol is None else residual <= tol
    return Q, PolarInfo(method=method, steps=done, residual=residual, rank=int(rank.amin()), converged=converged)


def polar(
    W: torch.Tensor,
    method: str = "newton_schulz",
    steps: int = 10,
    tol: float | None = None,
    max_steps: int = 100,
    check_every: int = 2,
) -> torch.Tensor:
    """Orthogonal polar factor Q ≈ UVᵀ of W = UΣVᵀ (thin SVD), each matrix of the batch on its own; QᵀQ = I for tall W,
    QQᵀ = I for wide W.

    The iterations run on the wide orientation X (p × q, p = min(m, n); a tall W is transposed before and after):

    * ``"newton_schulz"`` (official FIRE code): X₀ = W/‖W‖_F, Xₖ₊₁ = 1.5·Xₖ − 0.5·(XₖXₖᵀ)Xₖ; each σ follows
      x ← 1.5x − 0.5x³ from (0, 1], small ones growing only ~1.5× per step. The paper's 10 steps (no convergence
      check) orthogonalise thin random matrices but leave square or ill-conditioned ones unconverged: a 512×512
      Gaussian keeps σ_min ≈ 0.002 (tests/test_polar.py ``test_ten_steps_leave_512_square_unconverged``).
    * ``"polar_express"`` (Amsel et al. 2025, arXiv 2505.16932, Algorithm 1): Xₖ₊₁ = aₖXₖ + bₖ(XₖXₖᵀ)Xₖ +
      cₖ(XₖXₖᵀ)²Xₖ with `PE_COEFFS`, from X₀ = W/(1.01·‖(WWᵀ)²‖_F^¼) after Frobenius normalisation. To max|σ − 1| ≤ 1e-3
      in float32: about 7 steps for random rectangular, 9 for random square, 11 for σ over four decades (cubic: 12,
      28, 30).
    * ``"svd"``: exact UVᵀ from `torch.linalg.svd` in float64, cast back; `steps` and `tol` are ignored.

    Tolerance mode (``tol`` given, iterations only; `steps` ignored): iterate until max|σ − 1| ≤ tol, checking every
    `check_every` steps (one host sync each; the fixed-step path has none) with the free certificate
    ‖XXᵀ − I‖_F ≥ max|σ − 1|, and stop after `max_steps` regardless. Float32 bottoms out near 1e-6, float64 near 1e-14.

    Rank rule: for the iterations σᵢ ≤ RANK_RTOL·ε·σ_max (ε of the working dtype) count as zero, and tolerance and
    residual are judged on the other r; they leave rounding noise in null directions (exact zero rows/columns stay
    zero). ``"svd"`` is the exact polar factor of the given entries: it drops only the directions float64 cannot
    resolve, σᵢ ≤ max(m, n)·ε₆₄·σ_max, and returns U_r V_rᵀ, a partial isometry that maps those directions to zero
    (a zero matrix gives zeros; a float32 matrix rounded from a rank-deficient one is full rank and keeps them all).
    In tolerance mode the ranks are looked up (one `svdvals` of W) only if the certificate stalls (improves by less
    than 10% between checks); rank-deficient batches are then checked with `svdvals` of the iterate.

    Entries are divided by max|W| first, so any finite scale works. float16 and bfloat16 are computed in float32 and
    cast back. The result is detached from W.

    Args:
        W: (..., m, n) real floating tensor, CPU or CUDA; not modified.
        method: ``"newton_schulz"`` (default), ``"polar_express"`` or ``"svd"``.
        steps: iterations when `tol` is None (default 10, the paper's).
        tol: None or a bound in (0, 1) on max|σ − 1|.
        max_steps, check_every: the cap on iterations and the check interval in tolerance mode.

    Returns:
        Q: same shape, dtype and device as W.

    Raises:
        ValueError: W not a non-empty (..., m, n) real floating tensor (the message gives shape and dtype); bad options
            (`check_polar_options`).
        torch.linalg.LinAlgError: NaN/Inf in W where an SVD is taken (``"svd"``, `polar_with_info`, a rank lookup); the
            iterations themselves return NaN (no check, to stay sync-free).
    """
    with torch.no_grad():
        return _polar(W, method, steps, tol, max_steps, check_every)[0]


def polar_with_info(
    W: torch.Tensor,
    method: str = "newton_schulz",
    steps: int = 10,
    tol: float | None = None,
    max_steps: int = 100,
    check_every: int = 2,
) -> tuple[torch.Tensor, PolarInfo]:
    """`polar` plus a `PolarInfo`, at the cost of two more SVDs (of W for the ranks, of Q for the residual) and one host
    sync; the iteration is unchanged. Arguments and Raises: as `polar`."""
    with torch.no_grad():
        Q, info = _polar(W, method, steps, tol, max_steps, check_every, info=True)
    assert info is not None, "info=True always returns a PolarInfo"
    return Q, info
