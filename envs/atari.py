"""Atari vector environments for the DQN agent, built from gymnasium's and ale-py's own wrappers.

`make_atari_env` returns a `gym.vector.VectorEnv` of `(N, 4, 84, 84) uint8` stacks of grayscale frames (oldest first)
with `Discrete` actions (the game's minimal action set). One env step is one agent action = 4 emulator frames.

Autoreset contract (the agent relies on it): ``autoreset_mode=SAME_STEP``. When env ``i`` ends an episode, the
``next_obs[i]`` of that step is already the FIRST observation of its next episode; the real final observation is
``infos["final_obs"][i]``, the final info is in ``infos["final_info"]``; rewards, terminations and truncations of that
step belong to the episode that ended. So the agent, every step::

    next_obs, rewards, terminations, truncations, infos = envs.step(actions)
    for env_idx, game_return, game_length in episode_stats(infos):
        writer.add_scalar("charts/episodic_return", game_return, global_step)
    rb.add(obs, real_next_obs(next_obs, infos, terminations, truncations), actions, rewards, terminations, truncations)
    obs = next_obs

and bootstraps on ``terminations`` only (a truncated episode bootstraps from its real final observation).

Episode statistics: `RecordEpisodeStatistics` sits above `AtariPreprocessing` and the sticky actions, below life-loss
termination and reward clipping, so ``"r"`` is the game score (unclipped, all lives) and ``"l"`` the game's length in
env steps (FIRE / no-op steps of the reset wrappers included). It reports when the whole game ends, in
``infos["final_info"]["episode"]`` with the mask ``infos["final_info"]["_episode"]`` (`episode_stats`). A life lost in
"cleanrl" ends a training episode (``terminations[i]``, ``infos["final_obs"]``) but reports no statistics.

Wrapper stack, innermost first (`_make_single_env`):
    1. `gym.make(env_id, frameskip=1, repeat_action_probability=0, max_num_frames_per_episode=4 * max_episode_steps,
       full_action_space=False, obs_type="grayscale")`: the raw game; ALE's frame cap truncates a game after
       ``max_episode_steps`` env steps (fewer by the no-op frames at reset). A grayscale obs_type saves copying an RGB
       screen every frame: AtariPreprocessing reads the ALE screen itself.
    2. ``sticky_actions="frame"`` only: gymnasium's `StickyAction(0.25)`, per emulator frame, ALE's rule.
    3. `RecordVideo` (env 0 only, ``capture_video=True``): every frame of the game, into ``run_dir/videos``.
    4. `AtariPreprocessing(noop_max=30 or 0, frame_skip=4, screen_size=84, grayscale_obs=True,
       terminal_on_life_loss=False)`: no-op starts ("cleanrl" only), action repeated 4 frames, max-pool of the last
       two, 84x84 gray (`cv2.INTER_AREA`).
    5. ``sticky_actions="agent-step"`` only: `StickyAgentAction(0.25)`, per agent step, over the whole frame skip.
    6. `RecordEpisodeStatistics`: game return and length, see above.
    7. `EpisodicLifeEnv` ("cleanrl", training only): life loss ends the episode, the game goes on.
    8. `FireResetEnv` ("cleanrl", games whose action 1 is FIRE): FIRE at every episode start (eval: after every life
       loss too).
    9. `TransformReward(np.sign)` (training only): rewards clipped to {-1, 0, 1}.
    10. `FrameStackObservation(4, padding_type="reset")`: the last 4 frames; an episode starts with 4 copies of its
       first frame, the rule `fire_rl.buffers.AtariReplayBuffer` and the "ale-vector" backend reproduce.
    Sticky actions are wrappers, not ALE's setting: ALE 0.12 keeps the repeated action outside its saved state, so a
    checkpointed run could not resume exactly (`fire_rl.envs.env_state`). Both draw from the game's ``np_random``.

Presets:
    "cleanrl": CleanRL's dqn_atari / SB3's AtariWrapper: no sticky actions, up to 30 no-op starts, life loss ends a
        training episode, FIRE on reset, reward clipping.
    "fire-paper": the official FIRE DQN (isaac7778/FIRE @ bc7ce8d, rl/dqn/cleanrl/dqn_atari.py): sticky actions 0.25
        once per agent step over max-and-skip 4 (SB3's ``StickyActionEnv(MaxAndSkipEnv(env, 4), 0.25)``), reward
        clipping; no no-op, life-loss or FIRE-reset wrapper. Games truncate at 108,000 frames = 27,000 agent steps, the
        ``max_num_frames_per_episode`` of its ``NoFrameskip-v4`` ids (ale-py 0.8.1, src/python/gym.py), which ends a
        game before its ``TimeLimit(max_episode_steps=100_000)`` can.
    eval=True drops life-loss termination and reward clipping: an episode is a whole game, its return the game score;
    in "cleanrl" FIRE is then pressed after each life loss, as the training reset does.

ALE v5 ids (``ALE/Breakout-v5``) and NoFrameskip-v4 ids (``BreakoutNoFrameskip-v4``) give identical envs: frame skip,
sticky actions and the frame cap are set here, not taken from the id.
"""

