# DQN on Atari with weight resets at any replay ratio. Docs: README.md, section "DQN on Atari (agents/dqn_atari.py)".
# CleanRL-style single file: Args, the update, then the loop, read top to bottom.
from __future__ import annotations

import copy
import os
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
import tyro
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from fire_rl.buffers import AtariReplayBuffer
from fire_rl.checkpoint import CheckpointError, get_rng_state, save_checkpoint, set_rng_state
from fire_rl.cli import PlasticityArgs, RunArgs
from fire_rl.envs.atari import episode_stats, make_atari_env, real_next_obs
from fire_rl.envs.env_state import get_env_state, set_env_state
from fire_rl.metrics import plasticity_metrics
from fire_rl.networks import QNetwork, update_target_
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

AGENT = "dqn_atari"

# The two hyper-parameter sets of DESIGN 5. A field left at None in Args takes its preset's value.
PRESETS = {
    "cleanrl": dict(
        total_timesteps=10_000_000,
        learning_rate=1e-4,
        adam_eps=1e-8,
        num_envs=1,
        replay_ratio=0.25,
        target_network_frequency=1_000,
        learning_starts=80_000,
        loss="mse",
        init="pytorch",
        eval_every=0,
    ),
    "fire-paper": dict(
        total_timesteps=2_500_000,
        learning_rate=6.25e-5,
        adam_eps=1.5e-4,
        num_envs=4,
        replay_ratio=1.0,
        target_network_frequency=2_000,
        learning_starts=20_000,
        loss="huber",
        init="xavier",
        eval_every=250_000,
    ),
}


@dataclass
class Args(PlasticityArgs, RunArgs):
    exp_name: str = os.path.basename(__file__)[: -len(".py")]
    """the name of this experiment"""
    save_model: bool = False
    """whether to save the final Q-network to `run_dir/dqn_atari.cleanrl_model`"""

    # Algorithm specific arguments
    env_id: str = "ALE/Breakout-v5"
    """the id of the environment (any ALE v5 or NoFrameskip-v4 id)"""
    preset: Literal["cleanrl", "fire-paper"] = "cleanrl"
    """hyper-parameter set (DESIGN 5): CleanRL's dqn_atari.py, or the official FIRE DQN"""
    total_timesteps: int | None = None
    """total env steps of the experiment (preset: 10M cleanrl, 2.5M fire-paper)"""
    learning_rate: float | None = None
    """the learning rate of the optimizer (preset: 1e-4, 6.25e-5)"""
    adam_eps: float | None = None
    """Adam's epsilon (preset: 1e-8, 1.5e-4)"""
    num_envs: int | None = None
    """the number of parallel game environments (preset: 1, 4)"""
    replay_ratio: float | None = None
    """gradient updates per env step (preset: 0.25, 1.0); fractional ratios accumulate"""
    buffer_size: int = 1_000_000
    """the replay memory buffer size (env steps)"""
    gamma: float = 0.99
    """the discount factor gamma"""
    tau: float = 1.0
    """the target network update rate"""
    target_network_frequency: int | None = None
    """env steps between target network updates (preset: 1000, 2000)"""
    batch_size: int = 32
    """the batch size of sample from the reply memory"""
    start_e: float = 1.0
    """the starting epsilon for exploration"""
    end_e: float = 0.01
    """the ending epsilon for exploration"""
    exploration_fraction: float = 0.10
    """the fraction of `total-timesteps` it takes from start-e to go end-e"""
    learning_starts: int | None = None
    """env step to start learning (preset: 80k, 20k)"""
    loss: Literal["mse", "huber"] | None = None
    """TD loss (preset: mse cleanrl, huber fire-paper)"""
    double_dqn: bool = False
    """use the online network to pick the next action (Double DQN)"""
    init: Literal["pytorch", "xavier"] | None = None
    """weight init (preset: pytorch defaults, Xavier-uniform with zero biases)"""
    fused_adam: bool = True
    """fused Adam kernel (about 1.2x per update on CPU); --no-fused-adam runs PyTorch's default path, the reference"""
    channels_last: bool = True
    """channels_last memory format for the convs (about 1.1x on CPU); --no-channels-last runs the reference layout"""
    overlap: bool = False
    """run each learning step's gradient updates in a background thread while the next env steps are acted and
    played (a second core works); same updates, but actions come from the weights one learning step older (README)"""

    # Resets and per-step methods: the flags of fire_rl.cli.PlasticityArgs (--reset, --reset-at, --regularizer, ...)
    reset_recipe: Literal["paper-dqn", "custom"] = "paper-dqn"
    """paper-dqn: the official FIRE DQN recipe (convs get the method, linears return to theta_0); custom: the method on
    the layers chosen by --reset-kinds/--reset-roles/--reset-names"""

    # Evaluation, metrics, checkpoints
    eval_every: int | None = None
    """env steps between evaluations (0: off; preset: off cleanrl, 250k fire-paper)"""
    eval_episodes: int = 10
    """episodes per evaluation"""
    eval_epsilon: float = 0.001
    """epsilon of the evaluation policy"""


