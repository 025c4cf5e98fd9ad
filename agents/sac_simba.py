# SAC with SimBa networks on humanoid control, with weight resets. Docs: README.md, section "SAC + SimBa".
# CleanRL-style single file: Args, the update, then the loop, read top to bottom.
from __future__ import annotations

import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
import tyro
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from fire_rl.buffers import ReplayBuffer
from fire_rl.checkpoint import CheckpointError, get_rng_state, save_checkpoint, set_rng_state
from fire_rl.cli import PlasticityArgs, RunArgs
from fire_rl.envs.env_state import get_env_state, set_env_state
from fire_rl.envs.humanoid import make_humanoid_env
from fire_rl.metrics import plasticity_metrics
from fire_rl.networks import RSNorm, SimbaActor, SimbaCritic, update_target_
from fire_rl.regularizers import Regularizer
from fire_rl.runtime import (
    GracefulStop,
    ReplayRatio,
    crossed,
    memory_report,
    resolve_device,
    seed_everything,
    write_json_atomic,
)
from fire_rl.scheduler import ResetConfig, ResetScheduler

AGENT = "sac_simba"


@dataclass
class Args(PlasticityArgs, RunArgs):
    exp_name: str = os.path.basename(__file__)[: -len(".py")]
    """the name of this experiment"""

    # Algorithm specific arguments
    env_id: str = "Humanoid-v5"
    """the environment id: HumanoidBench (h1-walk-v0, ... when installed), gymnasium MuJoCo, or dm_control/<task>-v0"""
    total_timesteps: int = 1_000_000
    """total env steps of the experiment (an agent step is `action_repeat` env steps)"""
    action_repeat: int = 2
    """env steps per agent step (SimBa: 2)"""
    replay_ratio: float = 2.0
    """gradient updates per agent step (SimBa: 2)"""
    buffer_size: int = 1_000_000
    """the replay memory buffer size (agent steps)"""
    gamma: float = 0.99
    """the discount factor gamma (per agent step)"""
    tau: float = 0.005
    """target smoothing coefficient"""
    batch_size: int = 256
    """the batch size of sample from the reply memory"""
    learning_starts: int = 5_000
    """env step to start learning"""
    actor_lr: float = 1e-4
    """the learning rate of the actor's AdamW"""
    critic_lr: float = 1e-4
    """the learning rate of the critics' AdamW"""
    alpha_lr: float = 1e-4
    """the learning rate of the temperature's AdamW"""
    weight_decay: float = 1e-2
    """AdamW weight decay of the actor and critics (the temperature has none)"""
    alpha_init: float = 0.01
    """initial temperature"""
    target_entropy_scale: float = 0.5
    """target entropy = -target_entropy_scale * |A| (SimBa: -|A|/2)"""
    actor_hidden: int = 128
    """SimBa actor width"""
    actor_blocks: int = 1
    """SimBa actor residual blocks"""
    critic_hidden: int = 512
    """SimBa critic width"""
    critic_blocks: int = 2
    """SimBa critic residual blocks"""
    fused_adamw: bool = True
    """fused AdamW kernels (about 1.1x per update on CPU); --no-fused-adamw runs PyTorch's default, the reference"""
    head_blocks: int = 0
    """residual blocks counted in the head (1: plasticity injection and head resets cover the last block + head)"""

    # Resets and per-step methods: the flags of fire_rl.cli.PlasticityArgs (--reset, --reset-at, --regularizer, ...)
    reset_recipe: Literal["paper-sac", "custom"] = "paper-sac"
    """paper-sac: the official FIRE SAC recipe (every Linear of actor and both critics, fresh optimizers and
    temperature, target := result); custom: the method on the layers chosen by --reset-kinds/-roles/-names"""

    # Evaluation, metrics, checkpoints
    eval_every: int = 50_000
    """env steps between evaluations with the deterministic policy (0: off)"""
    eval_episodes: int = 5
    """episodes per evaluation"""


