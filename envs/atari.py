"""Atari vector environments for the DQN agent, built from gymnasium's and ale-py's own wrappers.

`make_atari_env` returns a `gym.vector.VectorEnv` whose observations are `(N, 4, 84, 84) uint8` stacks of grayscale
frames (oldest first) and whose actions are `Discrete` (the game's minimal action set). One env step is one agent
action = 4 emulator frames.

Autoreset contract (the agent relies on it):
    The vector env runs with ``autoreset_mode=gym.vector.AutoresetMode.SAME_STEP``. When env ``i`` ends an episode at a
    step, the ``next_obs[i]`` returned by that step is already the FIRST observation of its next episode, the real final
    observation is ``infos["final_obs"][i]`` and the final info is inside ``infos["final_info"]``. Rewards, terminations
    and truncations of that step belong to the episode that ended. So the agent, every step::

        next_obs, rewards, terminations, truncations, infos = envs.step(actions)
        for env_idx, game_return, game_length in episode_stats(infos):
            writer.add_scalar("charts/episodic_return", game_return, global_step)
        rb.add(obs, real_next_obs(next_obs, infos, terminations, truncations), actions, rewards, terminations,
               truncations)
        obs = next_obs

    and bootstraps on ``terminations`` only (a truncated episode bootstraps from its real final observation).

Episode statistics:
    gymnasium's `RecordEpisodeStatistics` sits above `AtariPreprocessing` and the sticky actions, below life-loss
    termination and reward clipping, so ``"r"`` is the real game score (unclipped, all lives) and ``"l"`` the game's
    length in env steps (including the FIRE / no-op steps the reset wrappers take). It reports only when the whole game
    ends, and since the game's end is an episode end of the vector env, the numbers arrive in
    ``infos["final_info"]["episode"]`` with the mask ``infos["final_info"]["_episode"]``; `episode_stats(infos)` unpacks
    them. A life lost in the "cleanrl" preset ends a training episode (``terminations[i]`` is True,
    ``infos["final_obs"]`` is set) but reports no statistics, because the game goes on.

Wrapper stack, innermost first (`_make_single_env` writes it out in this order):
    1. `gym.make(env_id, frameskip=1, repeat_action_probability=0, max_num_frames_per_episode=4 * max_episode_steps,
       full_action_space=False, obs_type="grayscale")`: the raw ALE game. ALE's frame cap makes a game truncate
       (``truncated=True``) after ``max_episode_steps`` env steps (fewer by the no-op frames at reset). The grayscale
       obs_type only saves copying an RGB screen every frame (about 10% of the step time): AtariPreprocessing reads
       the ALE screen itself.
    2. ``sticky_actions="frame"`` only: gymnasium's `StickyAction(0.25)`, per emulator frame, ALE's rule.
    3. `RecordVideo` (env 0 only, ``capture_video=True``): every frame of the game, into ``run_dir/videos``.
    4. `AtariPreprocessing(noop_max=30 or 0, frame_skip=4, screen_size=84, grayscale_obs=True,
       terminal_on_life_loss=False)`: up to 30 no-op starts ("cleanrl" only), repeat the action 4 frames, max-pool the
       last two frames, 84x84 gray (`cv2.INTER_AREA`).
    5. ``sticky_actions="agent-step"`` only: `StickyAgentAction(0.25)`, per agent step, over the whole frame skip.
    6. `RecordEpisodeStatistics`: game return and length, see above.
    7. `EpisodicLifeEnv` ("cleanrl", training only): life loss ends the episode, the game goes on.
    8. `FireResetEnv` ("cleanrl", games whose action 1 is FIRE): press FIRE at every episode start (and, in eval
       mode, after every life loss).
    9. `TransformReward(np.sign)` (training only): reward clipping to {-1, 0, 1}.
    10. `FrameStackObservation(4)`: the last 4 frames; at an episode start the stack is 4 copies of the first frame
       (``padding_type="reset"``), the rule `fire_rl.buffers.AtariReplayBuffer` reproduces.
    Sticky actions live in wrappers rather than in ALE because ALE 0.12 keeps the repeated action outside its saved
    state, so a checkpointed run could not resume exactly (`fire_rl.envs.env_state`). Both wrappers draw from the
    game's own ``np_random``, seeded by ``reset(seed=...)``.

Presets:
    "cleanrl": CleanRL's dqn_atari / SB3's AtariWrapper: no sticky actions, up to 30 no-op starts, life loss ends a
        training episode without resetting the game, FIRE on reset, reward clipping, 84x84 gray, 4-frame stack.
    "fire-paper": the official FIRE DQN (isaac7778/FIRE @ bc7ce8d, rl/dqn/cleanrl/dqn_atari.py): sticky actions 0.25
        once per agent step over max-and-skip 4 (SB3's ``StickyActionEnv(MaxAndSkipEnv(env, 4), 0.25)``), reward
        clipping, 84x84 gray, 4-frame stack; no no-op, life-loss or FIRE-reset wrapper. Its games truncate at
        108,000 frames = 27,000 agent steps: the ``NoFrameskip-v4`` ids it makes carry ALE's
        ``max_num_frames_per_episode=108_000`` (ale-py 0.8.1, src/python/gym.py), which ends a game before its outer
        ``TimeLimit(max_episode_steps=100_000)`` can.
    eval=True keeps the preset's stack but drops life-loss termination and reward clipping, so an episode is a whole
    game and its return is the game score; in "cleanrl" FIRE is then pressed after each life loss, as the training
    reset does, so that a policy that never had to press FIRE itself does not stall.

ALE v5 ids (``ALE/Breakout-v5``) and NoFrameskip-v4 ids (``BreakoutNoFrameskip-v4``) give identical envs: frame skip,
sticky actions and the frame cap are set here, not taken from the id.

``backend="ale-vector"`` replaces the stack by ale-py's threaded C++ ``AtariVectorEnv`` configured like it, behind
`AleVectorAdapter`, which keeps the contract above (shapes, SAME_STEP autoreset, `real_next_obs`, `episode_stats`).
"""

