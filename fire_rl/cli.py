"""The flags both agents share, flat as CleanRL's (``--seed 1 --reset fire --reset-at 100000``).

Each agent's tyro ``Args`` dataclass inherits `RunArgs` (experiment, logging, checkpoint flags) and `PlasticityArgs`
(the reset flags, which it inherits from `fire_rl.scheduler.ResetConfig`, and the per-step flags) and overrides the
defaults that differ (``exp_name``, the reset recipe). `check` refuses a bad value before any work; `reset_config` and
`make_regularizer` turn the flags into what the agent needs.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Annotated, Literal

import tyro

from fire_rl.regularizers import Regularizer
from fire_rl.runtime import check_compile
from fire_rl.scheduler import ResetConfig
from fire_rl.validation import MAX_STEPS, Flags, In


@dataclass
class RunArgs(Flags):
    """Experiment, logging and checkpoint flags (CleanRL's names where CleanRL has them). An agent's ``Args`` also
    declares ``total_timesteps``, ``learning_starts``, ``buffer_size`` and ``batch_size``, which `check` relates."""

    exp_name: str = "fire_rl"
    """the name of this experiment (the agents default to their file name)"""
    seed: Annotated[int, In(0, 2**32 - 1)] = 1
    """seed of the experiment"""
    torch_deterministic: bool = True
    """if toggled, `torch.backends.cudnn.deterministic=True`"""
    device: str = "auto"
    """auto (CUDA if available), cpu, cuda or cuda:N"""
    buffer_device: bool = False
    """keep the replay memory in --device's memory (a GPU's) and sample it there, instead of host memory with a pinned
    copy of every batch: the same batches. Atari: 7.06 GB per 1M env steps"""
    threads: Annotated[int, In(0, 4096)] = 0
    """torch CPU threads (0: torch's default)"""
    compile: bool = False
    """torch.compile the update and the acting step (inductor: C++ on CPU, Triton on CUDA); compiled while the run is
    built. The same computation up to the order of fused floating-point operations"""
    cudagraphs: bool = False
    """also capture the compiled update and acting step as CUDA graphs (torch.compile's reduce-overhead); CUDA only"""
    track: bool = False
    """if toggled, this experiment will be tracked with Weights and Biases"""
    wandb_project_name: str = "fire_rl"
    """the wandb's project name"""
    wandb_entity: str | None = None
    """the entity (team) of wandb's project"""
    capture_video: bool = False
    """whether to capture videos of the agent performances (`run_dir/videos`; MuJoCo needs MUJOCO_GL=egl)"""
    run_dir: Annotated[
        str | None, tyro.conf.arg(help_behavior_hint="(default: runs/{env}__{exp_name}__{seed}__{time})")
    ] = None
    """the run directory"""
    resume: str | None = None
    """continue the run in this run directory (or from this checkpoint file) with its own saved flags; only how long
    and where it runs and what it logs may be changed"""
    branch_from: str | None = None
    """start a new run from this checkpoint (file or run directory; saved with --save-buffer): its networks, targets,
    theta_0, optimizers, buffer, counters and env state, then this run's own seed and reset (the FIRE paper's
    protocol: one pretraining, one branch per method)"""
    start_over: bool = False
    """start a fresh run in a --run-dir that already holds one, after moving the old run aside (never deleted)"""
    save_buffer: bool = False
    """whether checkpoints include the replay buffer (exact resume; about 7 GB for 1M Atari frames)"""
    metrics_every: Annotated[int, In(0, MAX_STEPS)] = 10_000
    """env steps between plasticity metrics (0: off)"""
    checkpoint_every: Annotated[int, In(0, MAX_STEPS)] = 100_000
    """env steps between checkpoints (0: only at the end and on interrupt)"""
    stop_at: Annotated[int | None, In(1, MAX_STEPS)] = None
    """stop at this env step: checkpoint and exit 0 (result.json: stopped, not finished) while every schedule still
    spans --total-timesteps; --resume continues toward it. Each start's own (a resume or branch does not inherit it)"""

    def check(self) -> None:
        """Refuse a bad value before any work: `Flags.check_ranges`, then the flags that bound each other.

        Raises:
            ValueError: one line naming the flag, its value and what is allowed.
        """
        self.check_ranges()
        check_compile(self.compile, self.cudagraphs, self.device)
        if self.resume is not None and self.start_over:
            raise ValueError(f"--start-over starts a new run and --resume {self.resume} continues one: give one")
        if self.learning_starts >= self.total_timesteps:
            raise ValueError(
                f"--learning-starts={self.learning_starts} must be below --total-timesteps={self.total_timesteps}: "
                "the run would end without a gradient update"
            )
        if self.stop_at is not None and self.stop_at > self.total_timesteps:
            raise ValueError(f"--stop-at={self.stop_at} lies beyond --total-timesteps={self.total_timesteps}")
        if self.buffer_size < self.batch_size:
            raise ValueError(f"--buffer-size={self.buffer_size} is smaller than --batch-size={self.batch_size}")

    def markdown(self) -> str:
        """Every flag and its value as a Markdown table (tensorboard's hyperparameter text, as CleanRL writes it)."""
        rows = "\n".join(f"|{f.name}|{getattr(self, f.name)}|" for f in fields(self))
        return f"|param|value|\n|-|-|\n{rows}"


@dataclass
class PlasticityArgs(ResetConfig):
    """The reset flags, declared and validated by `ResetConfig` (``--reset-at`` is its field ``reset_at``), and the
    flags of the per-step plasticity methods."""

    # Per-step plasticity methods (fire_rl.regularizers.Regularizer); combine with any reset but pi
    regularizer: Literal["none", "swr", "l2init", "parseval"] = "none"
    """per-step method: swr (Soft Weight Rescaling after every optimizer step), l2init or parseval (loss terms)"""
    swr_lambda: Annotated[float, In(0, 1)] = 1e-3
    """SWR: each layer's norm moves this share of the way back to its initial norm per update"""
    swr_reinit: bool = False
    """SWR + re-init: the stored initial norms become the current ones at every reset event"""
    l2init_lambda: Annotated[float, In(0)] = 1e-2
    """L2-init: loss + l2init_lambda * ||theta - theta_0||^2"""
    parseval_lambda: Annotated[float, In(0)] = 1e-3
    """Parseval: loss + parseval_lambda * sum_l ||W_l W_l^T - s I||_F^2 over hidden layers"""
    parseval_s: Annotated[float, In(0, bounds="(]")] = 2.0
    """Parseval's target scale s"""

    def __post_init__(self) -> None:
        """Nothing yet: `check` validates, after giving a method without a schedule its default one."""

    def check(self, branch_step: int | None = None) -> None:
        """`RunArgs.check`, then the reset schedule, the reset configuration (`ResetConfig.validate`) and the per-step
        method. A method with no schedule resets once, at the midpoint of the run's span (the FIRE paper's protocol):
        0 to ``total_timesteps``, or for a branch `branch_step` (its env step at the branch point) to
        ``total_timesteps``. A branch resets only at or after its branch point (``reset_start`` rises to it).

        Raises:
            ValueError: one line naming the flag, its value and what is allowed.
        """
        super().check()
        if self.reset_at_start and self.branch_from is None:
            raise ValueError("--reset-at-start resets at a branch point: give --branch-from CKPT too")
        start = branch_step or 0
        if self.reset != "none" and not self.reset_at and self.reset_every == 0 and not self.reset_at_start:
            self.reset_at = ((start + self.total_timesteps) // 2,)
        self.reset_start = max(self.reset_start, start)  # --reset-every counts from the branch point on
        if early := [s for s in self.reset_at if s < start]:
            raise ValueError(
                f"--reset-at={list(self.reset_at)}: {early} lies before the branch point, env step {start}; a branch "
                "resets only at or after it"
            )
        self.validate(self.total_timesteps)
        self.make_regularizer()

    def reset_config(self) -> ResetConfig:
        """The scheduler's config: these flags' values of the fields `ResetConfig` declares (validated again)."""
        return ResetConfig(**{f.name: getattr(self, f.name) for f in fields(ResetConfig)})

    def make_regularizer(self) -> Regularizer:
        """The run's per-step method; raises ValueError for a bad coefficient or a combination with injection."""
        if self.regularizer != "none" and self.reset == "pi":
            raise ValueError(
                f"--regularizer={self.regularizer} cannot be combined with --reset=pi (injection changes the "
                "parameter set); allowed with pi: none"
            )
        return Regularizer(
            self.regularizer,
            swr_lambda=self.swr_lambda,
            swr_reinit=self.swr_reinit,
            l2init_lambda=self.l2init_lambda,
            parseval_lambda=self.parseval_lambda,
            parseval_s=self.parseval_s,
        )
