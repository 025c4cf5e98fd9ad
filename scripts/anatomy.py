"""Reset anatomy: what each reset method does to one trained agent, layer by layer.

    python scripts/anatomy.py RUN_DIR_OR_CHECKPOINT [--methods fire sp] [--batch 256] [--out CSV] [--device cpu]

The checkpoint (either agent, saved with ``--save-buffer``) is rebuilt by the agent's own ``train()`` (`_LoadOnly`).
Each method is applied to a deep copy of it by the agent's `ResetScheduler` with the agent's recipe (paper-dqn /
paper-sac, README "The reset methods") and `ResetConfig`'s defaults, not the run's reset flags: ``fire`` is 10 cubic
Newton–Schulz steps with the muon scale (FIRE, arXiv 2602.08040), ``fire-exact`` the SVD polar factor, ``sp`` α = 0.2
toward θ₀, ``redo`` τ = 0.1 on the agent's probe batch; every method from the checkpoint's RNG and probe states.

Rows: method × network × Linear/Conv2d layer, plus a ``total`` row per method × network. ``*_before``/``*_after`` are
measured on one replay batch of ``--batch`` transitions (drawn with ``--seed``):
    sfe, rel_sfe            ‖W − W̃‖²_F of the layer's weight, sfe / ‖W‖²_F (total: Σ sfe / Σ ‖W‖²_F)
    dfi_before/_after       ‖G(W/c) − I‖²_F, c FIRE's muon scale (`fire_rl.metrics.dfi`; total: Σ over layers)
    dormant_before/_after   τ-dormant share (τ = 0.025, Sokar et al. 2023) of the ReLU the layer feeds; total: all ReLUs
    srank_*, feature_norm_* total rows: srank (δ = 0.01, Kumar et al. 2021), mean ‖φ‖₂ of the penultimate features φ
    dq                      q_network / qf1 total: mean |Q_after − Q_before| (DQN: every action; SAC: replayed action)
    kl                      actor total: mean KL(N_before ‖ N_after) of the pre-tanh Gaussians, Σ over actions (nats)
    hessian_before/_after   q_network / qf1 total: top eigenvalue of the TD loss (`td_loss`) Hessian w.r.t. the
                            critic's trainable parameters (`top_hessian_eigenvalue`), loss units per parameter²
    global_step, update_step the checkpoint's env steps and gradient updates (``--methods none``: its state as saved)
Under plasticity injection the head layer ``head.X`` is compared with ``head.new.X``, the copy that trains in its place.
Exit codes: 0; 2 with one line for bad input (no or a corrupt checkpoint, no replay buffer in it, a batch too large).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib.util
import math
import pickle
import sys
import tempfile
from dataclasses import fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

try:
    import pandas as pd
except ImportError as err:
    sys.exit(f"error: scripts/anatomy.py needs {err.name}: pip install -e '.[analysis]'")

from fire_rl.checkpoint import load_checkpoint, resolve_checkpoint, set_rng_state
from fire_rl.metrics import plasticity_metrics, relative_sfe, sfe
from fire_rl.resets.common import all_layers
from fire_rl.resets.redo import find_neuron_pairs
from fire_rl.run import Run
from fire_rl.scheduler import ResetConfig

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("none", "fire", "fire-exact", "sp", "full", "pi", "redo")
# Each agent's online networks by checkpoint key; the first is the critic whose ΔQ and TD-loss Hessian are measured.
NETWORKS = {"dqn_atari": ("q_network",), "sac_simba": ("qf1", "qf2", "actor")}


class _Loaded(Exception):
    """Leaves the agent's ``train()`` once its state is built and loaded."""


class _LoadOnly(Run):
    """A `Run` that writes nothing; ``start`` loads the checkpoint into what the agent's ``train()`` built (the
    agent's own networks, `Run.restore`) and leaves ``train()``."""

    def start(self, state: dict, buffer) -> dict:
        self.restore(state, buffer)
        self.state, self.buffer = state, buffer
        raise _Loaded