from __future__ import annotations

import difflib
import os
import time
from typing import Any

import ale_py
import gymnasium as gym
import numpy as np
from gymnasium.wrappers import (
    AtariPreprocessing,
    FrameStackObservation,
    RecordEpisodeStatistics,
    RecordVideo,
    TransformReward,
)

gym.register_envs(ale_py)

PRESETS = ("cleanrl", "fire-paper")
STICKY_MODES = ("agent-step", "frame")
BACKENDS = ("sync", "ale-vector")
FRAME_SKIP = 4
FRAME_STACK = 4
SCREEN_SIZE = 84
NOOP_MAX = 30
STICKY_ACTIONS = {"cleanrl": 0.0, "fire-paper": 0.25}
ATARI_ENTRY_POINT = "ale_py.env:AtariEnv"


class EpisodicLifeEnv(gym.Wrapper):
    """Life loss ends an episode, but the game is reset only when it is really over.

    The semantics of SB3's ``EpisodicLifeEnv`` (used by CleanRL's dqn_atari; Mnih et al. 2015): `step` returns
    ``terminated=True`` when the ALE's life counter drops (and stays above 0); the following `reset` then takes one
    no-op step instead of resetting the game. gymnasium's ``AtariPreprocessing(terminal_on_life_loss=True)`` differs:
    its termination makes the vector env's autoreset reset the whole game, so every episode would have one life.

    A `reset` with a seed, or after the game ended (terminated or truncated), resets the game.
    """

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.lives = 0
        self.game_over = True

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.game_over = bool(terminated or truncated)
        lives = self.env.unwrapped.ale.lives()
        # lives > 0: some games (Qbert) sit at 0 lives for a few frames before the game-over flag.
        if 0 < lives < self.lives:
            terminated = True
        self.lives = lives
        return obs, reward, terminated, truncated, info

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        if self.game_over or seed is not None:
            obs, info = self.env.reset(seed=seed, options=options)
        else:
            # One no-op moves past the life-loss frame, as in SB3.
            obs, _, terminated, truncated, info = self.env.step(0)
            if terminated or truncated:
                obs, info = self.env.reset(seed=seed, options=options)
        self.game_over = False
        self.lives = self.env.unwrapped.ale.lives()
        return obs, info

    def state_dict(self) -> dict[str, Any]:
        return {"lives": self.lives, "game_over": self.game_over}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.lives, self.game_over = state["lives"], state["game_over"]


