# SAC with SimBa networks on humanoid control, with weight resets. Docs: README.md, section "SAC + SimBa".
# CleanRL-style single file: Args, the update, then the loop, read top to bottom.
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Annotated, Literal

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from fire_rl.buffers import ReplayBuffer
from fire_rl.cli import PlasticityArgs, RunArgs
from fire_rl.envs.env_state import get_env_state, set_env_state
from fire_rl.envs.humanoid import make_humanoid_env
from fire_rl.metrics import plasticity_metrics
from fire_rl.networks import RSNorm, SimbaActor, SimbaCritic, update_target_
from fire_rl.run import Run, check_memory, parse_args
from fire_rl.runtime import ReplayRatio, compiled, crossed, resolve_device, seed_everything, warm_up
from fire_rl.scheduler import ResetScheduler
from fire_rl.validation import MAX_STEPS, In

AGENT = "sac_simba"


@dataclass
class Args(PlasticityArgs, RunArgs):
    exp_name: str = os.path.basename(__file__)[: -len(".py")]
    """the name of this experiment"""

    # Algorithm specific arguments
    env_id: str = "Humanoid-v5"
    """the environment id: HumanoidBench (h1-walk-v0, ... when installed), gymnasium MuJoCo, or dm_control/<task>-v0"""
    total_timesteps: Annotated[int, In(1, MAX_STEPS)] = 1_000_000
    """total env steps of the experiment (an agent step is `action_repeat` env steps)"""
    action_repeat: Annotated[int, In(1, 1000)] = 2
    """env steps per agent step (SimBa: 2)"""
    replay_ratio: Annotated[float, In(0.0001, 1000)] = 2.0
    """gradient updates per agent step (SimBa: 2)"""
    buffer_size: Annotated[int, In(1, MAX_STEPS)] = 1_000_000
    """the replay memory buffer size (agent steps)"""
    gamma: Annotated[float, In(0, 1)] = 0.99
    """the discount factor gamma (per agent step)"""
    tau: Annotated[float, In(0, 1, "(]")] = 0.005
    """target smoothing coefficient"""
    batch_size: Annotated[int, In(1, 1_000_000)] = 256
    """the batch size of sample from the replay memory"""
    learning_starts: Annotated[int, In(0, MAX_STEPS)] = 10_000
    """env step to start learning (SimBa and FIRE: 5,000 transitions = 10,000 env steps at action repeat 2)"""
    actor_lr: Annotated[float, In(0, bounds="(]")] = 1e-4
    """the learning rate of the actor's AdamW"""
    critic_lr: Annotated[float, In(0, bounds="(]")] = 1e-4
    """the learning rate of the critics' AdamW"""
    alpha_lr: Annotated[float, In(0, bounds="(]")] = 1e-4
    """the learning rate of the temperature's AdamW"""
    weight_decay: Annotated[float, In(0)] = 1e-2
    """AdamW weight decay of the actor and critics (the temperature has none)"""
    alpha_init: Annotated[float, In(0, bounds="(]")] = 0.01
    """initial temperature"""
    target_entropy_scale: float = 0.5
    """target entropy = -target_entropy_scale * |A| (SimBa: -|A|/2)"""
    actor_hidden: Annotated[int, In(1, 65_536)] = 128
    """SimBa actor width"""
    actor_blocks: Annotated[int, In(0, 1000)] = 1
    """SimBa actor residual blocks"""
    critic_hidden: Annotated[int, In(1, 65_536)] = 512
    """SimBa critic width"""
    critic_blocks: Annotated[int, In(0, 1000)] = 2
    """SimBa critic residual blocks"""
    cdq: Literal["auto", "on", "off"] = "auto"
    """clipped double Q: auto follows SimBa (on for tasks that terminate: HumanoidBench, gymnasium MuJoCo; off for
    dm_control, where qf1 alone is trained and used), or on/off"""
    fused_adamw: bool = True
    """fused AdamW kernels (about 1.1x per update on CPU); --no-fused-adamw runs PyTorch's default, the reference"""
    head_blocks: Annotated[int, In(0, 1000)] = 0
    """residual blocks counted in the head (1: plasticity injection and head resets cover the last block + head)"""

    # Resets and per-step methods: the flags of fire_rl.cli.PlasticityArgs (--reset, --reset-at, --regularizer, ...)
    reset_recipe: Literal["paper-sac", "custom"] = "paper-sac"
    """paper-sac: the official FIRE SAC recipe (every Linear of actor and both critics, fresh optimizers and
    temperature, target := result); custom: the method on the layers chosen by --reset-kinds/-roles/-names"""

    # Evaluation, metrics, checkpoints
    eval_every: Annotated[int, In(0, MAX_STEPS)] = 50_000
    """env steps between evaluations with the deterministic policy (0: off)"""
    eval_episodes: Annotated[int, In(1, 1_000_000)] = 5
    """episodes per evaluation"""

    def check(self, branch_step: int | None = None) -> None:
        super().check(branch_step)
        if self.head_blocks > min(self.actor_blocks, self.critic_blocks):
            raise ValueError(f"--head-blocks={self.head_blocks} exceeds the actor's or critic's block count")