def resolve_args(args: Args) -> Args:
    """Fill preset values and check every value before any work. Raises ValueError naming the bad value."""
    for key, value in PRESETS[args.preset].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    positive = ["total_timesteps", "learning_rate", "num_envs", "replay_ratio", "buffer_size", "batch_size",
                "target_network_frequency", "eval_episodes"]  # fmt: skip
    for name in positive:
        if not getattr(args, name) > 0:
            raise ValueError(f"--{name.replace('_', '-')}={getattr(args, name)}: must be > 0")
    for name in ["learning_starts", "eval_every"]:
        if getattr(args, name) < 0:
            raise ValueError(f"--{name.replace('_', '-')}={getattr(args, name)}: must be >= 0")
    if args.buffer_size < args.batch_size:
        raise ValueError(f"--buffer-size={args.buffer_size} is smaller than --batch-size={args.batch_size}")
    if not 0.0 <= args.gamma <= 1.0 or not 0.0 < args.tau <= 1.0:
        raise ValueError(f"--gamma={args.gamma} must be in [0, 1] and --tau={args.tau} in (0, 1]")
    args.default_schedule(args.total_timesteps)
    return args


def linear_schedule(start_e: float, end_e: float, duration: int, t: int) -> float:
    """Epsilon at env step `t`: linear from `start_e` to `end_e` over `duration` env steps, then flat (CleanRL)."""
    slope = (end_e - start_e) / duration
    return max(slope * t + start_e, end_e)


def update(q_network, target_network, optimizer, regularizer, data, gamma: float, loss_kind: str, double_dqn: bool):
    """One DQN gradient update (Mnih et al. 2015; Double DQN: van Hasselt et al. 2016) on a replay batch.

    Args:
        data: `ReplayBatch` with observations and next_observations (B, 4, 84, 84) uint8, actions (B,) int64,
            rewards (B,) float32 (clipped by the env) and dones (B,) float32 (terminations only: truncation bootstraps).
        loss_kind: ``"mse"`` (CleanRL) or ``"huber"`` (smooth L1, δ = 1; the official FIRE DQN).
        regularizer: its loss term is added before `backward()` and its `after_step` runs after `optimizer.step()`.

    Returns:
        ``{"td_loss", "q_values"}``: 0-dim detached tensors (no host sync here; the loop reads them every 100 updates).
    """
    with torch.no_grad():
        if double_dqn:
            next_actions = q_network(data.next_observations).argmax(dim=1, keepdim=True)
            target_max = target_network(data.next_observations).gather(1, next_actions).squeeze(1)
        else:
            target_max = target_network(data.next_observations).max(dim=1).values
        td_target = data.rewards + gamma * target_max * (1.0 - data.dones)
    old_val = q_network(data.observations).gather(1, data.actions.unsqueeze(1)).squeeze(1)
    loss = F.mse_loss(td_target, old_val) if loss_kind == "mse" else F.smooth_l1_loss(old_val, td_target)
    optimizer.zero_grad(set_to_none=True)
    (loss + regularizer.loss("q")).backward()
    optimizer.step()
    regularizer.after_step("q")
    return {"td_loss": loss.detach(), "q_values": old_val.mean().detach()}