class FireResetEnv(gym.Wrapper):
    """Press FIRE (action 1), then action 2, at every episode start, for games that wait for FIRE to begin.

    SB3's ``FireResetEnv`` semantics (CleanRL's dqn_atari). Rewards of these two steps are not returned (the episode
    statistics below it still count them). With ``on_life_loss=True`` (evaluation without life-loss episodes) FIRE is
    also pressed right after a life is lost, so that the agent sees the same situations as in training, where the
    life-loss reset presses it; that step's reward is added to the step's reward.

    Raises:
        ValueError: the game's action 1 is not FIRE, or it has fewer than 3 actions.
    """

    def __init__(self, env: gym.Env, on_life_loss: bool = False):
        super().__init__(env)
        meanings = env.unwrapped.get_action_meanings()
        if len(meanings) < 3 or meanings[1] != "FIRE":
            raise ValueError(f"FireResetEnv needs action 1 == 'FIRE' and at least 3 actions, got {meanings}")
        self.on_life_loss = on_life_loss
        self.lives = 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        self.env.reset(seed=seed, options=options)
        obs, _, terminated, truncated, info = self.env.step(1)
        if terminated or truncated:
            self.env.reset(seed=seed, options=options)
        obs, _, terminated, truncated, info = self.env.step(2)
        if terminated or truncated:
            obs, info = self.env.reset(seed=seed, options=options)
        self.lives = self.env.unwrapped.ale.lives()
        return obs, info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        lives = self.env.unwrapped.ale.lives()
        if self.on_life_loss and 0 < lives < self.lives and not (terminated or truncated):
            obs, fire_reward, terminated, truncated, info = self.env.step(1)
            reward = float(reward) + float(fire_reward)
        self.lives = lives
        return obs, reward, terminated, truncated, info

    def state_dict(self) -> dict[str, Any]:
        return {"lives": self.lives}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.lives = state["lives"]


class StickyAgentAction(gym.Wrapper):
    """With probability `repeat_action_probability`, take the previous agent action again for a whole agent step.

    SB3's ``StickyActionEnv`` (DLR-RM/stable-baselines3 @ e05d2db, stable_baselines3/common/atari_wrappers.py), which
    the official FIRE DQN puts above ``MaxAndSkipEnv(env, 4)``: placed above the frame skip, a repeated action lasts
    all 4 frames of the step. Each step draws ``u`` from the game's ``np_random``; ``u >= p`` takes the new action,
    else the previous one is kept. A reset sets the previous action to NOOP (action 0), so the first step of an
    episode is a NOOP with probability p. ALE's rule (Machado et al. 2018, section 5.2) differs: it decides per
    emulator frame, inside the skip (gymnasium's `StickyAction` below the frame skip).

    Raises:
        ValueError: `repeat_action_probability` outside [0, 1), or the game's action 0 is not NOOP.
    """

    def __init__(self, env: gym.Env, repeat_action_probability: float):
        if not 0 <= repeat_action_probability < 1:
            raise ValueError(f"repeat_action_probability must be in [0, 1), got {repeat_action_probability!r}")
        meanings = env.unwrapped.get_action_meanings()
        if meanings[0] != "NOOP":
            raise ValueError(f"StickyAgentAction needs action 0 == 'NOOP', got {meanings}")
        super().__init__(env)
        self.repeat_action_probability = float(repeat_action_probability)
        self.sticky_action = 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        self.sticky_action = 0
        return self.env.reset(seed=seed, options=options)

    def step(self, action):
        if self.np_random.random() >= self.repeat_action_probability:
            self.sticky_action = action
        return self.env.step(self.sticky_action)

    def state_dict(self) -> dict[str, Any]:
        return {"sticky_action": self.sticky_action}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sticky_action = state["sticky_action"]


