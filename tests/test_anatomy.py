"""scripts/anatomy.py on real tiny checkpoints: numbers checked against what is computed here from the checkpoint itself
(θ₀, the SVD of the conv kernels, the scalar Newton–Schulz map), and the Hessian power iteration against a dense
Hessian.

The DQN checkpoint comes from a real `agents/dqn_atari.py` run on ALE/Breakout-v5 (300 env steps, learning from step
100: 200 gradient updates, so the weights have left θ₀), saved with its replay buffer; the SAC one from
`agents/sac_simba.py` on Humanoid-v5 at tiny widths. The anatomy runs as a subprocess, as a user runs it.
"""

from __future__ import annotations

import importlib.util
import math
import os
import subprocess
import sys

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from agent_utils import ROOT, run_agent
from torch import nn

from fire_rl.checkpoint import load_checkpoint, save_checkpoint
from fire_rl.polar import NS_COEFFS, fire_scale, kernel_slices

TINY = ["--total-timesteps", "300", "--learning-starts", "100", "--buffer-size", "1000", "--metrics-every", "0",
        "--checkpoint-every", "0", "--save-buffer"]  # fmt: skip
CONVS = ("encoder.0", "encoder.2", "encoder.4")
LINEARS = ("head.0", "head.2")
EPS32 = torch.finfo(torch.float32).eps


