# DQN on Atari with weight resets at any replay ratio. Docs: README.md, section "DQN on Atari (agents/dqn_atari.py)".
# CleanRL-style single file: Args, the update, then the loop, read top to bottom.
from __future__ import annotations

import copy
import os
import sys
from dataclasses import dataclass
from typing import Annotated, Literal

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from fire_rl.buffers import AtariReplayBuffer
from fire_rl.cli import PlasticityArgs, RunArgs
from fire_rl.envs.atari import episode_stats, make_atari_env, real_next_obs
from fire_rl.envs.env_state import get_env_state, set_env_state
from fire_rl.metrics import plasticity_metrics
from fire_rl.networks import QNetwork, update_target_
from fire_rl.run import Run, check_memory, parse_args
from fire_rl.runtime import Background, ReplayRatio, compiled, crossed, resolve_device, seed_everything, warm_up
from fire_rl.scheduler import ResetScheduler
from fire_rl.validation import MAX_STEPS, In

AGENT = "dqn_atari"


@dataclass
class Args(PlasticityArgs, RunArgs):
    exp_name: str = os.path.basename(__file__)[: -len(".py")]
    """the name of this experiment"""
    save_model: bool = False
    """whether to save the final Q-network to `run_dir/dqn_atari.cleanrl_model`"""

    # Algorithm specific arguments. Defaults are the cleanrl preset's; `--preset fire-paper` sets those of PRESETS.
    env_id: str = "ALE/Breakout-v5"
    """the id of the environment (any ALE v5 or NoFrameskip-v4 id)"""
    env_backend: Literal["sync", "ale-vector"] = "sync"
    """sync: gymnasium's SyncVectorEnv over our wrapper stack (exact resume); ale-vector: ale-py's threaded C++
    AtariVectorEnv (faster with many envs; resumes at an episode boundary)"""
    sticky_actions: Literal["agent-step", "frame"] = "agent-step"
    """fire-paper's sticky actions (p = 0.25): once per agent step over the frame skip, as the official FIRE DQN
    (SB3's StickyActionEnv), or per frame (the ALE standard, Machado et al. 2018); the cleanrl preset has none"""
    preset: Literal["cleanrl", "fire-paper"] = "cleanrl"
    """hyper-parameter set: CleanRL's dqn_atari.py, or the official FIRE DQN (its values: README); explicit flags
    override it, and --help after --preset fire-paper shows its defaults"""
    total_timesteps: Annotated[int, In(1, MAX_STEPS)] = 10_000_000
    """total env steps of the experiment"""
    learning_rate: Annotated[float, In(0, bounds="(]")] = 1e-4
    """the learning rate of the optimizer"""
    adam_eps: Annotated[float, In(0, bounds="(]")] = 1e-8
    """Adam's epsilon"""
    num_envs: Annotated[int, In(1, 1024)] = 1
    """the number of parallel game environments"""
    replay_ratio: Annotated[float, In(0.0001, 1000)] = 0.25
    """gradient updates per env step; fractional ratios accumulate exactly"""
    buffer_size: Annotated[int, In(1, MAX_STEPS)] = 1_000_000
    """the replay memory buffer size (env steps)"""
    gamma: Annotated[float, In(0, 1)] = 0.99
    """the discount factor gamma"""
    tau: Annotated[float, In(0, 1, "(]")] = 1.0
    """the target network update rate"""
    target_network_frequency: Annotated[int, In(1, MAX_STEPS)] = 1_000
    """env steps between target network updates"""
    batch_size: Annotated[int, In(1, 1_000_000)] = 32
    """the batch size of sample from the replay memory"""
    start_e: Annotated[float, In(0, 1)] = 1.0
    """the starting epsilon for exploration"""
    end_e: Annotated[float, In(0, 1)] = 0.01
    """the ending epsilon for exploration"""
    exploration_fraction: Annotated[float, In(0, 1, "(]")] = 0.10
    """the fraction of `total-timesteps` it takes from start-e to go end-e"""
    epsilon_after_learning_starts: bool = False
    """hold epsilon at start-e until learning-starts, then decay (the official FIRE DQN); off: decay from step 0"""
    learning_starts: Annotated[int, In(0, MAX_STEPS)] = 80_000
    """env step to start learning"""
    loss: Literal["mse", "huber"] = "mse"
    """TD loss: mse (CleanRL) or huber (smooth L1, the official FIRE DQN)"""
    double_dqn: bool = False
    """use the online network to pick the next action (Double DQN)"""
    init: Literal["pytorch", "xavier"] = "pytorch"
    """weight init: PyTorch defaults, or Xavier-uniform with zero biases"""
    fused_adam: bool = True
    """fused Adam kernel (about 1.2x per update on CPU); --no-fused-adam runs PyTorch's default path, the reference"""
    channels_last: bool = True
    """channels_last memory format for the convs (about 1.1x on CPU); --no-channels-last runs the reference layout"""
    overlap: bool = False
    """opt-in speed trick: run each learning step's gradient updates in a background thread while the next env steps
    are acted and played (a second core works); same updates, but actions come from weights one learning step older
    (docs/dqn.md). Off: the serial loop, CleanRL's order (the published algorithm)"""

    # Resets and per-step methods: the flags of fire_rl.cli.PlasticityArgs (--reset, --reset-at, --regularizer, ...)
    reset_recipe: Literal["paper-dqn", "custom"] = "paper-dqn"
    """paper-dqn: the official FIRE DQN recipe (convs get the method, linears return to theta_0); custom: the method on
    the layers chosen by --reset-kinds/--reset-roles/--reset-names"""

    # Evaluation, metrics, checkpoints
    eval_every: Annotated[int, In(0, MAX_STEPS)] = 0
    """env steps between evaluations (0: off)"""
    eval_episodes: Annotated[int, In(1, 1_000_000)] = 10
    """episodes per evaluation"""
    eval_epsilon: Annotated[float, In(0, 1)] = 0.001
    """epsilon of the evaluation policy"""

    def check(self, branch_step: int | None = None) -> None:
        super().check(branch_step)
        if self.overlap and (self.compile or self.cudagraphs):
            raise ValueError("--overlap with --compile or --cudagraphs: not measured to help (a compiled update in a "
                             "background thread); drop --overlap")  # fmt: skip