def resolve_args(args: Args) -> Args:
    """Check every value before any work. Raises ValueError naming the bad value."""
    positive = ["total_timesteps", "action_repeat", "replay_ratio", "buffer_size", "batch_size", "actor_lr",
                "critic_lr", "alpha_lr", "alpha_init", "actor_hidden", "critic_hidden", "eval_episodes"]  # fmt: skip
    for name in positive:
        if not getattr(args, name) > 0:
            raise ValueError(f"--{name.replace('_', '-')}={getattr(args, name)}: must be > 0")
    for name in ["learning_starts", "eval_every", "actor_blocks",
                 "critic_blocks", "head_blocks", "weight_decay"]:  # fmt: skip
        if getattr(args, name) < 0:
            raise ValueError(f"--{name.replace('_', '-')}={getattr(args, name)}: must be >= 0")
    if args.head_blocks > min(args.actor_blocks, args.critic_blocks):
        raise ValueError(f"--head-blocks={args.head_blocks} exceeds the actor's or critic's block count")
    if args.buffer_size < args.batch_size:
        raise ValueError(f"--buffer-size={args.buffer_size} is smaller than --batch-size={args.batch_size}")
    if not 0.0 <= args.gamma <= 1.0 or not 0.0 < args.tau <= 1.0:
        raise ValueError(f"--gamma={args.gamma} must be in [0, 1] and --tau={args.tau} in (0, 1]")
    args.default_schedule(args.total_timesteps)
    return args


def update(actor, qf1, qf2, qf1_target, qf2_target, rsnorm, log_alpha, optimizers, regularizer, data, args,
           target_entropy):  # fmt: skip
    """One SAC update (Haarnoja et al. 2018) in SimBa's order: actor, temperature, critics (with the updated actor),
    target EMA (Lee et al. 2024).

    Args:
        data: `ReplayBatch` of raw observations and next_observations (B, obs_dim) float32 (normalised here by
            `rsnorm`), actions (B, act_dim) in [-1, 1], rewards (B,) summed over the action repeat, dones (B,)
            terminations only (truncation bootstraps).
        optimizers: (actor, both critics, temperature) optimizers.
        target_entropy: -target_entropy_scale * |A|.

    Returns:
        0-dim detached tensors: losses, Q-values, alpha, entropy (no host sync here). The actor step computes no
        critic weight-gradients (the critics' trainable parameters are frozen for it, parameters frozen by plasticity
        injection stay frozen) and the temperature loss reuses the actor step's log-probabilities.
    """
    actor_optimizer, q_optimizer, alpha_optimizer = optimizers
    obs, next_obs = rsnorm(data.observations), rsnorm(data.next_observations)
    critic_params = [p for q in (qf1, qf2) for p in q.parameters() if p.requires_grad]

    alpha = log_alpha.exp().detach()
    pi, log_pi, _ = actor.sample(obs)
    for p in critic_params:
        p.requires_grad_(False)
    min_qf_pi = torch.min(qf1(obs, pi), qf2(obs, pi))
    for p in critic_params:
        p.requires_grad_(True)
    actor_loss = (alpha * log_pi - min_qf_pi).mean()
    actor_optimizer.zero_grad(set_to_none=True)
    (actor_loss + regularizer.loss("actor")).backward()
    actor_optimizer.step()
    regularizer.after_step("actor")

    alpha_loss = (-log_alpha.exp() * (log_pi.detach() + target_entropy)).mean()
    alpha_optimizer.zero_grad(set_to_none=True)
    alpha_loss.backward()
    alpha_optimizer.step()

    with torch.no_grad():
        next_actions, next_log_pi, _ = actor.sample(next_obs)
        min_qf_next = torch.min(qf1_target(next_obs, next_actions), qf2_target(next_obs, next_actions))
        min_qf_next = min_qf_next - log_alpha.exp() * next_log_pi
        next_q_value = data.rewards + (1.0 - data.dones) * args.gamma * min_qf_next
    qf1_a_values = qf1(obs, data.actions)
    qf2_a_values = qf2(obs, data.actions)
    qf1_loss = F.mse_loss(qf1_a_values, next_q_value)
    qf2_loss = F.mse_loss(qf2_a_values, next_q_value)
    q_optimizer.zero_grad(set_to_none=True)
    (qf1_loss + qf2_loss + regularizer.loss("qf1") + regularizer.loss("qf2")).backward()
    q_optimizer.step()
    regularizer.after_step("qf1", "qf2")

    update_target_(qf1_target, qf1, args.tau)
    update_target_(qf2_target, qf2, args.tau)
    return {
        "qf1_loss": qf1_loss.detach(), "qf2_loss": qf2_loss.detach(), "qf1_values": qf1_a_values.mean().detach(),
        "qf2_values": qf2_a_values.mean().detach(), "actor_loss": actor_loss.detach(), "alpha": alpha,
        "alpha_loss": alpha_loss.detach(), "entropy": -log_pi.mean().detach(),
    }  # fmt: skip


