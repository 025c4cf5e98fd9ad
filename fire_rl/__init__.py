"""fire_rl: deep reinforcement learning under loss of plasticity.

The reset methods (`fire_rl.resets`), the reset scheduler (`fire_rl.scheduler`), plasticity metrics (`fire_rl.metrics`),
replay buffers (`fire_rl.buffers`) and networks (`fire_rl.networks`) shared by the single-file agents in `agents/`.
Environment factories live in the repository's `envs/` folder, installed as `fire_rl.envs`.
"""

__version__ = "0.1.0"