# The official FIRE DQN's hyper-parameters; the cleanrl preset is Args' own defaults.
PRESETS = {
    "fire-paper": dict(
        total_timesteps=2_500_000, learning_rate=6.25e-5, adam_eps=1.5e-4, num_envs=4, replay_ratio=1.0,
        target_network_frequency=2_000, learning_starts=20_000, epsilon_after_learning_starts=True, loss="huber",
        init="xavier", eval_every=250_000,
    ),
}  # fmt: skip


def epsilon_at(args: Args, global_step: int) -> float:
    """Epsilon at env step `global_step`: linear from `start_e` to `end_e` over `exploration_fraction` of the run's
    env steps, then flat (CleanRL); from 0, or from `learning_starts` with `epsilon_after_learning_starts` (the
    official FIRE DQN)."""
    start = args.learning_starts if args.epsilon_after_learning_starts else 0
    progress = max(global_step - start, 0) / (args.exploration_fraction * args.total_timesteps)
    return max(args.start_e + (args.end_e - args.start_e) * progress, args.end_e)


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


def greedy_actions(q_network, obs: torch.Tensor) -> torch.Tensor:
    """(N, 4, 84, 84) uint8 observations -> (N,) int64 greedy actions (argmax_a Q), without autograd."""
    with torch.no_grad():
        return q_network(obs).argmax(dim=1)


@torch.inference_mode()
def evaluate(q_network, args: Args, device: torch.device, seed: int) -> list[float]:
    """The scores of `eval_episodes` games (unclipped, all lives) played with epsilon-greedy actions."""
    envs = make_atari_env(args.env_id, 1, seed, preset=args.preset, eval=True, sticky_actions=args.sticky_actions)
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