@torch.inference_mode()
def evaluate(actor, rsnorm, args: Args, device: torch.device, seed: int) -> list[float]:
    """Returns of `eval_episodes` episodes of the deterministic policy tanh(mean) (env-step returns, no exploration)."""
    env = make_humanoid_env(args.env_id, seed, action_repeat=args.action_repeat)
    returns = []
    for episode in range(args.eval_episodes):
        obs, _ = env.reset(seed=seed + episode)
        done = False
        while not done:
            _, _, action = actor.sample(rsnorm(torch.as_tensor(obs, device=device)[None]))
            obs, _, terminated, truncated, info = env.step(action[0].cpu().numpy())
            done = terminated or truncated
        returns.append(float(info["episode"]["r"]))
    env.close()
    return returns


def configure(args: Args):
    """Check every flag, the env id and the resume path before any work, and build the training env.

    Returns:
        (args, device, ResetConfig, Regularizer, checkpoint payload or None, run dir, env).

    Raises:
        ValueError: a bad flag value or combination, an unknown or discrete-action env id, an unusable run directory.
        ImportError: a HumanoidBench id without `humanoid_bench` installed (the message says how to install it).
        CheckpointError: `--resume` names no checkpoint of this agent and env.
    """
    args = resolve_args(args)
    device = resolve_device(args.device)
    reset_cfg = args.reset_config()
    reset_cfg.validate(args.total_timesteps)
    regularizer = args.make_regularizer()
    checkpoint, run_dir = args.open_run(AGENT, args.env_id)
    env = make_humanoid_env(args.env_id, args.seed, action_repeat=args.action_repeat,
                            capture_video=args.capture_video, run_dir=run_dir)  # fmt: skip
    return args, device, reset_cfg, regularizer, checkpoint, run_dir, env