from __future__ import annotations

import difflib
import functools
import importlib.util
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
    StickyAction,
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
ID_HINT = "Atari ids look like 'ALE/Breakout-v5' or 'BreakoutNoFrameskip-v4'"


class EpisodicLifeEnv(gym.Wrapper):
    """Life loss ends an episode; the game is reset only when it is really over (SB3's ``EpisodicLifeEnv``, CleanRL's
    dqn_atari; Mnih et al. 2015).

    `step` returns ``terminated=True`` when the ALE's life counter drops (and stays above 0); the next `reset` then
    takes one no-op step instead of resetting the game. A `reset` with a seed, or after the game ended, resets the
    game. (gymnasium's ``terminal_on_life_loss=True`` would make the autoreset reset the whole game at every life.)
    """

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.lives = 0
        self.game_over = True

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.game_over = bool(terminated or truncated)
        lives = self.env.unwrapped.ale.lives()
        if 0 < lives < self.lives:  # lives > 0: some games (Qbert) sit at 0 lives for a few frames before game over
            terminated = True
        self.lives = lives
        return obs, reward, terminated, truncated, info

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        if self.game_over or seed is not None:
            obs, info = self.env.reset(seed=seed, options=options)
        else:  # one no-op moves past the life-loss frame, as in SB3
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
    """Press FIRE (action 1), then action 2, at every episode start (SB3's ``FireResetEnv``; their rewards are not
    returned, the statistics below still count them). With ``on_life_loss=True`` (evaluation without life-loss
    episodes) FIRE is also pressed right after a lost life, its reward added to the step's.

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

    SB3's ``StickyActionEnv`` (DLR-RM/stable-baselines3 @ e05d2db, stable_baselines3/common/atari_wrappers.py), above
    the frame skip as in the official FIRE DQN. Each step draws ``u`` from the game's ``np_random``: ``u >= p`` takes
    the new action, else the previous one is kept; a reset sets the previous action to NOOP (action 0). ALE's rule
    (Machado et al. 2018, section 5.2; gymnasium's `StickyAction` below the frame skip) decides per emulator frame.

    Raises:
        ValueError: `repeat_action_probability` outside [0, 1), or the game's action 0 is not NOOP.
    """

    def __init__(self, env: gym.Env, repeat_action_probability: float):
        if not 0 <= repeat_action_probability < 1:
            raise ValueError(f"repeat_action_probability must be in [0, 1), got {repeat_action_probability!r}")
        if (meanings := env.unwrapped.get_action_meanings())[0] != "NOOP":
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


def _repeat_first_frame(stacks: np.ndarray, ages: np.ndarray) -> None:
    """In place: the frames of ``stacks[i]`` (``(N, S, H, W) uint8``, oldest first) older than its episode's first
    frame become that frame; ``ages[i]`` (``(N,) int``) is the index of the stack's newest frame in its episode (0: the
    first frame; ``>= S - 1``: the stack is left alone)."""
    last = stacks.shape[1] - 1
    if ages.min() >= last:  # every episode past its first stack: the common step, nothing to do
        return
    for age in range(last):
        if (rows := ages == age).any():
            stacks[rows, : last - age] = stacks[rows, last - age : last - age + 1]