def load(path: str, device: str):
    """(agent module, `_LoadOnly` run holding ``state``, ``buffer``, ``args``, ``checkpoint``) of a checkpoint. Raises
    ValueError: no readable checkpoint (`fire_rl.checkpoint.CheckpointError`), or one without a replay buffer."""
    path, name = resolve_checkpoint(path), "dqn_atari"  # an unreadable header: load_checkpoint says why in one line
    with contextlib.suppress(RuntimeError, OSError, EOFError, ValueError, AttributeError, pickle.UnpicklingError):
        header = torch.load(path, map_location="cpu", mmap=True, weights_only=False)  # tensors stay on disk
        name = header["agent"] if header.get("agent") in NETWORKS else name
    ckpt = load_checkpoint(path, agent=name)
    if "buffer" not in ckpt:
        raise ValueError(f"{path} holds no replay buffer: the anatomy needs one; save the run with --save-buffer")
    spec = importlib.util.spec_from_file_location(name, ROOT / "agents" / f"{name}.py")
    agent = importlib.util.module_from_spec(spec)
    sys.modules[name] = agent  # dataclasses resolve their annotations through sys.modules
    spec.loader.exec_module(agent)
    args = agent.Args(**{f.name: ckpt["args"][f.name] for f in fields(agent.Args) if f.name in ckpt["args"]})
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(sys.stderr), contextlib.suppress(_Loaded):
        args.device, args.capture_video, args.run_dir = device, False, tmp
        run = _LoadOnly(args, name, ckpt)
        agent.train(args, run)
    run.state["scheduler"].log_fn, run.state["scheduler"].events_path = None, None  # deep copies leave `run` alone
    del ckpt["buffer"]  # now in run.buffer: one copy in memory (7 GB for 1M Atari frames)
    return agent, run


def top_hessian_eigenvalue(loss: torch.Tensor, params: list[torch.Tensor], iters: int = 20, seed: int = 0) -> float:
    """The eigenvalue of largest magnitude of the Hessian H = ∇²_θ L, by power iteration on Hessian-vector products.

    Hv = ∇_θ(∇_θ L · v) (Pearlmutter 1994), one double backward (`torch.autograd.grad`) per step, as in Ghorbani,
    Krishnan, Xiao 2019 ("An Investigation into Neural Net Optimization via Hessian Eigenvalue Density") and PyHessian
    (Yao et al. 2020). v₀: standard normal from a CPU generator seeded with `seed` (the same on any device); each step
    v ← Hv/‖Hv‖. Returns the Rayleigh quotient vᵀHv of the last unit v (sign kept; loss units per squared parameter
    unit), which a small eigengap leaves under |λ₁| (the error shrinks like |λ₂/λ₁|^iters). `loss`: 0-dim, with a graph
    to `params`; `iters` ≥ 1.
    """
    generator = torch.Generator().manual_seed(seed)
    v = [torch.randn(p.shape, generator=generator, dtype=torch.float64).to(p) for p in params]
    grads = torch.autograd.grad(loss, params, create_graph=True)
    eigenvalue = math.nan
    for _ in range(iters):
        norm = torch.sqrt(sum(u.square().sum() for u in v))
        v = [u / norm for u in v]
        hv = torch.autograd.grad(grads, params, grad_outputs=v, retain_graph=True, materialize_grads=True)
        eigenvalue = float(sum((h * u).sum() for h, u in zip(hv, v)))
        v = [h.detach() for h in hv]
    return eigenvalue


def td_loss(name: str, args, state: dict, data, seed: int) -> torch.Tensor:
    """The critic's TD loss on the replay batch `data` (written out: the agents' ``update`` steps the optimizer).
    DQN (agents/dqn_atari.py ``update``): Q(s, a) against r + γ(1 − d) max_a' Q'(s', a') (Double DQN: a' from the
    online network), mse or Huber per ``--loss``. SAC (agents/sac_simba.py ``update``, qf1's term): MSE(Q₁(s, a),
    r + γ(1 − d)(min over the targets used of Q'(s', a') − α log π(a'|s'))), both targets with clipped double Q as
    ``--cdq`` resolves there, a' ~ π(·|s') with noise seeded by `seed` (the same for every state)."""
    if name == "dqn_atari":
        q, target = state["q_network"], state["target_network"]
        with torch.no_grad():
            next_actions = (q if args.double_dqn else target)(data.next_observations).argmax(1, keepdim=True)
            next_max = target(data.next_observations).gather(1, next_actions).squeeze(1)
            td_target = data.rewards + args.gamma * next_max * (1.0 - data.dones)
        q_a = q(data.observations).gather(1, data.actions.unsqueeze(1)).squeeze(1)
        return F.mse_loss(q_a, td_target) if args.loss == "mse" else F.smooth_l1_loss(q_a, td_target)
    obs, next_obs = state["rsnorm"](data.observations), state["rsnorm"](data.next_observations)
    cdq = args.cdq == "on" or (args.cdq == "auto" and not args.env_id.startswith("dm_control/"))
    with torch.no_grad():
        generator = torch.Generator(next_obs.device).manual_seed(seed)
        next_actions, next_log_pi, _ = state["actor"].sample(next_obs, generator)
        targets = (state["qf1_target"], state["qf2_target"])[: 2 if cdq else 1]
        min_qf_next = torch.stack([t(next_obs, next_actions) for t in targets]).min(dim=0).values
        soft_next = min_qf_next - state["log_alpha"].exp() * next_log_pi
        td_target = data.rewards + (1.0 - data.dones) * args.gamma * soft_next
    return F.mse_loss(state["qf1"](obs, data.actions), td_target)