def train(args: Args, device, reset_cfg: ResetConfig, regularizer: Regularizer, checkpoint: dict | None,
          run_dir: Path, env) -> int:  # fmt: skip
    """Train for `args.total_timesteps` env steps (from the checkpoint's step when resuming).

    Returns 0 when the run finished, 130 when stopped by SIGINT/SIGTERM (after a checkpoint). Raises FloatingPointError
    on a NaN or Inf in a loss or a reset (the last good checkpoint is kept).
    """
    obs_dim = env.observation_space.shape[0]
    act_dim = env.action_space.shape[0]

    # ---- run directory, logging, seeding ------------------------------------------------------------------------
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.track:
        import wandb

        wandb.init(project=args.wandb_project_name, entity=args.wandb_entity, sync_tensorboard=True,
                   config=vars(args), name=run_dir.name, save_code=True)  # fmt: skip
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(run_dir / "config.json", asdict(args))
    start_step = checkpoint["global_step"] if checkpoint else 0
    # purge_step hides events a killed run wrote after its last checkpoint, so resumed curves have no duplicates; the
    # checkpoint's own step was logged before it was saved, so its events stay.
    writer = SummaryWriter(str(run_dir), purge_step=start_step + 1 if checkpoint else None)
    if not checkpoint:
        writer.add_text("hyperparameters", args.markdown())
    seed_everything(args.seed, args.torch_deterministic)

    # ---- networks, optimizers, buffer, reset scheduler ----------------------------------------------------------
    actor = SimbaActor(obs_dim, act_dim, args.actor_hidden, args.actor_blocks, head_blocks=args.head_blocks).to(device)
    qf1 = SimbaCritic(obs_dim, act_dim, args.critic_hidden, args.critic_blocks, head_blocks=args.head_blocks).to(device)
    qf2 = SimbaCritic(obs_dim, act_dim, args.critic_hidden, args.critic_blocks, head_blocks=args.head_blocks).to(device)
    qf1_target = SimbaCritic(obs_dim, act_dim, args.critic_hidden, args.critic_blocks, head_blocks=args.head_blocks)
    qf2_target = SimbaCritic(obs_dim, act_dim, args.critic_hidden, args.critic_blocks, head_blocks=args.head_blocks)
    qf1_target.to(device).load_state_dict(qf1.state_dict())
    qf2_target.to(device).load_state_dict(qf2.state_dict())
    rsnorm = RSNorm(obs_dim).to(device)
    log_alpha = torch.tensor(float(np.log(args.alpha_init)), device=device, requires_grad=True)
    target_entropy = -args.target_entropy_scale * act_dim
    fused = args.fused_adamw or None
    actor_optimizer = torch.optim.AdamW(actor.parameters(), lr=args.actor_lr, weight_decay=args.weight_decay,
                                        fused=fused)  # fmt: skip
    q_optimizer = torch.optim.AdamW([*qf1.parameters(), *qf2.parameters()], lr=args.critic_lr,
                                    weight_decay=args.weight_decay, fused=fused)  # fmt: skip
    # Weight decay would pull log(alpha) toward 0 (alpha toward 1), so the temperature gets none.
    alpha_optimizer = torch.optim.AdamW([log_alpha], lr=args.alpha_lr, weight_decay=0.0, fused=fused)
    optimizers = (actor_optimizer, q_optimizer, alpha_optimizer)
    print(memory_report(f"replay buffer of {args.buffer_size:,} agent steps",
                        ReplayBuffer.memory_bytes(args.buffer_size, (obs_dim,), (act_dim,))), flush=True)  # fmt: skip
    rb = ReplayBuffer(args.buffer_size, (obs_dim,), (act_dim,), device=device, seed=args.seed)

    def probe_actor():  # batches for the metrics logged around a reset; None before any data
        return (rsnorm(rb.sample(min(256, len(rb))).observations),) if len(rb) else None

    def probe_critic():
        if not len(rb):
            return None
        data = rb.sample(min(256, len(rb)))
        return rsnorm(data.observations), data.actions

    scheduler = ResetScheduler(reset_cfg, log_fn=writer.add_scalar, run_dir=run_dir, total_steps=args.total_timesteps)
    scheduler.add_network("actor", actor, optimizer=actor_optimizer, probe=probe_actor)
    scheduler.add_network("qf1", qf1, target=qf1_target, optimizer=q_optimizer, probe=probe_critic)
    scheduler.add_network("qf2", qf2, target=qf2_target, optimizer=q_optimizer, probe=probe_critic)
    scheduler.add_temperature(log_alpha, alpha_optimizer)
    for name, net in (("actor", actor), ("qf1", qf1), ("qf2", qf2)):
        regularizer.add_network(name, net, scheduler.theta0(name))
    replay = ReplayRatio(args.replay_ratio)
    global_step, update_step = 0, 0
    learning_starts = args.learning_starts
    modules = {"actor": actor, "qf1": qf1, "qf2": qf2, "qf1_target": qf1_target, "qf2_target": qf2_target,
               "rsnorm": rsnorm}  # fmt: skip
    if checkpoint:
        scheduler.load_state_dict(checkpoint["scheduler"])
        for name, module in modules.items():
            module.load_state_dict(checkpoint[name])
        for optimizer, state in zip(optimizers, checkpoint["optimizers"]):
            optimizer.load_state_dict(state)
        with torch.no_grad():
            log_alpha.copy_(checkpoint["log_alpha"])
        replay.load_state_dict(checkpoint["replay_ratio"])
        regularizer.load_state_dict(checkpoint["regularizer"])
        if "buffer" in checkpoint:
            rb.load_state_dict(checkpoint["buffer"])
        set_rng_state(checkpoint["rng"])
        global_step, update_step = checkpoint["global_step"], checkpoint["update_step"]
        if "buffer" not in checkpoint:  # refill the replay buffer before learning again
            learning_starts = global_step + max(args.batch_size, min(args.learning_starts, args.buffer_size))
        print(f"resumed {run_dir} at env step {global_step:,} (update {update_step:,})", flush=True)

    def save(tag: str) -> None:
        payload = {name: module.state_dict() for name, module in modules.items()}
        payload.update({
            "args": asdict(args), "global_step": global_step, "update_step": update_step,
            "optimizers": [o.state_dict() for o in optimizers], "log_alpha": log_alpha.detach().clone(),
            "scheduler": scheduler.state_dict(), "replay_ratio": replay.state_dict(), "rng": get_rng_state(),
            "regularizer": regularizer.state_dict(), "env_state": get_env_state(env), "obs": obs,
        })  # fmt: skip
        if args.save_buffer:
            payload["buffer"] = rb.state_dict()
        save_checkpoint(run_dir / "checkpoint.pt", payload, agent=AGENT, env_id=args.env_id, finite=modules)
        writer.flush()
        tqdm.write(f"checkpoint ({tag}) at env step {global_step:,}")

    # ---- the loop -----------------------------------------------------------------------------------------------
    if checkpoint:  # the episode continues where it was: simulator, wrappers and their RNGs
        set_env_state(env, checkpoint["env_state"])
        obs = checkpoint["obs"]
    else:
        obs, _ = env.reset(seed=args.seed)
        rsnorm.update(obs)
    start_time, sps_step = time.time(), global_step
    last_return, stats = float("nan"), None
    progress = tqdm(
        total=args.total_timesteps,
        initial=global_step,
        unit="step",
        dynamic_ncols=True,
        smoothing=0.05,
        mininterval=1.0,
    )
    with GracefulStop() as stop:
        while global_step < args.total_timesteps:
            if global_step < args.learning_starts:
                action = env.action_space.sample()
            else:
                with torch.inference_mode():
                    action, _, _ = actor.sample(rsnorm(torch.as_tensor(obs, device=device)[None]))
                action = action[0].cpu().numpy()
            next_obs, reward, terminated, truncated, info = env.step(action)
            step_size = info["env_steps"]
            global_step += step_size
            progress.update(step_size)
            rsnorm.update(next_obs)

            if "episode" in info:
                last_return = float(info["episode"]["r"])
                writer.add_scalar("charts/episodic_return", last_return, global_step)
                writer.add_scalar("charts/episodic_length", int(info["episode"]["l"]), global_step)

            rb.add(obs[None], next_obs[None], action[None], np.array([reward]), np.array([terminated]),
                   np.array([truncated]))  # fmt: skip
            obs = next_obs
            if terminated or truncated:
                obs, _ = env.reset()
                rsnorm.update(obs)

            if global_step >= learning_starts:
                for _ in range(replay.updates(1)):
                    data = rb.sample(args.batch_size)
                    stats = update(actor, qf1, qf2, qf1_target, qf2_target, rsnorm, log_alpha, optimizers,
                                   regularizer, data, args, target_entropy)  # fmt: skip
                    update_step += 1
                    if update_step % 100 == 0:
                        values = dict(zip(stats, torch.stack(list(stats.values())).tolist()))
                        bad = [k for k, v in values.items() if not np.isfinite(v)]
                        if bad:
                            raise FloatingPointError(
                                f"non-finite {bad} at env step {global_step}, update {update_step}; "
                                f"the last good checkpoint is {run_dir / 'checkpoint.pt'}"
                            )
                        for key, value in values.items():
                            writer.add_scalar(f"losses/{key}", value, global_step)
                        sps = int((global_step - sps_step) / (time.time() - start_time))
                        writer.add_scalar("charts/SPS", sps, global_step)
                        writer.add_scalar("charts/update_step", update_step, global_step)
                        progress.set_postfix(sps=sps, ret=f"{last_return:.1f}", upd=update_step, refresh=False)

            if (event := scheduler.step(global_step, update_step)) is not None:
                regularizer.on_reset()
                tqdm.write(
                    f"{args.reset} reset at env step {global_step:,} (update {update_step:,}): {event.seconds:.2f} s"
                )

            if crossed(global_step, step_size, args.metrics_every) and len(rb) >= args.batch_size:
                for name, net, inputs in (("actor", actor, probe_actor()), ("qf1", qf1, probe_critic())):
                    for key, value in plasticity_metrics(net, inputs).items():
                        writer.add_scalar(f"plasticity/{name}/{key}", value, global_step)
                for key, value in regularizer.log_scalars().items():
                    writer.add_scalar(key, value, global_step)
            done = global_step >= args.total_timesteps  # the last step also evaluates and checkpoints
            if crossed(global_step, step_size, args.eval_every) or (done and args.eval_every):
                eval_returns = evaluate(actor, rsnorm, args, device, seed=args.seed + 10_000 + global_step)
                writer.add_scalar("eval/episodic_return", float(np.mean(eval_returns)), global_step)
            if crossed(global_step, step_size, args.checkpoint_every) or done:
                save("final" if done else "periodic")
            if stop.requested and not done:
                save(f"{stop.requested}")
                writer.close()
                env.close()
                progress.close()
                print(f"stopped by {stop.requested} at env step {global_step:,}; resume with --resume {run_dir}")
                return 130

        # Still inside GracefulStop: a SIGTERM now only sets the flag, so a finished run ends with exit code 0.
        progress.close()
        result = {"finished": True, "global_step": global_step, "update_step": update_step,
                  "resets": len(scheduler.events)}  # fmt: skip
        write_json_atomic(run_dir / "result.json", result)
        env.close()
        writer.close()
        return 0


if __name__ == "__main__":
    try:
        setup = configure(tyro.cli(Args))
    except (ValueError, ImportError, CheckpointError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    try:
        sys.exit(train(*setup))
    except FloatingPointError as err:  # numerical trouble: say where, keep the last good checkpoint
        print(f"error: {err}", file=sys.stderr)
        sys.exit(3)
    except OSError as err:  # disk full, run directory gone or unwritable: the last checkpoint is intact
        print(f"error: {err}", file=sys.stderr)
        sys.exit(4)