class AleVectorAdapter(gym.vector.VectorWrapper):
    """ale-py's C++ ``AtariVectorEnv`` (SAME_STEP autoreset) behind the contract of the sync stack (module docstring).

    Adds what the C++ env lacks: stacks that start with 4 copies of the episode's first frame, at every reset and
    autoreset and after a life lost in "cleanrl" training, in ``next_obs`` and ``infos["final_obs"]`` alike (the C++
    env pads a new game's stack with zeros and plays on through a life loss with the old frames); the real final
    observation at a life loss (the C++ env leaves that ``final_obs`` row unwritten); agent-step sticky actions
    (`StickyAgentAction`'s rule, from this wrapper's RNG, seeded by ``reset(seed=...)``); game statistics in
    ``infos["final_info"]["episode"]`` (unclipped return, length in agent steps, wall time) when a game ends (a
    truncation, or a termination that loses no life); the ``infos["_final_obs"]`` mask; reward clipping after the
    statistics; float64 rewards. Like the C++ env's, its state is not checkpointed: runs on this backend resume at an
    episode boundary (`fire_rl.envs.env_state`).

    Without no-op starts, sticky actions, FIRE reset and life-loss episodes ("fire-paper" without sticky actions;
    "cleanrl" without no-ops, eval=True, a game without FIRE) it plays bit for bit as the sync stack: observations,
    rewards, ends, final observations, statistics (tests/test_ale_vector_env.py). What still differs:

    - FIRE reset ("cleanrl", games whose action 1 is FIRE): sync plays FIRE, then action 2, one agent step each, after
      the no-ops at every episode start (life losses included) and, with eval=True, FIRE after every lost life; the
      C++ env presses FIRE for one frame at a game's start only, before its no-ops.
    - Life loss ("cleanrl" training): sync plays one hidden NOOP step (then the FIRE reset) and starts the next
      episode from the frame after it; here it starts from the life-loss frame.
    - No-op starts ("cleanrl"): sync 1-30 NOOP frames from the game's ``np_random``; the C++ env ``max(d - 1, 0)``
      after its FIRE frame (no FIRE: ``d``), ``d`` uniform in 0-29 from its own generator seeded with ``seed + i``.
    - Sticky actions ("fire-paper"): the same rules from other random streams; "frame" is ALE's own setting here,
      which also applies to the reset's FIRE and no-op frames.
    - Truncation at ``4 * max_episode_steps`` frames: sync counts every frame of the game (no-op starts, hidden reset
      steps), the C++ env only the frames of agent steps.
    - ``"l"`` of the statistics: sync counts the hidden FIRE reset and life-loss NOOP steps, here agent steps only;
      ``infos`` hold the C++ env's keys (``lives``, ``frame_number``, ...) without sync's ``_``-masks, and
      ``final_info`` only ``"episode"``.
    """

    def __init__(self, env: gym.vector.VectorEnv, repeat_action_probability: float, clip_rewards: bool):
        super().__init__(env)
        self.repeat_action_probability, self.clip_rewards = float(repeat_action_probability), clip_rewards
        self.rng = np.random.default_rng()
        self.previous_actions = np.zeros(self.num_envs, dtype=np.int64)
        self.lives = np.zeros(self.num_envs, dtype=np.int64)
        self.ages = np.zeros(self.num_envs, dtype=np.int64)  # of the newest frame in its episode (0: first), <= 3
        self.game_returns, self.game_lengths = np.zeros(self.num_envs), np.zeros(self.num_envs, dtype=np.int64)
        self.game_starts = np.full(self.num_envs, time.perf_counter())

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        seed = None if seed is None else int(seed)  # AtariVectorEnv takes a Python int, not a numpy integer
        obs, infos = self.env.reset(seed=seed, options=options)
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        rows = np.ones(self.num_envs, bool) if options is None or "reset_mask" not in options else options["reset_mask"]
        self.ages[rows] = 0
        _repeat_first_frame(obs, self.ages)  # the C++ stack starts with 3 frames of zeros
        self.previous_actions[rows], self.lives[rows] = 0, infos["lives"][rows]
        self.game_returns[rows], self.game_lengths[rows], self.game_starts[rows] = 0.0, 0, time.perf_counter()
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
        self.ages += 1
        np.minimum(self.ages, FRAME_STACK - 1, out=self.ages)
        if ended.any():
            # A life lost ("cleanrl") ends the learner's episode, not the game: the C++ env plays on from its current
            # stack, the real final observation, and leaves final_obs unwritten (uninitialised memory) for it.
            life_lost = ended & ~game_over
            infos["final_obs"][life_lost] = obs[life_lost]
            _repeat_first_frame(infos["final_obs"], np.where(ended, self.ages, FRAME_STACK))
            infos["_final_obs"] = ended
            self.ages[ended] = 0
        _repeat_first_frame(obs, self.ages)
        if game_over.any():
            now = time.perf_counter()
            episode = {"r": np.where(game_over, self.game_returns, 0.0), "l": np.where(game_over, self.game_lengths, 0),
                       "t": np.where(game_over, np.round(now - self.game_starts, 6), 0.0)}  # fmt: skip
            infos["final_info"] = {"episode": episode, "_episode": game_over}
            self.game_returns[game_over], self.game_lengths[game_over], self.game_starts[game_over] = 0.0, 0, now
        return obs, np.sign(rewards) if self.clip_rewards else rewards, terminations, truncations, infos

    def state_dict(self) -> dict[str, Any]:
        """The sticky-action RNG and previous actions, the lives seen, the frames' ages and the game statistics."""
        return {"rng": self.rng.bit_generator.state, "previous_actions": self.previous_actions.copy(),
                "lives": self.lives.copy(), "ages": self.ages.copy(), "game_returns": self.game_returns.copy(),
                "game_lengths": self.game_lengths.copy(),
                "game_seconds": time.perf_counter() - self.game_starts}  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.previous_actions[:], self.lives[:], self.ages[:] = state["previous_actions"], state["lives"], state["ages"]
        self.game_returns[:], self.game_lengths[:] = state["game_returns"], state["game_lengths"]
        self.game_starts[:] = time.perf_counter() - state["game_seconds"]