class AleVectorAdapter(gym.vector.VectorWrapper):
    """ale-py's C++ ``AtariVectorEnv`` (SAME_STEP autoreset) behind the contract of the sync stack (module docstring).

    Adds what the C++ env lacks: agent-step sticky actions (`StickyAgentAction`'s rule, drawn from this wrapper's RNG,
    seeded by ``reset(seed=...)``), game statistics in ``infos["final_info"]["episode"]`` (unclipped return, length
    in agent steps, wall time) when a whole game ends, the ``infos["_final_obs"]`` mask, reward clipping after the
    statistics, float64 rewards. A game ends at a truncation, or at a termination that does not lose a life (a life
    loss with ``life_loss_info`` terminates the episode, not the game). Its state, like the C++ env's, is not
    checkpointed: runs on this backend resume at an episode boundary (`fire_rl.envs.env_state`).
    """

    def __init__(self, env: gym.vector.VectorEnv, repeat_action_probability: float, clip_rewards: bool):
        super().__init__(env)
        self.repeat_action_probability, self.clip_rewards = float(repeat_action_probability), clip_rewards
        self.rng = np.random.default_rng()
        self.previous_actions = np.zeros(self.num_envs, dtype=np.int64)
        self.lives = np.zeros(self.num_envs, dtype=np.int64)
        self.game_returns, self.game_lengths = np.zeros(self.num_envs), np.zeros(self.num_envs, dtype=np.int64)
        self.game_starts = np.full(self.num_envs, time.perf_counter())

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        seed = None if seed is None else int(seed)  # AtariVectorEnv takes a Python int, not a numpy integer
        obs, infos = self.env.reset(seed=seed, options=options)
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self.previous_actions[:], self.lives[:] = 0, infos["lives"]
        self.game_returns[:], self.game_lengths[:], self.game_starts[:] = 0.0, 0, time.perf_counter()
        return obs, infos

    def step(self, actions: np.ndarray):
        actions = np.asarray(actions, dtype=np.int64)
        if self.repeat_action_probability > 0:
            sticky = self.rng.random(self.num_envs) < self.repeat_action_probability
            actions = np.where(sticky, self.previous_actions, actions)
        obs, rewards, terminations, truncations, infos = self.env.step(actions)
        rewards = rewards.astype(np.float64)
        self.game_returns += rewards
        self.game_lengths += 1
        ended = terminations | truncations
        game_over = truncations | (terminations & (infos["lives"] >= self.lives))
        self.previous_actions = np.where(ended, 0, actions)
        self.lives[:] = infos["lives"]
        if ended.any():
            infos["_final_obs"] = ended
        if game_over.any():
            now = time.perf_counter()
            episode = {
                "r": np.where(game_over, self.game_returns, 0.0),
                "l": np.where(game_over, self.game_lengths, 0),
                "t": np.where(game_over, np.round(now - self.game_starts, 6), 0.0),
            }
            infos["final_info"] = {"episode": episode, "_episode": game_over}
            self.game_returns[game_over], self.game_lengths[game_over], self.game_starts[game_over] = 0.0, 0, now
        return obs, np.sign(rewards) if self.clip_rewards else rewards, terminations, truncations, infos

    def state_dict(self) -> dict[str, Any]:
        """The sticky-action RNG and previous actions, the lives seen and the running game statistics."""
        return {
            "rng": self.rng.bit_generator.state,
            "previous_actions": self.previous_actions.copy(),
            "lives": self.lives.copy(),
            "game_returns": self.game_returns.copy(),
            "game_lengths": self.game_lengths.copy(),
            "game_seconds": time.perf_counter() - self.game_starts,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.previous_actions[:], self.lives[:] = state["previous_actions"], state["lives"]
        self.game_returns[:], self.game_lengths[:] = state["game_returns"], state["game_lengths"]
        self.game_starts[:] = time.perf_counter() - state["game_seconds"]


def _make_ale_vector_env(
    env_id: str, num_envs: int, preset: str, eval: bool, max_episode_steps: int, sticky_actions: str
) -> gym.vector.VectorEnv:
    """The `AleVectorAdapter` over ale-py's ``AtariVectorEnv`` configured as the preset's sync stack."""
    from ale_py.vector_env import AtariVectorEnv

    sticky, cleanrl = STICKY_ACTIONS[preset], preset == "cleanrl"
    envs = AtariVectorEnv(
        gym.registry[env_id].kwargs["game"],
        num_envs,
        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
        max_num_frames_per_episode=FRAME_SKIP * max_episode_steps,
        repeat_action_probability=sticky if sticky_actions == "frame" else 0.0,
        img_height=SCREEN_SIZE,
        img_width=SCREEN_SIZE,
        stack_num=FRAME_STACK,
        frameskip=FRAME_SKIP,
        noop_max=NOOP_MAX if cleanrl else 0,
        life_loss_info=cleanrl and not eval,
        reward_clipping=False,
        use_fire_reset=cleanrl,
    )
    return AleVectorAdapter(envs, sticky if sticky_actions == "agent-step" else 0.0, clip_rewards=not eval)


def atari_env_ids() -> list[str]:
    """Every ALE v5 and NoFrameskip-v4 id registered with gymnasium (the ids `make_atari_env` accepts)."""
    return sorted(
        k for k, spec in gym.registry.items() if spec.entry_point == ATARI_ENTRY_POINT and _is_supported_id(k)
    )


def _is_supported_id(env_id: str) -> bool:
    return (env_id.startswith("ALE/") and env_id.endswith("-v5")) or env_id.endswith("NoFrameskip-v4")


def _check_env_id(env_id: str) -> None:
    if not isinstance(env_id, str):
        raise ValueError(f"env_id must be a string such as 'ALE/Breakout-v5', got {env_id!r}")
    if env_id not in gym.registry:
        close = difflib.get_close_matches(env_id, atari_env_ids(), n=3, cutoff=0.5)
        hint = f"; close matches: {close}" if close else ""
        raise ValueError(
            f"unknown env_id {env_id!r}: Atari ids look like 'ALE/Breakout-v5' or 'BreakoutNoFrameskip-v4'{hint}"
        )
    if gym.registry[env_id].entry_point != ATARI_ENTRY_POINT:
        raise ValueError(
            f"env_id {env_id!r} is not an Atari game (entry point {gym.registry[env_id].entry_point!r}); "
            "Atari ids look like 'ALE/Breakout-v5' or 'BreakoutNoFrameskip-v4'"
        )
    if not _is_supported_id(env_id):
        raise ValueError(
            f"env_id {env_id!r} is an Atari id whose frame skip or sticky actions are built in; use an ALE v5 id "
            "('ALE/Breakout-v5') or a NoFrameskip-v4 id ('BreakoutNoFrameskip-v4')"
        )


def _make_single_env(
    env_id: str,
    preset: str,
    eval: bool,
    env_idx: int,
    capture_video: bool,
    run_dir: str | None,
    max_episode_steps: int,
    sticky_actions: str,
) -> gym.Env:
    """One env of the vector env: the wrapper stack of the module docstring, in order."""
    record = capture_video and env_idx == 0
    env = gym.make(
        env_id,
        frameskip=1,
        repeat_action_probability=0.0,
        max_num_frames_per_episode=FRAME_SKIP * max_episode_steps,
        full_action_space=False,
        obs_type="grayscale",
        render_mode="rgb_array" if record else None,
    )
    sticky = STICKY_ACTIONS[preset]
    if sticky > 0 and sticky_actions == "frame":
        env = gym.wrappers.StickyAction(env, repeat_action_probability=sticky)
    if record:
        env = RecordVideo(env, os.path.join(run_dir, "videos"), name_prefix="eval" if eval else "train")
    env = AtariPreprocessing(
        env,
        noop_max=NOOP_MAX if preset == "cleanrl" else 0,
        frame_skip=FRAME_SKIP,
        screen_size=SCREEN_SIZE,
        terminal_on_life_loss=False,
        grayscale_obs=True,
    )
    if sticky > 0 and sticky_actions == "agent-step":
        env = StickyAgentAction(env, repeat_action_probability=sticky)
    env = RecordEpisodeStatistics(env)
    if preset == "cleanrl" and not eval:
        env = EpisodicLifeEnv(env)
    meanings = env.unwrapped.get_action_meanings()
    if preset == "cleanrl" and len(meanings) >= 3 and meanings[1] == "FIRE":
        env = FireResetEnv(env, on_life_loss=eval)
    if not eval:
        env = TransformReward(env, np.sign)
    env = FrameStackObservation(env, FRAME_STACK, padding_type="reset")
    return env


def make_atari_env(
    env_id: str,
    num_envs: int,
    seed: int,
    preset: str = "cleanrl",
    capture_video: bool = False,
    run_dir: str | None = None,
    eval: bool = False,
    max_episode_steps: int = 27_000,
    sticky_actions: str = "agent-step",
    backend: str = "sync",
) -> gym.vector.VectorEnv:
    """A vector of `num_envs` preprocessed Atari games (module docstring: wrapper stack, autoreset, statistics).

    Args:
        env_id: an ALE v5 id (``"ALE/Breakout-v5"``) or a NoFrameskip-v4 id (``"BreakoutNoFrameskip-v4"``).
        num_envs: number of parallel games N.
        seed: base seed. Call ``envs.reset(seed=seed)`` once before the first step (CleanRL's convention): env ``i``
            is then seeded with ``seed + i`` (ALE's RNG, which drives sticky actions, and the no-op RNG). The action
            spaces (``envs.action_space``, ``envs.single_action_space`` and env ``i``'s) are seeded here, with
            ``seed`` and ``seed + i``.
        preset: ``"cleanrl"`` or ``"fire-paper"`` (module docstring).
        capture_video: record env 0's games (every frame) into ``run_dir/videos`` with gymnasium's `RecordVideo`;
            needs the ``moviepy`` package.
        run_dir: the run's directory; required with ``capture_video=True``.
        eval: evaluation env: no life-loss termination and no reward clipping (rewards are game scores).
        max_episode_steps: a game is truncated after this many env steps (ALE's frame cap, 4 frames per step; the
            frames of the no-op starts count too). 27,000 = 108,000 frames = 30 minutes of play (Machado et al. 2018),
            the cap of both presets.
        sticky_actions: how a preset with sticky actions ("fire-paper", p = 0.25) repeats them: ``"agent-step"``
            (the official FIRE code, SB3's StickyActionEnv: the previous agent action for the whole 4-frame step) or
            ``"frame"`` (ALE's standard, Machado et al. 2018: per emulator frame, inside the skip). No effect in
            "cleanrl", which has none.
        backend: ``"sync"`` (the wrapper stack above in a `gym.vector.SyncVectorEnv`; checkpoints resume exactly) or
            ``"ale-vector"`` (ale-py's threaded C++ ``AtariVectorEnv`` behind `AleVectorAdapter`: same shapes,
            autoreset and statistics contract, but its own resize, FIRE only at a game's start, game lengths without
            the hidden reset steps; checkpoints resume at an episode boundary; no video).

    Returns:
        The vector env, not yet reset, with ``autoreset_mode=SAME_STEP``: observations ``(N, 4, 84, 84) uint8``,
        actions ``(N,) int64`` in ``Discrete(A)``, rewards ``(N,) float64`` (in {-1, 0, 1} unless ``eval``),
        terminations and truncations ``(N,) bool``.

    Raises:
        ValueError: unknown, non-Atari or unsupported `env_id` (the message suggests close matches), `num_envs` < 1,
            an unknown `preset`, `sticky_actions` or `backend`, `max_episode_steps` < 1, ``capture_video`` without
            `run_dir` or with ``backend="ale-vector"``; all raised before any env is built.
        gymnasium.error.DependencyNotInstalled: ``capture_video=True`` and moviepy is not installed.
    """
    _check_env_id(env_id)
    if isinstance(num_envs, bool) or not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
        raise ValueError(f"num_envs must be an integer >= 1, got {num_envs!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; allowed: {list(PRESETS)}")
    if sticky_actions not in STICKY_MODES:
        raise ValueError(f"unknown sticky_actions {sticky_actions!r}; allowed: {list(STICKY_MODES)}")
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; allowed: {list(BACKENDS)}")
    if capture_video and backend != "sync":
        raise ValueError(f"capture_video=True needs backend='sync' (RecordVideo wraps a Python env), got {backend!r}")
    if isinstance(max_episode_steps, bool) or not isinstance(max_episode_steps, (int, np.integer)):
        raise ValueError(f"max_episode_steps must be an integer >= 1, got {max_episode_steps!r}")
    if max_episode_steps < 1:
        raise ValueError(f"max_episode_steps must be an integer >= 1, got {max_episode_steps!r}")
    if capture_video:
        if run_dir is None:
            raise ValueError("capture_video=True needs run_dir (videos go to run_dir/videos), got run_dir=None")
        try:
            import moviepy  # noqa: F401
        except ImportError as e:
            raise gym.error.DependencyNotInstalled(
                "capture_video=True needs the moviepy package (gymnasium's RecordVideo writes with it): "
                "pip install moviepy"
            ) from e

    num_envs, seed, max_episode_steps = int(num_envs), int(seed), int(max_episode_steps)

    def thunk(env_idx: int):
        def make() -> gym.Env:
            env = _make_single_env(
                env_id, preset, eval, env_idx, capture_video, run_dir, max_episode_steps, sticky_actions
            )
            env.action_space.seed(seed + env_idx)
            env.observation_space.seed(seed + env_idx)
            return env

        return make

    if backend == "ale-vector":
        envs = _make_ale_vector_env(env_id, num_envs, preset, eval, max_episode_steps, sticky_actions)
    else:
        envs = gym.vector.SyncVectorEnv(
            [thunk(i) for i in range(num_envs)], autoreset_mode=gym.vector.AutoresetMode.SAME_STEP
        )
    assert isinstance(envs.single_action_space, gym.spaces.Discrete), "Atari envs have Discrete actions"
    # Every space's RNG is seeded, so that a run's full state (fire_rl.envs.env_state) is a function of the seed.
    for space in (envs.action_space, envs.single_action_space, envs.observation_space, envs.single_observation_space):
        space.seed(seed)
    return envs


def real_next_obs(
    next_obs: np.ndarray, infos: dict[str, Any], terminations: np.ndarray, truncations: np.ndarray
) -> np.ndarray:
    """The real next observation of every env: `next_obs` with the rows of envs that ended replaced by their final obs.

    Under ``AutoresetMode.SAME_STEP`` the row of an env that ended holds the first observation of its next episode;
    the transition to store needs the last observation of the episode that ended, ``infos["final_obs"][i]``.

    Args:
        next_obs: ``(N, ...)`` as returned by ``envs.step``; not modified.
        infos: the step's infos.
        terminations, truncations: ``(N,) bool`` of the same step.

    Returns:
        `next_obs` itself when no env ended, else a copy with the ended rows replaced.

    Raises:
        ValueError: an env ended but ``infos`` holds no final observation for it (an env made with another autoreset
            mode than SAME_STEP), or the arrays' lengths differ.
    """
    ended = np.logical_or(terminations, truncations)
    if ended.shape != (len(next_obs),):
        raise ValueError(
            f"terminations/truncations must have shape ({len(next_obs)},) like next_obs' first axis, got {ended.shape}"
        )
    if not ended.any():
        return next_obs
    final_obs = infos.get("final_obs")
    mask = infos.get("_final_obs")
    out = next_obs.copy()
    for i in np.flatnonzero(ended):
        if final_obs is None or mask is None or not mask[i]:
            raise ValueError(
                f"env {i} ended but infos has no final_obs for it: the vector env must use "
                "autoreset_mode=gym.vector.AutoresetMode.SAME_STEP (make_atari_env does)"
            )
        out[i] = final_obs[i]
    return out


def episode_stats(infos: dict[str, Any]) -> list[tuple[int, float, int]]:
    """``(env index, game return, game length in env steps)`` of every game that ended in this vector step.

    Reads gymnasium's `RecordEpisodeStatistics` numbers from ``infos["final_info"]["episode"]`` (SAME_STEP autoreset).
    The return is the unclipped game score over all lives; the length counts env steps (4 frames each) of the game,
    including the FIRE / no-op steps taken by the reset wrappers, excluding the no-op starts.
    """
    final_info = infos.get("final_info")
    if not final_info or "episode" not in final_info:
        return []
    ep = final_info["episode"]
    return [(int(i), float(ep["r"][i]), int(ep["l"][i])) for i in np.flatnonzero(final_info["_episode"])]