def train(args: Args, run: Run) -> None:
    """Train to `args.total_timesteps` env steps (or stop at `args.stop_at`); `run` (fire_rl/run.py) owns the run
    directory, logs, checkpoints and exit codes. All that can refuse (env id, layer selections, buffer memory) is built
    before `run.start`. Raises FloatingPointError on a NaN or Inf in a loss, a Q-value, a reset or a checkpoint (the
    last good one is kept)."""
    device = resolve_device(args.device)
    envs = make_atari_env(args.env_id, args.num_envs, args.seed, preset=args.preset, capture_video=args.capture_video,
                          run_dir=run.dir, sticky_actions=args.sticky_actions, backend=args.env_backend)  # fmt: skip
    n_actions = int(envs.single_action_space.n)
    check_memory(f"replay buffer of {args.buffer_size:,} env steps",
                 AtariReplayBuffer.memory_bytes(args.buffer_size, args.num_envs),
                 device if args.buffer_device else None)  # fmt: skip
    seed_everything(args.seed, args.torch_deterministic)

    # ---- networks, optimizer, buffer, reset scheduler -----------------------------------------------------------
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    q_network = QNetwork(n_actions, init=args.init).to(device, memory_format=memory_format)
    optimizer = torch.optim.Adam(q_network.parameters(), lr=args.learning_rate, eps=args.adam_eps,
                                 fused=args.fused_adam or None)  # fmt: skip
    target_network = QNetwork(n_actions, init=args.init).to(device, memory_format=memory_format)
    target_network.load_state_dict(q_network.state_dict())
    rb = AtariReplayBuffer(args.buffer_size, args.num_envs, device=device, seed=args.seed,
                           channels_last=args.channels_last, on_device=args.buffer_device)  # fmt: skip
    scheduler = ResetScheduler(args.reset_config(), log_fn=run.log, run_dir=run.dir, total_steps=args.total_timesteps)
    probe = lambda: (rb.sample(min(256, len(rb)), run.probe_rng).observations,) if len(rb) else None  # noqa: E731
    scheduler.add_network("q", q_network, target=target_network, optimizer=optimizer, probe=probe)
    scheduler.check()
    regularizer = args.make_regularizer()
    regularizer.add_network("q", q_network, scheduler.theta0("q"))
    replay = ReplayRatio(args.replay_ratio)
    # Restored in this order: the scheduler first re-applies any plasticity injection, which changes the parameters.
    state = {"scheduler": scheduler, "q_network": q_network, "target_network": target_network, "optimizer": optimizer,
             "replay_ratio": replay, "regularizer": regularizer}  # fmt: skip

    # --compile/--cudagraphs: compiled (and captured) now, on a batch of the right layout, all values put back after
    update_fn, act = (
        compiled(update, args.compile, args.cudagraphs),
        compiled(greedy_actions, args.compile, args.cudagraphs),
    )
    if args.compile or args.cudagraphs:
        nets = {"q_network": q_network, "target_network": target_network, "optimizer": optimizer}
        warm_up(update_fn, q_network, target_network, optimizer, regularizer, rb.example_batch(args.batch_size),
                args.gamma, args.loss, args.double_dqn, state=nets)  # fmt: skip
        example_obs = torch.zeros((args.num_envs, *envs.single_observation_space.shape), dtype=torch.uint8)
        warm_up(act, q_network, example_obs.to(device), state={"q_network": q_network})

    ckpt = run.start(state, rb)  # from here on the run directory is written; a branch's reset happens here
    global_step, update_step = (ckpt["global_step"], ckpt["update_step"]) if ckpt else (0, 0)
    rng = run.rng  # exploration
    # --overlap: `actor` acts with weights one learning step old while `q_network` learns in the background.
    actor = copy.deepcopy(q_network) if args.overlap else q_network
    if args.overlap and ckpt is not None and not run.branched:  # a branch acts with its (reset) network at once
        actor.load_state_dict(ckpt["actor"])
    learner = Background(enabled=args.overlap)

    def learn(batches: list, first_update: int, step: int, epsilon: float, copy_target: bool) -> None:
        """The gradient updates of env step `step` (update numbers first_update + 1, ...), then the target update."""
        for i, data in enumerate(batches):
            stats = update_fn(q_network, target_network, optimizer, regularizer, data, args.gamma, args.loss,
                              args.double_dqn)  # fmt: skip
            if (first_update + i + 1) % 100 == 0:
                run.log_losses(stats, step, first_update + i + 1)
                run.log("charts/epsilon", epsilon, step)
        if copy_target:
            update_target_(target_network, q_network, args.tau)

    def save(tag: str) -> None:
        learner.wait()  # the background updates may raise FloatingPointError
        extra = {"actor": actor.state_dict()} if args.overlap else {}
        run.save(state, tag, rb, global_step=global_step, update_step=update_step, obs=obs,
                 env_state=get_env_state(envs), **extra)  # fmt: skip

    # ---- the loop -----------------------------------------------------------------------------------------------
    if ckpt is not None and set_env_state(envs, ckpt["env_state"]):  # the games continue where they were
        obs = ckpt["obs"]
    else:  # a fresh run, or envs without an exact state: new games
        if ckpt is not None:
            rb.truncate_open_episodes(ckpt["obs"])
        obs, _ = envs.reset(seed=args.seed + global_step)
    while global_step < run.end_step:
        epsilon = epsilon_at(args, global_step)
        if rng.random() < epsilon:
            actions = rng.integers(n_actions, size=args.num_envs)
        else:
            actions = act(actor, torch.as_tensor(obs, device=device)).cpu().numpy()
        next_obs, rewards, terminations, truncations, infos = envs.step(actions)
        global_step += args.num_envs
        run.advance(args.num_envs)

        for _, game_return, game_length in episode_stats(infos):
            run.log("charts/episodic_return", game_return, global_step)
            run.log("charts/episodic_length", game_length, global_step)

        # Same-step autoreset: rows of ended games hold the next game's first frame; store the real last one.
        rb.add(obs, real_next_obs(next_obs, infos, terminations, truncations), actions, rewards, terminations,
               truncations)  # fmt: skip
        obs = next_obs

        if global_step > run.learning_starts:
            # Batches are drawn here, in the loop's order, so --overlap trains on exactly the same batches.
            batches = [rb.sample(args.batch_size) for _ in range(replay.updates(args.num_envs))]
            copy_target = crossed(global_step, args.num_envs, args.target_network_frequency)
            if batches or copy_target:
                learner.wait()
                if args.overlap:
                    update_target_(actor, q_network, 1.0)  # act with the weights of the updates just finished
                learner.submit(learn, batches, update_step, global_step, epsilon, copy_target)
            update_step += len(batches)

        if scheduler.due(global_step):
            learner.wait()
        if (event := scheduler.step(global_step, update_step)) is not None:
            regularizer.on_reset()
            if args.overlap:  # plasticity injection changes the parameter set: the actor takes the new one
                actor = copy.deepcopy(q_network)
            tqdm.write(f"{args.reset} reset at env step {global_step:,}, update {update_step:,}: {event.seconds:.2f} s")

        if crossed(global_step, args.num_envs, args.metrics_every) and len(rb) >= args.batch_size:
            learner.wait()
            run.log_all(plasticity_metrics(q_network, probe()[0]), global_step, "plasticity/")
            run.log_all(regularizer.log_scalars(), global_step)
        done = global_step >= run.end_step  # the last step (--stop-at's too) also evaluates and checkpoints
        if crossed(global_step, args.num_envs, args.eval_every) or (done and args.eval_every):
            learner.wait()
            eval_returns = evaluate(q_network, args, device, seed=args.seed + 10_000 + global_step)
            run.log("eval/episodic_return", np.mean(eval_returns), global_step)
        if crossed(global_step, args.num_envs, args.checkpoint_every) or done:
            save("final" if done else "periodic")
        if run.stop_requested and not done:
            save(run.stop_requested)
            break

    learner.shutdown()
    envs.close()
    if global_step < run.end_step:
        return run.stop(global_step)
    if args.save_model:
        torch.save(q_network.state_dict(), run.dir / f"{args.exp_name}.cleanrl_model")
    run.finish({"global_step": global_step, "update_step": update_step})


if __name__ == "__main__":
    args, checkpoint = parse_args(Args, AGENT, PRESETS)
    with Run(args, AGENT, checkpoint) as run:
        train(args, run)
    sys.exit(run.exit_code)