def _make_ale_vector_env(env_id: str, num_envs: int, preset: str, eval: bool, max_episode_steps: int,
                         sticky_actions: str) -> gym.vector.VectorEnv:  # fmt: skip
    """The `AleVectorAdapter` over ale-py's ``AtariVectorEnv`` configured as the preset's sync stack."""
    from ale_py.vector_env import AtariVectorEnv

    sticky, cleanrl = STICKY_ACTIONS[preset], preset == "cleanrl"
    envs = AtariVectorEnv(
        gym.registry[env_id].kwargs["game"], num_envs, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
        max_num_frames_per_episode=FRAME_SKIP * max_episode_steps,
        repeat_action_probability=sticky if sticky_actions == "frame" else 0.0, img_height=SCREEN_SIZE,
        img_width=SCREEN_SIZE, stack_num=FRAME_STACK, frameskip=FRAME_SKIP, noop_max=NOOP_MAX if cleanrl else 0,
        life_loss_info=cleanrl and not eval, reward_clipping=False, use_fire_reset=cleanrl,
    )  # fmt: skip
    return AleVectorAdapter(envs, sticky if sticky_actions == "agent-step" else 0.0, clip_rewards=not eval)


def _check_env_id(env_id: str) -> None:
    """Raises ValueError unless `env_id` is a registered ALE v5 or NoFrameskip-v4 id (with close matches if unknown)."""

    def supported(name: str) -> bool:
        return (name.startswith("ALE/") and name.endswith("-v5")) or name.endswith("NoFrameskip-v4")

    if env_id not in gym.registry:
        ids = [k for k, spec in gym.registry.items() if spec.entry_point == ATARI_ENTRY_POINT and supported(k)]
        close = difflib.get_close_matches(str(env_id), sorted(ids), n=3, cutoff=0.5)
        raise ValueError(f"unknown env_id {env_id!r}: {ID_HINT}{f'; close matches: {close}' if close else ''}")
    if (entry_point := gym.registry[env_id].entry_point) != ATARI_ENTRY_POINT:
        raise ValueError(f"env_id {env_id!r} is not an Atari game (entry point {entry_point!r}); {ID_HINT}")
    if not supported(env_id):
        raise ValueError(f"env_id {env_id!r} is an Atari id whose frame skip or sticky actions are built in; use an "
                         "ALE v5 id ('ALE/Breakout-v5') or a NoFrameskip-v4 id ('BreakoutNoFrameskip-v4')")  # fmt: skip