@torch.inference_mode()
def evaluate(q_network, args: Args, device: torch.device, seed: int) -> list[float]:
    """The scores of `eval_episodes` games (unclipped, all lives) played with epsilon-greedy actions."""
    envs = make_atari_env(args.env_id, 1, seed, preset=args.preset, eval=True)
    rng = np.random.default_rng(seed)
    returns: list[float] = []
    obs, _ = envs.reset(seed=seed)
    while len(returns) < args.eval_episodes:
        if rng.random() < args.eval_epsilon:
            actions = np.array([envs.single_action_space.sample()])
        else:
            actions = q_network(torch.as_tensor(obs, device=device)).argmax(dim=1).cpu().numpy()
        obs, _, _, _, infos = envs.step(actions)
        returns.extend(game_return for _, game_return, _ in episode_stats(infos))
    envs.close()
    return returns


def configure(args: Args):
    """Check every flag, the env id and the resume path before any work, and build the training envs.

    Returns:
        (args with preset values filled, device, ResetConfig, Regularizer, checkpoint payload or None, run dir, envs).

    Raises:
        ValueError: a bad flag value or combination, an unknown env id, an unusable run directory.
        CheckpointError: `--resume` names no checkpoint of this agent and env.
    """
    args = resolve_args(args)
    device = resolve_device(args.device)
    reset_cfg = args.reset_config()
    reset_cfg.validate(args.total_timesteps)
    regularizer = args.make_regularizer()
    checkpoint, run_dir = args.open_run(AGENT, args.env_id)
    envs = make_atari_env(args.env_id, args.num_envs, args.seed, preset=args.preset,
                          capture_video=args.capture_video, run_dir=run_dir)  # fmt: skip
    return args, device, reset_cfg, regularizer, checkpoint, run_dir, envs