def update(actor, qf1, qf2, qf1_target, qf2_target, rsnorm, log_alpha, optimizers, regularizer, data, args,
           target_entropy, cdq: bool = True):  # fmt: skip
    """One SAC update (Haarnoja et al. 2018) in SimBa's order: actor, temperature, critics (with the updated actor),
    target EMA (Lee et al. 2024).

    Args:
        data: `ReplayBatch` of raw observations and next_observations (B, obs_dim) float32 (normalised here by
            `rsnorm`), actions (B, act_dim) in [-1, 1], rewards (B,) summed over the action repeat, dones (B,)
            terminations only (truncation bootstraps).
        optimizers: (actor, both critics, temperature) optimizers.
        target_entropy: -target_entropy_scale * |A|.
        cdq: clipped double Q, min(Q1, Q2) in the actor loss and the TD target (Fujimoto et al. 2018); off: qf1 alone
            is used and trained (SimBa's ``critic_use_cdq=False``), qf2 and its target stay as built.

    Returns:
        0-dim detached tensors: losses, Q-values, alpha, entropy (no host sync here). The actor step computes no
        critic weight-gradients (the critics' trainable parameters are frozen for it, parameters frozen by plasticity
        injection stay frozen) and the temperature loss reuses the actor step's log-probabilities.
    """
    actor_optimizer, q_optimizer, alpha_optimizer = optimizers
    obs, next_obs = rsnorm(data.observations), rsnorm(data.next_observations)
    critic_params = [p for q in ((qf1, qf2) if cdq else (qf1,)) for p in q.parameters() if p.requires_grad]

    alpha = log_alpha.exp().detach()
    pi, log_pi, _ = actor.sample(obs)
    for p in critic_params:
        p.requires_grad_(False)
    min_qf_pi = torch.min(qf1(obs, pi), qf2(obs, pi)) if cdq else qf1(obs, pi)
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
        qf1_next = qf1_target(next_obs, next_actions)
        min_qf_next = torch.min(qf1_next, qf2_target(next_obs, next_actions)) if cdq else qf1_next
        min_qf_next = min_qf_next - log_alpha.exp() * next_log_pi
        next_q_value = data.rewards + (1.0 - data.dones) * args.gamma * min_qf_next
    qf1_a_values = qf1(obs, data.actions)
    qf1_loss = F.mse_loss(qf1_a_values, next_q_value)
    stats = {"qf1_loss": qf1_loss.detach(), "qf1_values": qf1_a_values.mean().detach()}
    if cdq:
        qf2_a_values = qf2(obs, data.actions)
        qf2_loss = F.mse_loss(qf2_a_values, next_q_value)
        q_loss = qf1_loss + qf2_loss + regularizer.loss("qf1") + regularizer.loss("qf2")
        stats.update(qf2_loss=qf2_loss.detach(), qf2_values=qf2_a_values.mean().detach())
    else:
        q_loss = qf1_loss + regularizer.loss("qf1")
    q_optimizer.zero_grad(set_to_none=True)
    q_loss.backward()
    q_optimizer.step()
    regularizer.after_step(*(("qf1", "qf2") if cdq else ("qf1",)))

    update_target_(qf1_target, qf1, args.tau)
    if cdq:
        update_target_(qf2_target, qf2, args.tau)
    stats.update(
        actor_loss=actor_loss.detach(), alpha=alpha, alpha_loss=alpha_loss.detach(), entropy=-log_pi.mean().detach()
    )
    return stats


def sample_action(actor, rsnorm, obs: torch.Tensor) -> torch.Tensor:
    """(1, obs_dim) float32 raw observation -> (1, act_dim) action in [-1, 1] drawn from the policy (no autograd)."""
    with torch.no_grad():
        return actor.sample(rsnorm(obs))[0]


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