def _make_single_env(env_id: str, preset: str, eval: bool, env_idx: int, capture_video: bool, run_dir: str | None,
                     max_episode_steps: int, sticky_actions: str) -> gym.Env:  # fmt: skip
    """One env of the vector env: the wrapper stack of the module docstring, in order."""
    record, sticky = capture_video and env_idx == 0, STICKY_ACTIONS[preset]
    env = gym.make(env_id, frameskip=1, repeat_action_probability=0.0, full_action_space=False, obs_type="grayscale",
                   max_num_frames_per_episode=FRAME_SKIP * max_episode_steps,
                   render_mode="rgb_array" if record else None)  # fmt: skip
    if sticky > 0 and sticky_actions == "frame":
        env = StickyAction(env, repeat_action_probability=sticky)
    if record:
        env = RecordVideo(env, os.path.join(run_dir, "videos"), name_prefix="eval" if eval else "train")
    env = AtariPreprocessing(env, noop_max=NOOP_MAX if preset == "cleanrl" else 0, frame_skip=FRAME_SKIP,
                             screen_size=SCREEN_SIZE, terminal_on_life_loss=False, grayscale_obs=True)  # fmt: skip
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
    return FrameStackObservation(env, FRAME_STACK, padding_type="reset")


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
        seed: every space's RNG is seeded here (env ``i``'s with ``seed + i``); call ``envs.reset(seed=seed)`` once
            before the first step (CleanRL's convention): env ``i``'s game (ALE's RNG, no-ops, sticky actions) then
            gets ``seed + i``.
        preset: ``"cleanrl"`` or ``"fire-paper"``.
        capture_video: record env 0's games into ``run_dir/videos`` (gymnasium's `RecordVideo`; needs moviepy).
        eval: no life-loss termination and no reward clipping (rewards are game scores).
        max_episode_steps: a game is truncated after this many env steps (ALE's frame cap, no-op starts included);
            27,000 = 108,000 frames = 30 minutes of play (Machado et al. 2018), the cap of both presets.
        sticky_actions: how "fire-paper" (p = 0.25) repeats actions: ``"agent-step"`` (the official FIRE code, SB3's
            StickyActionEnv: the whole 4-frame step) or ``"frame"`` (ALE's standard, Machado et al. 2018). No effect
            in "cleanrl".
        backend: ``"sync"`` (the wrapper stack in a `gym.vector.SyncVectorEnv`; checkpoints resume exactly) or
            ``"ale-vector"`` (`AleVectorAdapter` over ale-py's threaded C++ ``AtariVectorEnv``: the same contract and
            frames, but its own FIRE reset, no-op starts, sticky-action RNG and frame cap, no hidden NOOP step after
            a life loss, see `AleVectorAdapter`; checkpoints resume at an episode boundary; no video).

    Returns:
        The vector env, not yet reset: observations ``(N, 4, 84, 84) uint8``, actions ``(N,) int64`` in
        ``Discrete(A)``, rewards ``(N,) float64`` (in {-1, 0, 1} unless ``eval``), terminations and truncations
        ``(N,) bool``.

    Raises:
        ValueError: unknown, non-Atari or unsupported `env_id` (with close matches), `num_envs` or `max_episode_steps`
            not an integer >= 1, `seed` not one >= 0, an unknown `preset`, `sticky_actions` or `backend`,
            ``capture_video`` without `run_dir` or with ``backend="ale-vector"``; all before any env is built.
        gymnasium.error.DependencyNotInstalled: ``capture_video=True`` and moviepy is not installed.
    """
    _check_env_id(env_id)
    for name, value, low in (("num_envs", num_envs, 1), ("max_episode_steps", max_episode_steps, 1), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    for name, value, allowed in (("preset", preset, PRESETS), ("sticky_actions", sticky_actions, STICKY_MODES),
                                 ("backend", backend, BACKENDS)):  # fmt: skip
        if value not in allowed:
            raise ValueError(f"unknown {name} {value!r}; allowed: {list(allowed)}")
    if capture_video and backend != "sync":
        raise ValueError(f"capture_video=True needs backend='sync' (RecordVideo wraps a Python env), got {backend!r}")
    if capture_video and run_dir is None:
        raise ValueError("capture_video=True needs run_dir (videos go to run_dir/videos), got run_dir=None")
    if capture_video and importlib.util.find_spec("moviepy") is None:
        raise gym.error.DependencyNotInstalled(
            "capture_video=True needs the moviepy package (gymnasium's RecordVideo writes with it): pip install moviepy"
        )
    num_envs, seed, max_episode_steps = int(num_envs), int(seed), int(max_episode_steps)

    def make(env_idx: int) -> gym.Env:
        env = _make_single_env(env_id, preset, eval, env_idx, capture_video, run_dir, max_episode_steps, sticky_actions)
        env.action_space.seed(seed + env_idx)
        env.observation_space.seed(seed + env_idx)
        return env

    if backend == "ale-vector":
        envs = _make_ale_vector_env(env_id, num_envs, preset, eval, max_episode_steps, sticky_actions)
    else:
        make_envs = [functools.partial(make, i) for i in range(num_envs)]
        envs = gym.vector.SyncVectorEnv(make_envs, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    # Every space's RNG is seeded, so that a run's full state (fire_rl.envs.env_state) is a function of the seed.
    for space in (envs.action_space, envs.single_action_space, envs.observation_space, envs.single_observation_space):
        space.seed(seed)
    return envs


def real_next_obs(
    next_obs: np.ndarray, infos: dict[str, Any], terminations: np.ndarray, truncations: np.ndarray
) -> np.ndarray:
    """The real next observation of every env: `next_obs` ``(N, ...)`` (not modified) with the rows of the envs that
    ended (``terminations | truncations``, ``(N,) bool``) replaced by ``infos["final_obs"]``; `next_obs` itself when
    none ended.

    Raises:
        ValueError: an env ended but ``infos`` holds no final observation for it (a vector env made with another
            autoreset mode than SAME_STEP), or the arrays' lengths differ.
    """
    ended = np.logical_or(terminations, truncations)
    if ended.shape != (len(next_obs),):
        raise ValueError(
            f"terminations/truncations must have shape ({len(next_obs)},) like next_obs' first axis, got {ended.shape}"
        )
    if not ended.any():
        return next_obs
    final_obs, mask, out = infos.get("final_obs"), infos.get("_final_obs"), next_obs.copy()
    for i in np.flatnonzero(ended):
        if final_obs is None or mask is None or not mask[i]:
            raise ValueError(f"env {i} ended but infos has no final_obs for it: the vector env must use "
                             "autoreset_mode=gym.vector.AutoresetMode.SAME_STEP (make_atari_env does)")  # fmt: skip
        out[i] = final_obs[i]
    return out


def episode_stats(infos: dict[str, Any]) -> list[tuple[int, float, int]]:
    """``(env index, game return, game length in env steps)`` of every game that ended in this vector step, from
    `RecordEpisodeStatistics`' ``infos["final_info"]["episode"]`` (module docstring)."""
    final_info = infos.get("final_info")
    if not final_info or "episode" not in final_info:
        return []
    ep = final_info["episode"]
    return [(int(i), float(ep["r"][i]), int(ep["l"][i])) for i in np.flatnonzero(final_info["_episode"])]
