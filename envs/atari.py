"""Atari vector environments for the DQN agent, built from gymnasium's and ale-py's own wrappers (DESIGN 5).

`make_atari_env` returns a `gym.vector.VectorEnv` whose observations are `(N, 4, 84, 84) uint8` stacks of grayscale
frames (oldest first) and whose actions are `Discrete` (the game's minimal action set). One env step is one agent
action = 4 emulator frames (DESIGN 2).

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
    gymnasium's `RecordEpisodeStatistics` sits right above `AtariPreprocessing`, below life-loss termination and reward
    clipping, so ``"r"`` is the real game score (unclipped, all lives) and ``"l"`` the game's length in env steps
    (including the FIRE / no-op steps the reset wrappers take). It reports only when the whole game ends, and since
    the game's end is an episode end of the vector env, the numbers arrive in ``infos["final_info"]["episode"]`` with
    the mask ``infos["final_info"]["_episode"]``; `episode_stats(infos)` unpacks them. A life lost in the "cleanrl"
    preset ends a training episode (``terminations[i]`` is True, ``infos["final_obs"]`` is set) but reports no
    statistics, because the game goes on.

Wrapper stack, innermost first (`_make_single_env` writes it out in this order):
    1. `gym.make(env_id, frameskip=1, repeat_action_probability=0, max_num_frames_per_episode=4 * max_episode_steps,
       full_action_space=False, obs_type="grayscale")`: the raw ALE game, then gymnasium's `StickyAction(p)` per frame,
       p = 0 ("cleanrl": no wrapper) or 0.25 ("fire-paper"). Sticky actions live in a wrapper rather than in ALE
       because ALE 0.12 keeps the repeated action outside its saved state, so a checkpointed run could not resume
       exactly (`fire_rl.envs.env_state`); the wrapper draws from the game's own RNG, per frame, as ALE does (the first
       frame after a reset is never sticky). ALE's frame cap makes a game truncate (``truncated=True``) after
       ``max_episode_steps`` env steps (fewer by the no-op frames at reset). The grayscale obs_type only saves
       copying an RGB screen every frame (about 10% of the step time): AtariPreprocessing reads the ALE screen itself.
    2. `RecordVideo` (env 0 only, ``capture_video=True``): every frame of the game, into ``run_dir/videos``.
    3. `AtariPreprocessing(noop_max=30 or 0, frame_skip=4, screen_size=84, grayscale_obs=True,
       terminal_on_life_loss=False)`: up to 30 no-op starts ("cleanrl" only), repeat the action 4 frames, max-pool the
       last two frames, 84x84 gray (`cv2.INTER_AREA`).
    4. `RecordEpisodeStatistics`: game return and length, see above.
    5. `EpisodicLifeEnv` ("cleanrl", training only): life loss ends the episode, the game goes on.
    6. `FireResetEnv` ("cleanrl", games whose action 1 is FIRE): press FIRE at every episode start (and, in eval
       mode, after every life loss).
    7. `TransformReward(np.sign)` (training only): reward clipping to {-1, 0, 1}.
    8. `FrameStackObservation(4)`: the last 4 frames; at an episode start the stack is 4 copies of the first frame
       (``padding_type="reset"``), the rule `fire_rl.buffers.AtariReplayBuffer` reproduces.

Presets (DESIGN 5):
    "cleanrl": CleanRL's dqn_atari / SB3's AtariWrapper: no sticky actions, up to 30 no-op starts, life loss ends a
        training episode without resetting the game, FIRE on reset, reward clipping, 84x84 gray, 4-frame stack.
    "fire-paper": the official FIRE DQN: sticky actions 0.25, max-and-skip 4, reward clipping, 84x84 gray, 4-frame
        stack; no no-op, life-loss or FIRE-reset wrapper.
    eval=True keeps the preset's stack but drops life-loss termination and reward clipping, so an episode is a whole
    game and its return is the game score; in "cleanrl" FIRE is then pressed after each life loss, as the training
    reset does, so that a policy that never had to press FIRE itself does not stall.

ALE v5 ids (``ALE/Breakout-v5``) and NoFrameskip-v4 ids (``BreakoutNoFrameskip-v4``) give identical envs: frame skip,
sticky actions and the frame cap are set here, not taken from the id.
"""

