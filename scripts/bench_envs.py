"""Env steps per second of the raw Atari vector env: the sync wrapper stack against ale-py's C++ ``AtariVectorEnv``.

    python scripts/bench_envs.py                         # -> benchmarks/ale_vector_<host>.json
    python scripts/bench_envs.py --num-envs 1,4 --seconds 5 --out /tmp/envs.json

For each backend and number of envs N: `make_atari_env(env_id, N, preset=...)`, reset, 50 warm-up vector steps, then
uniformly random actions for ``--seconds``; the rate is N x vector steps / wall seconds (``time.perf_counter``), the
best of ``--repeats`` windows. No agent, no buffer: the ceiling the env puts on a DQN loop. ale-vector uses ale-py's
default thread count (``num_threads=0``: one per core, at most N). On a machine shared with other work every rate is a
lower bound; the JSON records the load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np

from fire_rl.envs.atari import BACKENDS, PRESETS, make_atari_env


def cpu_model() -> str:
    with open("/proc/cpuinfo") as f:
        names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    return names[0] if names else platform.processor()


def rate(backend: str, num_envs: int, args: argparse.Namespace) -> float:
    envs = make_atari_env(args.env_id, num_envs, seed=0, preset=args.preset, backend=backend)
    envs.reset(seed=0)
    rng = np.random.default_rng(0)
    n_actions = int(envs.single_action_space.n)
    for _ in range(50):
        envs.step(rng.integers(n_actions, size=num_envs))
    best = 0.0
    for _ in range(args.repeats):
        steps, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < args.seconds:
            envs.step(rng.integers(n_actions, size=num_envs))
            steps += num_envs
        best = max(best, steps / elapsed)
    envs.close()
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env-id", default="ALE/Breakout-v5")
    parser.add_argument("--preset", default="fire-paper", choices=PRESETS)
    parser.add_argument("--num-envs", default="1,4,8,16", help="comma-separated numbers of envs")
    parser.add_argument("--seconds", type=float, default=10.0, help="timed window per measurement")
    parser.add_argument("--repeats", type=int, default=2, help="windows per measurement; the best counts")
    parser.add_argument("--out", default=None, help="default: benchmarks/ale_vector_<hostname>.json")
    args = parser.parse_args()
    out = args.out or os.path.join("benchmarks", f"ale_vector_{platform.node() or 'host'}.json")

    load_start = os.getloadavg()
    results = {backend: {} for backend in BACKENDS}
    for num_envs in (int(n) for n in args.num_envs.split(",")):
        for backend in BACKENDS:
            results[backend][num_envs] = round(rate(backend, num_envs, args), 1)
            print(f"{backend:>10}  N={num_envs:<3} {results[backend][num_envs]:>10,.0f} env steps/s", flush=True)
    report = {
        "machine": {"host": platform.node(), "cpu_count": os.cpu_count(), "cpu": cpu_model()},
        "config": {k: v for k, v in vars(args).items() if k != "out"},
        "env_steps_per_second": results,
        "speedup_ale_vector": {n: round(results["ale-vector"][n] / results["sync"][n], 2) for n in results["sync"]},
        "loadavg_start": load_start,
        "loadavg_end": os.getloadavg(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    with open(out, "w") as f:
        json.dump(report, f, indent=2)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