def train(args: Args, device, reset_cfg: ResetConfig, regularizer: Regularizer, checkpoint: dict | None,
          run_dir: Path, envs) -> int:  # fmt: skip
    """Train for `args.total_timesteps` env steps (from the checkpoint's step when resuming).

    Returns 0 when the run finished, 130 when stopped by SIGINT/SIGTERM (after a checkpoint). Raises FloatingPointError
    on a NaN or Inf in a loss, a Q-value or a reset (the last good checkpoint is kept).
    """
    n_actions = int(envs.single_action_space.n)
    mem = AtariReplayBuffer.memory_bytes(args.buffer_size, args.num_envs)
    print(memory_report(f"replay buffer of {args.buffer_size:,} env steps", mem), flush=True)

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

    # ---- networks, optimizer, buffer, reset scheduler -----------------------------------------------------------
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    q_network = QNetwork(n_actions, init=args.init).to(device, memory_format=memory_format)
    optimizer = torch.optim.Adam(q_network.parameters(), lr=args.learning_rate, eps=args.adam_eps,
                                 fused=args.fused_adam or None)  # fmt: skip
    target_network = QNetwork(n_actions, init=args.init).to(device, memory_format=memory_format)
    target_network.load_state_dict(q_network.state_dict())
    rb = AtariReplayBuffer(args.buffer_size, args.num_envs, device=device, seed=args.seed,
                           channels_last=args.channels_last)  # fmt: skip
    scheduler = ResetScheduler(reset_cfg, log_fn=writer.add_scalar, run_dir=run_dir, total_steps=args.total_timesteps)

    def probe():  # a batch for the metrics logged around a reset; None before any data
        return (rb.sample(min(256, len(rb))).observations,) if len(rb) else None

    scheduler.add_network("q", q_network, target=target_network, optimizer=optimizer, probe=probe)
    regularizer.add_network("q", q_network, scheduler.theta0("q"))
    replay = ReplayRatio(args.replay_ratio)
    # --overlap: `actor` acts while the updates of the last learning step run on `q_network` in the background; it
    # takes the new weights when the next learning step starts (one learning step of lag, never a torn read).
    actor = copy.deepcopy(q_network) if args.overlap else q_network
    learner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="learner") if args.overlap else None
    job: Future | None = None
    rng = np.random.default_rng(args.seed)  # exploration
    global_step, update_step = 0, 0
    learning_starts = args.learning_starts
    if checkpoint:
        scheduler.load_state_dict(checkpoint["scheduler"])
        q_network.load_state_dict(checkpoint["q_network"])
        target_network.load_state_dict(checkpoint["target_network"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        replay.load_state_dict(checkpoint["replay_ratio"])
        regularizer.load_state_dict(checkpoint["regularizer"])
        if "buffer" in checkpoint:
            rb.load_state_dict(checkpoint["buffer"])
        if args.overlap:
            actor = copy.deepcopy(q_network)  # after the scheduler re-applied any plasticity injection
            if "actor" in checkpoint:
                actor.load_state_dict(checkpoint["actor"])
        set_rng_state(checkpoint["rng"])
        rng.bit_generator.state = checkpoint["exploration_rng"]
        global_step, update_step = checkpoint["global_step"], checkpoint["update_step"]
        if "buffer" not in checkpoint:  # refill the replay buffer before learning again
            learning_starts = global_step + max(args.batch_size, min(args.learning_starts, args.buffer_size))
        print(f"resumed {run_dir} at env step {global_step:,} (update {update_step:,})", flush=True)

    def learn(batches: list, first_update: int, step: int, epsilon: float, copy_target: bool) -> None:
        """The gradient updates of env step `step` (update numbers first_update + 1, ...), then the target update."""
        for i, data in enumerate(batches):
            stats = update(q_network, target_network, optimizer, regularizer, data, args.gamma, args.loss,
                           args.double_dqn)  # fmt: skip
            if (first_update + i + 1) % 100 == 0:
                td_loss, q_mean = (float(v) for v in torch.stack([stats["td_loss"], stats["q_values"]]).tolist())
                if not (np.isfinite(td_loss) and np.isfinite(q_mean)):
                    raise FloatingPointError(
                        f"losses/td_loss={td_loss} losses/q_values={q_mean} at env step {step}, update "
                        f"{first_update + i + 1}; the last good checkpoint is {run_dir / 'checkpoint.pt'}"
                    )
                sps = int((step - sps_step) / (time.time() - start_time))
                writer.add_scalar("losses/td_loss", td_loss, step)
                writer.add_scalar("losses/q_values", q_mean, step)
                writer.add_scalar("charts/SPS", sps, step)
                writer.add_scalar("charts/epsilon", epsilon, step)
                writer.add_scalar("charts/update_step", first_update + i + 1, step)
                progress.set_postfix(sps=sps, ret=f"{last_return:.1f}", upd=first_update + i + 1, refresh=False)
        if copy_target:
            update_target_(target_network, q_network, args.tau)

    def finish_learning() -> None:
        """--overlap: wait for the background updates (they may raise FloatingPointError) before the networks are read
        or changed here."""
        nonlocal job
        if job is not None:
            job, running = None, job
            running.result()

    def save(tag: str) -> None:
        finish_learning()
        payload = {
            "args": asdict(args), "global_step": global_step, "update_step": update_step,
            "q_network": q_network.state_dict(), "target_network": target_network.state_dict(),
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "replay_ratio": replay.state_dict(), "regularizer": regularizer.state_dict(), "rng": get_rng_state(),
            "exploration_rng": rng.bit_generator.state, "env_state": get_env_state(envs), "obs": obs,
        }  # fmt: skip
        if args.overlap:
            payload["actor"] = actor.state_dict()
        if args.save_buffer:
            payload["buffer"] = rb.state_dict()
        save_checkpoint(run_dir / "checkpoint.pt", payload, agent=AGENT, env_id=args.env_id,
                        finite={"q_network": q_network, "target_network": target_network})  # fmt: skip
        writer.flush()
        tqdm.write(f"checkpoint ({tag}) at env step {global_step:,}")

    # ---- the loop -----------------------------------------------------------------------------------------------
    if checkpoint:  # the games continue where they were: emulators, wrappers and their RNGs
        set_env_state(envs, checkpoint["env_state"])
        obs = checkpoint["obs"]
    else:
        obs, _ = envs.reset(seed=args.seed)
    start_time, sps_step = time.time(), global_step
    last_return = float("nan")
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
            epsilon = linear_schedule(args.start_e, args.end_e, args.exploration_fraction * args.total_timesteps,
                                      global_step)  # fmt: skip
            if rng.random() < epsilon:
                actions = rng.integers(n_actions, size=args.num_envs)
            else:
                with torch.inference_mode():
                    q_values = actor(torch.as_tensor(obs, device=device))
                actions = q_values.argmax(dim=1).cpu().numpy()
            next_obs, rewards, terminations, truncations, infos = envs.step(actions)
            global_step += args.num_envs
            progress.update(args.num_envs)

            for _, game_return, game_length in episode_stats(infos):
                last_return = game_return
                writer.add_scalar("charts/episodic_return", game_return, global_step)
                writer.add_scalar("charts/episodic_length", game_length, global_step)

            # Same-step autoreset: rows of ended games hold the next game's first frame; store the real last one.
            rb.add(obs, real_next_obs(next_obs, infos, terminations, truncations), actions, rewards, terminations,
                   truncations)  # fmt: skip
            obs = next_obs

            if global_step > learning_starts:
                # Batches are drawn here, in the loop's order, so --overlap trains on exactly the same batches.
                batches = [rb.sample(args.batch_size) for _ in range(replay.updates(args.num_envs))]
                copy_target = crossed(global_step, args.num_envs, args.target_network_frequency)
                if not args.overlap:
                    learn(batches, update_step, global_step, epsilon, copy_target)
                elif batches or copy_target:
                    finish_learning()
                    update_target_(actor, q_network, 1.0)  # act with the weights of the updates just finished
                    job = learner.submit(learn, batches, update_step, global_step, epsilon, copy_target)
                update_step += len(batches)

            if scheduler.due(global_step):
                finish_learning()
            if (event := scheduler.step(global_step, update_step)) is not None:
                regularizer.on_reset()
                if args.overlap:  # plasticity injection changes the parameter set: the actor takes the new one
                    actor = copy.deepcopy(q_network)
                tqdm.write(
                    f"{args.reset} reset at env step {global_step:,} (update {update_step:,}): {event.seconds:.2f} s"
                )

            if crossed(global_step, args.num_envs, args.metrics_every) and len(rb) >= args.batch_size:
                finish_learning()
                for key, value in plasticity_metrics(q_network, rb.sample(min(256, len(rb))).observations).items():
                    writer.add_scalar(f"plasticity/{key}", value, global_step)
                for key, value in regularizer.log_scalars().items():
                    writer.add_scalar(key, value, global_step)
            done = global_step >= args.total_timesteps  # the last step also evaluates and checkpoints
            if crossed(global_step, args.num_envs, args.eval_every) or (done and args.eval_every):
                finish_learning()
                eval_returns = evaluate(q_network, args, device, seed=args.seed + 10_000 + global_step)
                writer.add_scalar("eval/episodic_return", float(np.mean(eval_returns)), global_step)
            if crossed(global_step, args.num_envs, args.checkpoint_every) or done:
                save("final" if done else "periodic")
            if stop.requested and not done:
                save(f"{stop.requested}")
                if learner is not None:
                    learner.shutdown()
                writer.close()
                envs.close()
                progress.close()
                print(f"stopped by {stop.requested} at env step {global_step:,}; resume with --resume {run_dir}")
                return 130

        # Still inside GracefulStop: a SIGTERM now only sets the flag, so a finished run ends with exit code 0.
        progress.close()
        if learner is not None:
            learner.shutdown()
        if args.save_model:
            torch.save(q_network.state_dict(), run_dir / f"{args.exp_name}.cleanrl_model")
        result = {"finished": True, "global_step": global_step, "update_step": update_step,
                  "resets": len(scheduler.events)}  # fmt: skip
        write_json_atomic(run_dir / "result.json", result)
        envs.close()
        writer.close()
        return 0


if __name__ == "__main__":
    try:
        setup = configure(tyro.cli(Args))
    except (ValueError, CheckpointError) as err:
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