@torch.no_grad()
def output_change(name: str, before: dict, after: dict, inputs: dict) -> dict[str, dict[str, float]]:
    """``{network: {"dq" or "kl": value}}``: the critic's mean |ΔQ|; for SAC the actor's mean KL(before ‖ after) of the
    pre-tanh Gaussians N(μ, σ²) in closed form, Σᵢ [log σₐ/σ_b + (σ_b² + (μ_b − μₐ)²)/(2σₐ²) − ½]."""
    critic = NETWORKS[name][0]
    out = {critic: {"dq": float((after[critic](*inputs[critic]) - before[critic](*inputs[critic])).abs().mean())}}
    if name == "sac_simba":
        (mu_b, log_std_b), (mu_a, log_std_a) = before["actor"](*inputs["actor"]), after["actor"](*inputs["actor"])
        kl = log_std_a - log_std_b + ((2 * log_std_b).exp() + (mu_b - mu_a).square()) / (2 * (2 * log_std_a).exp())
        out["actor"] = {"kl": float((kl - 0.5).sum(dim=-1).mean())}  # (B, act_dim) summed over actions
    return out


def _twin(name: str | None, names_after) -> str | None:
    """The module after the reset that stands where `name` stood: itself, or under injection head.X → head.new.X."""
    return next((t for t in (name, name and name.replace("head.", "head.new.", 1)) if t and t in names_after), None)


def network_rows(key: str, before: nn.Module, after: nn.Module, inputs: tuple) -> list[dict]:
    """One row per Linear/Conv2d layer of `before` and a ``total`` row (the module docstring's columns)."""
    layers_b, layers_a = all_layers(before), all_layers(after)
    last_linear = [n for n, m in layers_b.items() if isinstance(m, nn.Linear)][-1]
    m_b = plasticity_metrics(before, inputs)
    m_a = plasticity_metrics(after, inputs, feature_layer=_twin(last_linear, layers_a))
    has_relu = any(isinstance(m, nn.ReLU) for m in before.modules())
    feeds = {p.producer: p.activation for p in find_neuron_pairs(before, inputs, strict=False)} if has_relu else {}
    relus_after = {k.removeprefix("dormant/") for k in m_a if k.startswith("dormant/")}
    rows = []
    for layer, module in layers_b.items():
        twin = _twin(layer, layers_a)
        w_b, w_a = module.weight.detach(), layers_a[twin].weight.detach() if twin else None
        rows.append(dict(
            network=key, layer=layer, sfe=float(sfe(w_b, w_a)) if twin else math.nan,
            rel_sfe=float(relative_sfe(w_b, w_a)) if twin else math.nan,
            dfi_before=m_b[f"dfi/{layer}"], dfi_after=m_a[f"dfi/{twin}"] if twin else math.nan,
            dormant_before=m_b.get(f"dormant/{feeds.get(layer)}", math.nan),
            dormant_after=m_a.get(f"dormant/{_twin(feeds.get(layer), relus_after)}", math.nan),
        ))  # fmt: skip
    total_sfe = sum(r["sfe"] for r in rows)
    weight_sq = sum(float(m.weight.detach().double().square().sum()) for m in layers_b.values())
    return [*rows, dict(
        network=key, layer="total", sfe=total_sfe, rel_sfe=total_sfe / weight_sq,
        dfi_before=sum(r["dfi_before"] for r in rows), dfi_after=sum(r["dfi_after"] for r in rows),
        dormant_before=m_b["dormant"], dormant_after=m_a["dormant"], srank_before=m_b["srank"],
        srank_after=m_a["srank"], feature_norm_before=m_b["feature_norm"], feature_norm_after=m_a["feature_norm"],
    )]  # fmt: skip