from __future__ import annotations

import difflib
import os
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
VECTORS = ("sync", "async")
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
    if STICKY_ACTIONS[preset] > 0:
        env = gym.wrappers.StickyAction(env, repeat_action_probability=STICKY_ACTIONS[preset])
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
    vector: str = "sync",
    max_episode_steps: int = 27_000,
) -> gym.vector.VectorEnv:
    """A vector of `num_envs` preprocessed Atari games (module docstring: wrapper stack, autoreset, statistics).

    Args:
        env_id: an ALE v5 id (``"ALE/Breakout-v5"``) or a NoFrameskip-v4 id (``"BreakoutNoFrameskip-v4"``).
        num_envs: number of parallel games N.
        seed: base seed. Call ``envs.reset(seed=seed)`` once before the first step (CleanRL's convention): env ``i``
            is then seeded with ``seed + i`` (ALE's RNG, which drives sticky actions, and the no-op RNG). The action
            spaces (``envs.action_space``, ``envs.single_action_space`` and env ``i``'s) are seeded here, with
            ``seed`` and ``seed + i``.
        preset: ``"cleanrl"`` or ``"fire-paper"`` (DESIGN 5).
        capture_video: record env 0's games (every frame) into ``run_dir/videos`` with gymnasium's `RecordVideo`;
            needs the ``moviepy`` package.
        run_dir: the run's directory; required with ``capture_video=True``.
        eval: evaluation env: no life-loss termination and no reward clipping (rewards are game scores).
        vector: ``"sync"`` (`gym.vector.SyncVectorEnv`, all games in this process) or ``"async"``
            (`gym.vector.AsyncVectorEnv`, one subprocess per game).
        max_episode_steps: a game is truncated after this many env steps (ALE's frame cap, 4 frames per step; the
            frames of the no-op starts count too). 27,000 = 108,000 frames = 30 minutes of play (Machado et al. 2018).

    Returns:
        The vector env, not yet reset, with ``autoreset_mode=SAME_STEP``: observations ``(N, 4, 84, 84) uint8``,
        actions ``(N,) int64`` in ``Discrete(A)``, rewards ``(N,) float64`` (in {-1, 0, 1} unless ``eval``),
        terminations and truncations ``(N,) bool``.

    Raises:
        ValueError: unknown, non-Atari or unsupported `env_id` (the message suggests close matches), `num_envs` < 1,
            an unknown `preset` or `vector`, `max_episode_steps` < 1, ``capture_video`` without `run_dir`; all raised
            before any env is built.
        gymnasium.error.DependencyNotInstalled: ``capture_video=True`` and moviepy is not installed.
    """
    _check_env_id(env_id)
    if isinstance(num_envs, bool) or not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
        raise ValueError(f"num_envs must be an integer >= 1, got {num_envs!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; allowed: {list(PRESETS)}")
    if vector not in VECTORS:
        raise ValueError(f"unknown vector {vector!r}; allowed: {list(VECTORS)}")
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
            env = _make_single_env(env_id, preset, eval, env_idx, capture_video, run_dir, max_episode_steps)
            env.action_space.seed(seed + env_idx)
            env.observation_space.seed(seed + env_idx)
            return env

        return make

    env_fns = [thunk(i) for i in range(num_envs)]
    mode = gym.vector.AutoresetMode.SAME_STEP
    if vector == "sync":
        envs = gym.vector.SyncVectorEnv(env_fns, autoreset_mode=mode)
    else:
        envs = gym.vector.AsyncVectorEnv(env_fns, autoreset_mode=mode)
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
