"""Shared test set-up: one torch thread (CI shares two cores with other work)."""

import os

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

import torch  # noqa: E402

torch.set_num_threads(1)