def anatomy(agent, run: _LoadOnly, methods, batch: int, iters: int, seed: int) -> pd.DataFrame:
    """Apply each of `methods` to a deep copy of the loaded state and tabulate them (the module docstring's columns).
    Raises ValueError when `batch` exceeds the transitions of the replay buffer."""
    name, args, state, ckpt = run.agent, run.args, run.state, run.checkpoint
    if batch > len(run.buffer):
        raise ValueError(f"--batch {batch} exceeds the {len(run.buffer)} transitions of the checkpoint's buffer")
    data = run.buffer.sample(batch, np.random.default_rng(seed))
    obs = data.observations if name == "dqn_atari" else state["rsnorm"](data.observations)
    inputs = {"q_network": (obs,), "actor": (obs,), "qf1": (obs, data.actions), "qf2": (obs, data.actions)}
    critic, recipe, probe = NETWORKS[name][0], agent.Args().reset_recipe, run.probe_rng.bit_generator.state

    def hessian(state: dict) -> float:  # w.r.t. the trainable parameters: injection freezes the old head
        params = [p for p in state[critic].parameters() if p.requires_grad]
        return top_hessian_eigenvalue(td_loss(name, args, state, data, seed), params, iters, seed)

    hessian_before, frames = hessian(state), []
    for method in methods:
        after = copy.deepcopy(state)  # one memo: targets, optimizers and the scheduler point at the copies
        if method != "none":
            scheduler = after["scheduler"]
            polar = "svd" if method == "fire-exact" else "newton_schulz"
            at = (max(ckpt["global_step"], 1),)  # unused: `apply` resets now
            scheduler.config = ResetConfig(method.removesuffix("-exact"), recipe, at, ns_steps=10, polar_method=polar)
            scheduler.check()
            set_rng_state(ckpt["rng"])  # ReDo's fresh draw, as a branch from this checkpoint would make it
            run.probe_rng.bit_generator.state = probe  # the agent's probe batch, the same for every method
            scheduler.apply(ckpt["global_step"], ckpt["update_step"])
        rows = [r for key in NETWORKS[name] for r in network_rows(key, state[key], after[key], inputs[key])]
        change = output_change(name, state, after, inputs)
        for row in rows:
            if row["layer"] == "total":
                row.update(change.get(row["network"], {}))
                if row["network"] == critic:
                    row.update(hessian_before=hessian_before, hessian_after=hessian(after))
        frames.append(pd.DataFrame(rows).assign(method=method))
    table = pd.concat(frames, ignore_index=True).assign(
        global_step=ckpt["global_step"], update_step=ckpt["update_step"]
    )
    return table[["method", *table.columns.drop("method")]]


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint", help="a run directory holding checkpoint.pt, or the file itself")
    parser.add_argument(
        "--methods", nargs="+", choices=METHODS, default=list(METHODS), help="methods to apply (default: all)"
    )
    parser.add_argument(
        "--batch", type=int, default=256, help="replay transitions the metrics are measured on (default: %(default)s)"
    )
    parser.add_argument(
        "--hessian-iters",
        type=int,
        default=20,
        help="power-iteration steps per Hessian eigenvalue (default: %(default)s)",
    )
    parser.add_argument("--out", type=Path, default=None, help="CSV file to write (default: none)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default: %(default)s)")
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the replay batch and the Hessian start vector (default: %(default)s)",
    )
    cfg = parser.parse_args(argv)
    if cfg.batch < 1 or cfg.hessian_iters < 1:
        parser.error(f"--batch={cfg.batch} and --hessian-iters={cfg.hessian_iters} must be >= 1")
    try:
        agent, run = load(cfg.checkpoint, cfg.device)
        table = anatomy(agent, run, cfg.methods, cfg.batch, cfg.hessian_iters, cfg.seed)
    except ValueError as err:  # CheckpointError is a ValueError
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{run.agent} at env step {run.checkpoint['global_step']:,}, recipe {agent.Args().reset_recipe}")
    print(table.to_string(index=False, float_format=lambda x: f"{x:.4g}", na_rep=""))
    if cfg.out is not None:
        table.to_csv(cfg.out, index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