def train(args: Args, run: Run) -> None:
    """Train to `args.total_timesteps` env steps (or stop at `args.stop_at`); `run` (fire_rl/run.py) owns the run
    directory, logs, checkpoints and exit codes. All that can refuse (env id, layer selections, buffer memory;
    ImportError for a HumanoidBench id without HumanoidBench) is built before `run.start`. Raises FloatingPointError on
    a NaN or Inf in a loss, a reset or a checkpoint (the last good one is kept)."""
    device = resolve_device(args.device)
    env = make_humanoid_env(args.env_id, args.seed, action_repeat=args.action_repeat,
                            capture_video=args.capture_video, run_dir=run.dir)  # fmt: skip
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    cdq = args.cdq == "on" or (args.cdq == "auto" and not args.env_id.startswith("dm_control/"))
    check_memory(f"replay buffer of {args.buffer_size:,} agent steps",
                 ReplayBuffer.memory_bytes(args.buffer_size, (obs_dim,), (act_dim,)),
                 device if args.buffer_device else None)  # fmt: skip
    seed_everything(args.seed, args.torch_deterministic)

    # ---- networks, optimizers, buffer, reset scheduler ----------------------------------------------------------
    actor = SimbaActor(obs_dim, act_dim, args.actor_hidden, args.actor_blocks, head_blocks=args.head_blocks).to(device)
    qf1, qf2, qf1_target, qf2_target = (
        SimbaCritic(obs_dim, act_dim, args.critic_hidden, args.critic_blocks, head_blocks=args.head_blocks).to(device)
        for _ in range(4)
    )
    qf1_target.load_state_dict(qf1.state_dict())
    qf2_target.load_state_dict(qf2.state_dict())
    rsnorm = RSNorm(obs_dim).to(device)
    log_alpha = torch.tensor(float(np.log(args.alpha_init)), device=device, requires_grad=True)
    target_entropy = -args.target_entropy_scale * act_dim
    fused = args.fused_adamw or None
    actor_optimizer = torch.optim.AdamW(actor.parameters(), lr=args.actor_lr, weight_decay=args.weight_decay,
                                        fused=fused)  # fmt: skip
    q_optimizer = torch.optim.AdamW([*qf1.parameters(), *qf2.parameters()], lr=args.critic_lr,
                                    weight_decay=args.weight_decay, fused=fused)  # fmt: skip
    # SimBa and FIRE give the temperature no weight decay (temp_weight_decay: 0.0).
    alpha_optimizer = torch.optim.AdamW([log_alpha], lr=args.alpha_lr, weight_decay=0.0, fused=fused)
    optimizers = (actor_optimizer, q_optimizer, alpha_optimizer)
    rb = ReplayBuffer(args.buffer_size, (obs_dim,), (act_dim,), device=device, seed=args.seed,
                      on_device=args.buffer_device)  # fmt: skip

    def probe_actor():  # batches for the metrics logged around a reset; None before any data
        return (rsnorm(rb.sample(min(256, len(rb)), run.probe_rng).observations),) if len(rb) else None

    def probe_critic():
        data = rb.sample(min(256, len(rb)), run.probe_rng) if len(rb) else None
        return None if data is None else (rsnorm(data.observations), data.actions)

    scheduler = ResetScheduler(args.reset_config(), log_fn=run.log, run_dir=run.dir, total_steps=args.total_timesteps)
    scheduler.add_network("actor", actor, optimizer=actor_optimizer, probe=probe_actor)
    scheduler.add_network("qf1", qf1, target=qf1_target, optimizer=q_optimizer, probe=probe_critic)
    scheduler.add_network("qf2", qf2, target=qf2_target, optimizer=q_optimizer, probe=probe_critic)
    scheduler.add_temperature(log_alpha, alpha_optimizer)
    scheduler.check()
    regularizer = args.make_regularizer()
    for name, net in (("actor", actor), ("qf1", qf1), ("qf2", qf2)):
        regularizer.add_network(name, net, scheduler.theta0(name))
    replay = ReplayRatio(args.replay_ratio)
    # Restored in this order: the scheduler first re-applies any plasticity injection, which changes the parameters.
    state = {"scheduler": scheduler, "actor": actor, "qf1": qf1, "qf2": qf2, "qf1_target": qf1_target,
             "qf2_target": qf2_target, "rsnorm": rsnorm, "actor_optimizer": actor_optimizer,
             "q_optimizer": q_optimizer, "alpha_optimizer": alpha_optimizer, "log_alpha": log_alpha,
             "replay_ratio": replay, "regularizer": regularizer}  # fmt: skip

    # --compile/--cudagraphs: compiled (and captured) now, on a batch of the right layout, all values put back after
    update_fn = compiled(update, args.compile, args.cudagraphs)
    act = compiled(sample_action, args.compile, args.cudagraphs)
    if args.compile or args.cudagraphs:
        values = {
            k: v for k, v in state.items() if isinstance(v, torch.nn.Module | torch.optim.Optimizer | torch.Tensor)
        }
        warm_up(update_fn, actor, qf1, qf2, qf1_target, qf2_target, rsnorm, log_alpha, optimizers, regularizer,
                rb.example_batch(args.batch_size), args, target_entropy, cdq, state=values)  # fmt: skip
        warm_up(act, actor, rsnorm, torch.zeros((1, obs_dim), device=device), state={"actor": actor})

    ckpt = run.start(state, rb)  # from here on the run directory is written; a branch's reset happens here
    global_step, update_step = (ckpt["global_step"], ckpt["update_step"]) if ckpt else (0, 0)

    def save(tag: str) -> None:
        run.save(state, tag, rb, global_step=global_step, update_step=update_step, obs=obs,
                 env_state=get_env_state(env))  # fmt: skip

    # ---- the loop -----------------------------------------------------------------------------------------------
    if ckpt is not None and set_env_state(env, ckpt["env_state"]):  # the episode continues where it was
        obs = ckpt["obs"]
    else:  # a fresh run, or an env without an exact state: a new episode
        obs, _ = env.reset(seed=args.seed + global_step)
        rsnorm.update(obs)
    while global_step < run.end_step:
        if global_step < args.learning_starts:
            action = env.action_space.sample()
        else:
            action = act(actor, rsnorm, torch.as_tensor(obs, device=device)[None])[0].cpu().numpy()
        next_obs, reward, terminated, truncated, info = env.step(action)
        step_size = info["env_steps"]
        global_step += step_size
        run.advance(step_size)
        rsnorm.update(next_obs)

        if "episode" in info:
            run.log("charts/episodic_return", float(info["episode"]["r"]), global_step)
            run.log("charts/episodic_length", int(info["episode"]["l"]), global_step)

        rb.add(obs[None], next_obs[None], action[None], np.array([reward]), np.array([terminated]),
               np.array([truncated]))  # fmt: skip
        obs = next_obs
        if terminated or truncated:
            obs, _ = env.reset()
            rsnorm.update(obs)

        if global_step >= run.learning_starts:
            for _ in range(replay.updates(1)):
                stats = update_fn(actor, qf1, qf2, qf1_target, qf2_target, rsnorm, log_alpha, optimizers,
                                  regularizer, rb.sample(args.batch_size), args, target_entropy, cdq)  # fmt: skip
                update_step += 1
                if update_step % 100 == 0:
                    run.log_losses(stats, global_step, update_step)

        if (event := scheduler.step(global_step, update_step)) is not None:
            regularizer.on_reset()
            tqdm.write(f"{args.reset} reset at env step {global_step:,}, update {update_step:,}: {event.seconds:.2f} s")

        if crossed(global_step, step_size, args.metrics_every) and len(rb) >= args.batch_size:
            for name, net, inputs in (("actor", actor, probe_actor()), ("qf1", qf1, probe_critic())):
                run.log_all(plasticity_metrics(net, inputs), global_step, f"plasticity/{name}/")
            run.log_all(regularizer.log_scalars(), global_step)
        done = global_step >= run.end_step  # the last step (--stop-at's too) also evaluates and checkpoints
        if crossed(global_step, step_size, args.eval_every) or (done and args.eval_every):
            eval_returns = evaluate(actor, rsnorm, args, device, seed=args.seed + 10_000 + global_step)
            run.log("eval/episodic_return", np.mean(eval_returns), global_step)
        if crossed(global_step, step_size, args.checkpoint_every) or done:
            save("final" if done else "periodic")
        if run.stop_requested and not done:
            save(run.stop_requested)
            break

    env.close()
    if global_step < run.end_step:
        return run.stop(global_step)
    run.finish({"global_step": global_step, "update_step": update_step})


if __name__ == "__main__":
    args, checkpoint = parse_args(Args, AGENT)
    with Run(args, AGENT, checkpoint) as run:
        train(args, run)
    sys.exit(run.exit_code)