def anatomy_cli(*flags: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, str(ROOT / "scripts" / "anatomy.py"), *flags]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def load_script():
    spec = importlib.util.spec_from_file_location("fire_rl_script_anatomy", ROOT / "scripts" / "anatomy.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def dqn(tmp_path_factory):
    """(run directory, anatomy table of every method, checkpoint payload)."""
    run_dir = tmp_path_factory.mktemp("anatomy") / "dqn"
    run_agent("dqn_atari", "--env-id", "ALE/Breakout-v5", *TINY, "--run-dir", str(run_dir))
    out = run_dir.parent / "dqn.csv"
    proc = anatomy_cli(str(run_dir), "--batch", "32", "--hessian-iters", "5", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "fire-exact" in proc.stdout and "hessian_after" in proc.stdout  # the printed table
    return run_dir, pd.read_csv(out), load_checkpoint(run_dir, agent="dqn_atari")


def rows(table: pd.DataFrame, method: str, network: str = "q_network") -> pd.DataFrame:
    return table[(table.method == method) & (table.network == network)].set_index("layer")


def weight(ckpt: dict, layer: str) -> torch.Tensor:
    return ckpt["q_network"][f"{layer}.weight"].double()


def theta0(ckpt: dict, layer: str) -> torch.Tensor:
    return ckpt["scheduler"]["theta0"]["q"][f"{layer}.weight"].double()


def test_every_method_has_a_row_per_layer_and_a_total(dqn):
    _, table, _ = dqn
    assert table.groupby("method").size().to_dict() == {m: 6 for m in load_script().METHODS}
    totals = table[table.layer == "total"]
    assert (totals.hessian_before > 0).all() and (totals.hessian_after > 0).all()  # TD loss near a minimum: convex
    assert totals.hessian_before.nunique() == 1  # one "before" for all methods


def test_none_changes_nothing(dqn):
    _, table, _ = dqn
    none = rows(table, "none")
    assert (none.sfe == 0).all() and (none.rel_sfe == 0).all()
    assert (none.dfi_after == none.dfi_before).all()
    assert none.dormant_after.equals(none.dormant_before)
    total = none.loc["total"]
    assert total.dq == 0 and total.hessian_after == total.hessian_before
    assert total.srank_after == total.srank_before and total.feature_norm_after == total.feature_norm_before


def ns_dfi(weight: torch.Tensor, steps: int = 10) -> float:
    """DfI of FIRE's result predicted from the spectrum alone: Newton–Schulz acts on each singular value of each
    Frobenius-normalised kernel slice as x ← 1.5x − 0.5x³ (fire_rl.polar), and DfI = Σ (x² − 1)² (float64)."""
    slices = kernel_slices(weight)  # (P, C_out, C_in)
    x = torch.linalg.svdvals(slices) / torch.linalg.matrix_norm(slices)[:, None]  # (P, min(C_out, C_in))
    a, b = NS_COEFFS
    for _ in range(steps):
        x = a * x + b * x**3
    return float((x.square() - 1).square().sum())


def test_fire_dfi_after_on_the_convs(dqn):
    """DfI ≈ 0 for 10 Newton–Schulz steps means: what the scalar NS map leaves of the checkpoint's own spectrum. From
    Frobenius normalisation a singular value grows at most 1.5¹⁰ ≈ 58-fold in 10 steps, so the smallest directions of
    the square 64×64 slices of encoder.4 stay short of 1; the CSV must show exactly that residual (rtol 1 %: float32
    rounding of (x² − 1) near x = 1; atol: the float32 floor below). It is at most 1 % of the DfI before. The exact
    polar factor leaves only rounding: every Gram entry within 10 float32 ulps of I, ≤ P·n²·(10 ε₃₂)²."""
    _, table, ckpt = dqn
    fire, exact = rows(table, "fire"), rows(table, "fire-exact")
    for conv in CONVS:
        w = weight(ckpt, conv)
        p, n = kernel_slices(w).shape[0], min(w.shape[:2])
        floor = p * n**2 * (10 * EPS32) ** 2
        assert fire.loc[conv].dfi_after == pytest.approx(ns_dfi(w), rel=1e-2, abs=floor), conv
        assert fire.loc[conv].dfi_after <= 1e-2 * fire.loc[conv].dfi_before, conv
        assert exact.loc[conv].dfi_after <= floor, conv
    assert exact.loc[list(CONVS)].dfi_after.sum() < fire.loc[list(CONVS)].dfi_after.sum()


def test_fire_exact_sfe_is_the_closed_form(dqn):
    """W − c·UVᵀ = U(Σ − cI)Vᵀ per slice, so SFE = Σ (σᵢ − c)² over every slice's singular values."""
    _, table, ckpt = dqn
    exact = rows(table, "fire-exact")
    for conv in CONVS:
        w = weight(ckpt, conv)
        sigma = torch.linalg.svdvals(kernel_slices(w))
        expected = float((sigma - fire_scale(w.shape, "muon")).square().sum())
        assert exact.loc[conv].sfe == pytest.approx(expected, rel=1e-4), conv
        assert exact.loc[conv].rel_sfe == pytest.approx(expected / float(w.square().sum()), rel=1e-4), conv


@pytest.mark.parametrize("method", ["full", "fire", "pi"])
def test_linears_return_to_theta0(dqn, method):
    """paper-dqn: full resets every layer to θ₀, FIRE the Linears, injection starts its trainable head at θ₀: SFE is
    then ‖W − θ₀‖²_F from the checkpoint."""
    _, table, ckpt = dqn
    result = rows(table, method)
    for layer in (*CONVS, *LINEARS) if method == "full" else LINEARS:
        expected = float((weight(ckpt, layer) - theta0(ckpt, layer)).square().sum())
        assert expected > 0, f"{layer} never trained: the test would prove nothing"
        assert result.loc[layer].sfe == pytest.approx(expected, rel=1e-5), layer


def test_injection_preserves_the_function(dqn):
    _, table, _ = dqn
    pi = rows(table, "pi")
    assert pi.loc["total"].dq <= 1e-6  # old + (new − new_frozen), new = new_frozen
    assert (pi.loc[list(CONVS)].sfe == 0).all()  # the encoder is untouched
    for method in ("fire", "sp", "full", "redo"):
        assert rows(table, method).loc["total"].dq > 1e-5, method


def dense_top_eigenvalue(net: nn.Module, loss_of_params) -> tuple[float, torch.Tensor]:
    shapes = [p.shape for p in net.parameters()]
    names = [n for n, _ in net.named_parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in net.parameters()])

    def loss(v: torch.Tensor) -> torch.Tensor:
        chunks = v.split([math.prod(s) for s in shapes])
        return loss_of_params({n: c.view(s) for n, c, s in zip(names, chunks, shapes)})

    eigenvalues = torch.linalg.eigvalsh(torch.autograd.functional.hessian(loss, flat))
    return float(eigenvalues[eigenvalues.abs().argmax()]), eigenvalues


@pytest.mark.parametrize("activation", [nn.Tanh, nn.ReLU])
@pytest.mark.parametrize("seed", [0, 1])
def test_power_iteration_matches_the_dense_hessian(activation, seed):
    anatomy = load_script()
    torch.manual_seed(seed)
    # One output (several would give the last layer identical Hessian blocks: a degenerate top eigenvalue) and
    # inputs of unequal scales: a clear eigengap (|λ₂/λ₁| ≤ 0.87 for these seeds).
    net = nn.Sequential(nn.Linear(3, 6), activation(), nn.Linear(6, 1)).double()
    x = torch.randn(32, 3, dtype=torch.float64) * torch.tensor([3.0, 1.0, 0.3], dtype=torch.float64)
    y = torch.randn(32, 1, dtype=torch.float64)
    top, eigenvalues = dense_top_eigenvalue(net, lambda p: F.mse_loss(torch.func.functional_call(net, p, (x,)), y))
    second = eigenvalues.abs().sort().values[-2]
    assert second < 0.9 * abs(top), "no eigengap: power iteration would converge too slowly to test"
    params = list(net.parameters())
    estimate = anatomy.top_hessian_eigenvalue(F.mse_loss(net(x), y), params, iters=400, seed=seed)
    assert estimate == pytest.approx(top, rel=1e-8)
    few = anatomy.top_hessian_eigenvalue(F.mse_loss(net(x), y), params, iters=2, seed=seed)
    assert abs(few) <= abs(top) * (1 + 1e-12)  # a Rayleigh quotient never exceeds |λ₁|
    again = anatomy.top_hessian_eigenvalue(F.mse_loss(net(x), y), params, iters=2, seed=seed)
    assert again == few  # the seeded start vector


def test_sac_smoke(tmp_path):
    run_dir = tmp_path / "sac"
    run_agent("sac_simba", "--env-id", "Humanoid-v5", "--actor-hidden", "16", "--critic-hidden", "32",
              "--batch-size", "16", "--eval-every", "0", *TINY, "--run-dir", str(run_dir))  # fmt: skip
    out = tmp_path / "sac.csv"
    proc = anatomy_cli(str(run_dir), "--methods", "none", "fire", "pi", "--batch", "32", "--hessian-iters", "3",
                       "--out", str(out))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    table = pd.read_csv(out)
    assert set(table.network) == {"actor", "qf1", "qf2"}
    for method, changed in (("none", False), ("pi", False), ("fire", True)):
        actor, qf1 = rows(table, method, "actor").loc["total"], rows(table, method, "qf1").loc["total"]
        assert (actor.kl > 1e-3 and qf1.dq > 1e-5) if changed else (actor.kl == 0 and qf1.dq <= 1e-6), method
        assert qf1.hessian_before > 0 and math.isfinite(qf1.hessian_after), method
    fire = table[(table.method == "fire") & (table.layer != "total")]  # paper-sac: FIRE on every Linear
    assert fire.dfi_after.sum() <= 1e-6 * fire.dfi_before.sum()


def test_a_checkpoint_without_a_buffer_exits_2(dqn, tmp_path, capsys):
    run_dir, _, ckpt = dqn
    payload = {k: v for k, v in ckpt.items() if k != "buffer"}
    save_checkpoint(tmp_path / "checkpoint.pt", payload, agent="dqn_atari", env_id="ALE/Breakout-v5")
    proc = anatomy_cli(str(tmp_path))
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "--save-buffer" in proc.stderr, proc.stderr
    assert load_script().main([str(tmp_path / "nowhere")]) == 2
    assert "no checkpoint at" in capsys.readouterr().err
