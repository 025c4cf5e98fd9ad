"""The polar-factor kernel shared by FIRE, the plasticity metrics and the tests (one copy, by design).

Pure tensor functions: tensor in, tensor out. Walking modules and choosing layers lives in `fire_rl.resets`.

The orthogonal polar factor of W = UΣVᵀ (thin SVD, shape (m, n)) is Q = UVᵀ: the isometry nearest to W in Frobenius
norm (orthogonal Procrustes), the solution of FIRE's problem min ‖W − W̃‖²_F s.t. W̃ is an isometry (Han et al.,
"FIRE", ICLR 2026, arXiv 2602.08040). Three ways to compute it are offered:

* ``"newton_schulz"`` — the official FIRE iteration (cubic Newton–Schulz from Frobenius normalisation), by default for
  a fixed 10 steps with no convergence check and no host sync.
* ``"polar_express"`` — the Polar Express quintics (Amsel, Persson, Musco, Gower 2025, arXiv 2505.16932, Algorithm 1),
  which converge in far fewer steps; the natural choice with a tolerance.
* ``"svd"`` — the exact factor from `torch.linalg.svd`, computed in float64 and cast back.

With ``tol`` the two iterations run until max|σ(Q) − 1| ≤ tol (checked every few steps, a hard cap on the steps).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

__all__ = [
    "FIRE_SCALES",
    "METHODS",
    "NS_COEFFS",
    "PE_COEFFS",
    "RANK_RTOL",
    "PolarInfo",
    "check_polar_options",
    "fire_scale",
    "from_kernel_slices",
    "kernel_slices",
    "numerical_rank",
    "polar",
    "polar_with_info",
    "work_dtype",
]

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


def fire_scale(weight_shape: Sequence[int], rule: str = "muon") -> float:
    """The scale c FIRE multiplies the orthogonal polar factor by, for a Linear or Conv2d weight.

    Rules (`FIRE_SCALES`):

    * ``"muon"`` (official FIRE code; the default of the paper recipes): Linear `(d_out, d_in)`: c = √(d_out/d_in).
      Conv2d `(C_out, C_in, k_h, k_w)`, whose k_h·k_w slices W[:, :, i, j] are orthogonalised one by one:
      c = √(C_out/C_in)/(k_h·k_w) (github.com/isaac7778/FIRE @ c37a0ac, rl/dqn/cleanrl/dqn_atari_resume.py,
      ``apply_fire``: ``np.sqrt(C_out / C_in) / kernel_size``).
    * ``"isometry"``: Linear as ``"muon"``; Conv2d c = √(C_out/C_in)/√(k_h·k_w), which is the Linear rule applied to
      the unfolded conv matrix W_u of shape (C_out, C_in·k_h·k_w): √(C_out/(C_in·k_h·k_w)).
    * ``"none"``: c = 1, the pure polar factor.

    What the conv rules do to the unfolded matrix. Up to a permutation of its columns (which changes no singular
    value) W_u = c·[Q_1, …, Q_P], P = k_h·k_w, every Q_p (C_out × C_in) a partial isometry after FIRE. Hence
    W_u W_uᵀ = c²·Σ_p Q_p Q_pᵀ and the trace identity ‖W_u‖²_F = c²·P·min(C_out, C_in), so, with s = min(C_out,
    C_in·P) singular values σ_k of W_u:

    * C_out ≤ C_in (each slice wide, Q_p Q_pᵀ = I): W_u W_uᵀ = c²·P·I, every σ_k = c·√P exactly. ``"isometry"``:
      σ_k = √(C_out/C_in) (1 for C_out = C_in: orthonormal rows); ``"muon"``: √(C_out/C_in)/√P.
    * C_in < C_out < C_in·P (each slice tall, W_u wide; the Nature CNN's first two convs): Σ_p Q_p Q_pᵀ is a sum of P
      rank-C_in projections of R^C_out, so the σ_k depend on how the slices' ranges overlap, but their mean square
      is exact: mean σ_k² = c²·P·C_in/C_out, i.e. RMS σ = 1 for ``"isometry"`` (an isometry on average) and
      1/√P for ``"muon"``; and σ_max ≤ c·√P = √(C_out/C_in) (``"isometry"``).
    * C_out ≥ C_in·P (W_u tall): RMS σ over the C_in·P singular values = c, i.e. √(C_out/(C_in·P)) for ``"isometry"``,
      what the Linear rule gives every singular value of a tall Linear; exact for all σ_k only if the slices' ranges
      are mutually orthogonal.

    So ``"muon"`` leaves the unfolded conv √(k_h·k_w) below the ``"isometry"`` level: RMS σ = 1/8, 1/4, 1/3 for the
    Nature CNN's convs (8×8, 4×4, 3×3 kernels). The strided conv operator's gain (its spectral norm on the 84×84
    input) is then about 0.22, 0.40, 0.59, against about 1 at PyTorch's default init; ``"isometry"`` multiplies it by
    8, 4, 3, to about 1.7: patches overlap (stride 4, 2, 1), so the operator reads each input pixel several times and
    its norm exceeds the unfolded matrix's (tests/test_resets.py ``test_fire_scale_muon_conv_operator_gains``).

    Args:
        weight_shape: `(d_out, d_in)` or `(C_out, C_in, k_h, k_w)`.
        rule: ``"muon"`` (default), ``"isometry"`` or ``"none"``.

    Raises:
        ValueError: a weight that is neither 2-D nor 4-D; an unknown `rule`.
    """
    if rule not in FIRE_SCALES:
        raise ValueError(f"FIRE's scale rule must be one of {list(FIRE_SCALES)}, got {rule!r}")
    if len(weight_shape) not in (2, 4):
        raise ValueError(
            f"FIRE's scale rule is defined for 2-D (Linear) and 4-D (Conv2d) weights, got shape {tuple(weight_shape)}"
        )
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
    """The dtype the kernels and metrics compute in: float64 stays float64, every other floating dtype is computed in
    float32 (half-precision Gram matrices lose the small singular values the iteration must grow)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


@dataclass(frozen=True)
class PolarInfo:
    """How a polar factor was computed and how close to an isometry it is.

    Attributes:
        method: ``"newton_schulz"``, ``"polar_express"`` or ``"svd"``.
        steps: iterations run (0 for ``"svd"``).
        residual: max|σᵢ(Q) − 1| of the returned tensor (in its own dtype), over the singular values that belong to
            the range of W (the first r = `rank` of each matrix, see the rank rule in `polar`), maximised over the
            batch; 1.0 when some matrix of the batch is zero. Exact: `torch.linalg.svdvals` of the result.
        rank: the smallest numerical rank of W over the batch (`numerical_rank`); min(m, n) for full-rank input.
        converged: ``residual <= tol`` when a tolerance was given, else None.
    """

    method: str
    steps: int
    residual: float
    rank: int
    converged: bool | None


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_polar_options(
    method: str = "newton_schulz",
    steps: int = 10,
    tol: float | None = None,
    max_steps: int = 100,
    check_every: int = 2,
) -> None:
    """Validate the options of `polar` without a tensor (so resets can refuse bad options before touching weights).

    Raises:
        ValueError: `method` not in `METHODS`; `steps`, `max_steps` or `check_every` not an int ≥ 1; `tol` neither None
            nor a finite float in (0, 1).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")
    for name, value in (("steps", steps), ("max_steps", max_steps), ("check_every", check_every)):
        if not _is_int(value) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    if tol is not None:
        if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not (math.isfinite(tol) and 0 < tol < 1):
            raise ValueError(f"tol must be None or a float in (0, 1) (a bound on max|sigma - 1|), got {tol!r}")


def _check_matrix(W: object) -> None:
    if not isinstance(W, torch.Tensor):
        raise ValueError(f"W must be a torch.Tensor, got {type(W).__name__}")
    if W.dim() < 2:
        raise ValueError(f"W must have shape (..., m, n) with at least 2 dimensions, got shape {tuple(W.shape)}")
    if W.numel() == 0:
        raise ValueError(f"W must be non-empty, got shape {tuple(W.shape)}")
    if not W.is_floating_point():
        raise ValueError(
            f"W must have a real floating dtype (float16, bfloat16, float32, float64), got {W.dtype} "
            f"(shape {tuple(W.shape)})"
        )


def _canonical(W: torch.Tensor, dtype: torch.dtype | None = None) -> tuple[torch.Tensor, bool]:
    """(..., m, n) -> (B, p, q) in `dtype` (default: the working dtype) with p = min(m, n) ≤ q, entries scaled into
    [−1, 1].

    The wide orientation makes XXᵀ the smaller Gram matrix. Dividing by max|W| first is exact up to one rounding and
    keeps ‖W‖_F from overflowing (float32 entries of 1e20) or underflowing (1e-20); it changes neither U nor V.
    """
    m, n = W.shape[-2:]
    X = W.detach().reshape(-1, m, n).to(dtype or work_dtype(W.dtype))  # (B, m, n)
    transposed = m > n
    if transposed:
        X = X.mT  # (B, n, m)
    amax = X.abs().amax(dim=(-2, -1), keepdim=True)  # (B, 1, 1)
    X = X / amax.clamp_min(torch.finfo(X.dtype).tiny)
    return X, transposed


# Singular values at or below RANK_RTOL·ε·σ_max count as zero. Rounding the entries of a rank-deficient matrix to the
# working dtype leaves its null directions at about ε·σ_max; LAPACK's and NumPy's max(m, n)·ε would also drop
# well-resolved directions of square float32 weights (a 512×512 Gaussian often has σ_min/σ_max below 512·ε = 6e-5).
RANK_RTOL = 10.0


def numerical_rank(W: torch.Tensor) -> torch.Tensor:
    """Numerical rank of each matrix of a batch: #{σᵢ > 10·ε·σ_max}, ε the machine epsilon of the working dtype
    (float32 for half inputs); the rank rule of `polar`.

    Args:
        W: (..., m, n) real floating.

    Returns:
        (...) int64 tensor on `W`'s device (a zero matrix has rank 0). Computed with `torch.linalg.svdvals`.

    Raises:
        ValueError: as `polar` for bad `W`.
    """
    _check_matrix(W)
    X, _ = _canonical(W)
    return _rank(torch.linalg.svdvals(X)).reshape(W.shape[:-2])


def _nonzero(sigma: torch.Tensor, eps: float | None = None) -> torch.Tensor:
    """sigma (B, p) descending -> (B, p) bool: the singular values that count as nonzero (ε: `eps`, default the
    machine epsilon of sigma's dtype)."""
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
    """The exact singular values of X on W's range (`_range_residual`) within tol; zero matrices are left out, as
    they have no range to converge on."""
    dev = _range_residual(torch.linalg.svdvals(X), rank)
    return bool(torch.where(rank > 0, dev <= tol, torch.ones_like(rank, dtype=torch.bool)).all())


def _polar(
    W: torch.Tensor, method: str, steps: int, tol: float | None, max_steps: int, check_every: int, info: bool
) -> tuple[torch.Tensor, PolarInfo | None]:
    _check_matrix(W)
    check_polar_options(method, steps, tol, max_steps, check_every)
    X, transposed = _canonical(W)  # (B, p, q), p ≤ q
    X_in = X
    rank = _rank(torch.linalg.svdvals(X)) if info else None  # (B,)

    done = 0
    if method == "svd":
        # float64 from the input on: a float32 SVD loses the singular vectors of small, close singular values (errors
        # ~ε₃₂·σ_max/gap), which an ill-conditioned weight has many of. The rank rule keeps the working dtype's ε.
        X64, _ = _canonical(W, torch.float64)
        U, S, Vh = torch.linalg.svd(X64, full_matrices=False)  # (B, p, p), (B, p), (B, p, q)
        keep = _nonzero(S, torch.finfo(X.dtype).eps).to(S.dtype).unsqueeze(-2)  # (B, 1, p)
        X = ((U * keep) @ Vh).to(X.dtype)  # the rank rule: U_r V_rᵀ
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
    return Q, PolarInfo(
        method=method,
        steps=done,
        residual=residual,
        rank=int(rank.amin()),
        converged=None if tol is None else residual <= tol,
    )


def polar(
    W: torch.Tensor,
    method: str = "newton_schulz",
    steps: int = 10,
    tol: float | None = None,
    max_steps: int = 100,
    check_every: int = 2,
) -> torch.Tensor:
    """Orthogonal polar factor Q ≈ UVᵀ of W = UΣVᵀ, batched over leading dims (FIRE, arXiv 2602.08040).

    Target: the isometry nearest to W, W(WᵀW)^(−1/2) = UVᵀ (thin SVD), so QᵀQ = I for tall W and QQᵀ = I for wide W.
    Every matrix of the batch is orthogonalised on its own; a conv kernel's per-position slices go through as one
    call of shape (k_h·k_w, C_out, C_in).

    Iterations (both run on the wide orientation, X of shape (p, q) with p = min(m, n), so the Gram matrix XXᵀ is the
    smaller one, p × p; a tall W is transposed before and after):

    * ``"newton_schulz"`` (official FIRE code): X₀ = W/‖W‖_F, Xₖ₊₁ = 1.5·Xₖ − 0.5·(XₖXₖᵀ)Xₖ. Every singular value
      starts in (0, 1] and follows x ← 1.5x − 0.5x³ (fixed point 1); small ones grow only ~1.5× per step. The default
      10 steps (the paper's, no convergence check) orthogonalise thin random matrices but leave the smallest
      singular values of square or ill-conditioned ones far below 1: a 512×512 Gaussian keeps σ_min ≈ 0.002, i.e.
      max|σ − 1| ≈ 1 (tests/test_polar.py ``test_ten_steps_leave_512_square_unconverged``). Use
      `polar_with_info` to see the residual.
    * ``"polar_express"`` (Amsel et al. 2025, arXiv 2505.16932, Algorithm 1): Xₖ₊₁ = aₖXₖ + bₖ(XₖXₖᵀ)Xₖ + cₖ(XₖXₖᵀ)²Xₖ
      with the step-dependent coefficients `PE_COEFFS` (first seven divided by the 1.01 safety factor, then
      (1.875, −1.25, 0.375) repeated), from X₀ = W/(1.01·‖(WWᵀ)²‖_F^¼) after Frobenius normalisation (a guaranteed
      bound on ‖W‖₂ that reuses the first step's products). To max|σ − 1| ≤ 1e-3 in float32: about 7 steps for random
      rectangular, 9 for random square, 11 for singular values spread over four decades (cubic: 12, 28, 30).
    * ``"svd"``: exact UVᵀ from `torch.linalg.svd` in float64 (from the input on), cast back to the working dtype:
      accurate to that dtype's rounding even for singular values spread over many decades; `steps`, `tol` are
      ignored.

    Tolerance mode (``tol`` given, iterations only; `steps` is then ignored): iterate until max|σ − 1| ≤ tol, checking
    every `check_every` steps and stopping after `max_steps` whether converged or not. The check is the free
    certificate ‖XXᵀ − I‖_F ≥ max|σ² − 1| ≥ max|σ − 1| (XXᵀ is computed for the next step anyway), one host sync per
    check; reaching a small tol may take one check more than the true residual needs. Float32 bottoms out near 1e-6
    and float64 near 1e-14; a tol below that runs to `max_steps`. The fixed-step path has no host sync at all.

    Rank rule: the polar factor is unique only on the range of W. Singular
    values σᵢ ≤ 10·ε·σ_max count as zero (`numerical_rank`: rounding leaves a null direction near ε·σ_max); the
    tolerance and the reported residual are judged on the other r singular values only. ``"svd"`` returns the
    partial isometry U_r V_rᵀ (zero on the null space, so a zero matrix gives zeros). The iterations give U_r V_rᵀ in
    exact arithmetic; in floating point the null-space directions hold whatever the iteration made of rounding noise
    (small after 10 cubic steps, not reproducible across devices, up to 1 after many). Exact zero rows/columns stay
    exactly zero. In tolerance mode the ranks are found only if the certificate stalls (a check that does not improve
    it by 10%: null directions, or the slow phase of an ill-conditioned W), with one `torch.linalg.svdvals` of W;
    rank-deficient batches are then checked with `svdvals` of the iterate instead of the certificate. Cubic
    Newton–Schulz's slow start usually pays that SVD; Polar Express on well-conditioned W does not.

    Dtypes: float32 and float64 are computed in their own precision; float16 and bfloat16 in float32 and cast back.
    Scale: entries are divided by max|W| before anything else, so any finite scale (1e-20 … 1e20 in float32) works.
    Runs under no gradient tracking (the result is detached from W).

    Args:
        W: (..., m, n) real floating tensor, CPU or CUDA; not modified.
        method: ``"newton_schulz"`` (default), ``"polar_express"`` or ``"svd"``.
        steps: fixed number of iterations when `tol` is None (default 10, the paper's).
        tol: None (fixed steps) or a bound in (0, 1) on max|σ − 1|.
        max_steps: the hard cap on iterations in tolerance mode.
        check_every: check the tolerance every this many iterations (each check is a host sync).

    Returns:
        Q: same shape, dtype and device as W; zeros where W is zero.

    Raises:
        ValueError: W not a tensor, fewer than 2 dimensions, empty, or not real floating (the message gives the shape
            and dtype); bad options (`check_polar_options`).
        torch.linalg.LinAlgError: NaN/Inf in W where an SVD is taken (``"svd"``, `polar_with_info`, a tolerance-mode
            rank lookup); the iterations themselves return NaN for such input (no check, to stay sync-free).
    """
    with torch.no_grad():
        return _polar(W, method, steps, tol, max_steps, check_every, info=False)[0]


def polar_with_info(
    W: torch.Tensor,
    method: str = "newton_schulz",
    steps: int = 10,
    tol: float | None = None,
    max_steps: int = 100,
    check_every: int = 2,
) -> tuple[torch.Tensor, PolarInfo]:
    """`polar` plus how it went: (Q, `PolarInfo`(method, steps, residual, rank, converged)).

    The residual is the true max|σ − 1| of the returned Q on W's range (rank rule of `polar`), from one
    `torch.linalg.svdvals` after the loop, plus one more on W for the ranks: two SVDs' cost and one host sync on top of
    `polar` (the iteration itself is unchanged).

    Args / Raises: as `polar`.
    """
    with torch.no_grad():
        Q, info = _polar(W, method, steps, tol, max_steps, check_every, info=True)
    assert info is not None, "info=True always returns a PolarInfo"
    return Q, info
