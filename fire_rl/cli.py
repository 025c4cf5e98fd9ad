"""The reset and per-step flags both agents share, flat as CleanRL's (``--reset fire --reset-at 100000``).

Each agent's tyro ``Args`` dataclass inherits `PlasticityArgs` and overrides the default recipe; `reset_config` and
`make_regularizer` turn the flags into the scheduler's `ResetConfig` and the run's `Regularizer`, checking every value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from fire_rl.regularizers import Regularizer
from fire_rl.scheduler import ResetConfig


@dataclass
class PlasticityArgs:
    # Resets (fire_rl.scheduler.ResetConfig)
    reset: Literal["none", "fire", "sp", "full", "pi", "redo"] = "none"
    """reset method: none, fire (FIRE), sp (Shrink & Perturb), full (full reset), pi (plasticity injection), redo
    (ReDo: recycle dormant neurons; give --reset-every)"""
    reset_recipe: Literal["paper-dqn", "paper-sac", "custom"] = "custom"
    """which layers get which operation: an official FIRE recipe (the agent's default), or the method on the layers
    chosen by --reset-kinds/--reset-roles/--reset-names"""
    reset_at: tuple[int, ...] = ()
    """env steps at which to reset (default when a method is set and no schedule is given: the run's midpoint)"""
    reset_every: int = 0
    """reset every this many env steps (0: off)"""
    reset_start: int = 0
    """no reset before this env step"""
    reset_stop: int | None = None
    """no reset after this env step"""
    reset_kinds: tuple[str, ...] = ()
    """custom recipe: layer kinds (linear, conv)"""
    reset_roles: tuple[str, ...] = ()
    """custom recipe: layer roles (encoder, head)"""
    reset_names: tuple[str, ...] = ()
    """custom recipe: fnmatch patterns of layer names"""
    reset_target: Literal["copy", "same", "keep"] | None = None
    """target networks after a reset (default: copy the online result)"""
    reset_optimizer: Literal["keep", "reset-changed", "rebuild"] | None = None
    """optimizer state after a reset (default: the recipe's: paper-dqn keeps Adam's state, paper-sac rebuilds)"""
    reset_temperature: Literal["keep", "reset"] | None = None
    """SAC's temperature after a reset (default: the recipe's; paper-sac resets it)"""
    polar_method: Literal["newton_schulz", "polar_express", "svd"] = "newton_schulz"
    """FIRE's polar factor: cubic Newton-Schulz (the paper), Polar Express (with --ns-tol), or an exact SVD"""
    ns_steps: int = 10
    """Newton-Schulz iterations"""
    ns_tol: float | None = None
    """iterate Newton-Schulz until max|sigma-1| <= ns_tol instead"""
    sp_alpha: float = 0.2
    """Shrink & Perturb: theta <- alpha*theta + (1-alpha)*theta_0"""
    reset_toward: Literal["init", "random"] = "init"
    """S&P / full reset / injection toward theta_0 or a fresh draw"""
    redo_tau: float = 0.1
    """ReDo's dormancy threshold tau"""

    # Per-step plasticity methods (fire_rl.regularizers.Regularizer); combine with any reset but pi
    regularizer: Literal["none", "swr", "l2init", "parseval"] = "none"
    """per-step method: swr (Soft Weight Rescaling after every optimizer step), l2init or parseval (loss terms)"""
    swr_lambda: float = 1e-3
    """SWR: each layer's norm moves this share of the way back to its initial norm per update"""
    swr_reinit: bool = False
    """SWR + re-init: the stored initial norms become the current ones at every reset event"""
    l2init_lambda: float = 1e-2
    """L2-init: loss + l2init_lambda * ||theta - theta_0||^2"""
    parseval_lambda: float = 1e-3
    """Parseval: loss + parseval_lambda * sum_l ||W_l W_l^T - s I||_F^2 over hidden layers"""
    parseval_s: float = 2.0
    """Parseval's target scale s"""

    def default_schedule(self, total_timesteps: int) -> None:
        """A method with no schedule resets once, at the run's midpoint (the FIRE paper's protocol)."""
        if self.reset != "none" and not self.reset_at and self.reset_every == 0:
            self.reset_at = (total_timesteps // 2,)

    def reset_config(self) -> ResetConfig:
        """The scheduler's config; raises ValueError naming a bad value."""
        return ResetConfig(
            method=self.reset,
            recipe=self.reset_recipe,
            at=self.reset_at,
            every=self.reset_every,
            start=self.reset_start,
            stop=self.reset_stop,
            kinds=self.reset_kinds,
            roles=self.reset_roles,
            names=self.reset_names,
            target=self.reset_target,
            optimizer=self.reset_optimizer,
            temperature=self.reset_temperature,
            polar_method=self.polar_method,
            ns_steps=self.ns_steps,
            ns_tol=self.ns_tol,
            sp_alpha=self.sp_alpha,
            toward=self.reset_toward,
            redo_tau=self.redo_tau,
        )

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
