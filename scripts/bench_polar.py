"""Benchmark the polar-factor kernel and FIRE: accuracy (max|σ − 1|) and wall time per method and shape.

    python scripts/bench_polar.py          # 1 thread; CUDA if present, else CPU -> benchmarks/polar_<host>.json
    python scripts/bench_polar.py --threads 2 --device cpu --repeats 7 --out /tmp/polar.json

Cases, on float32 Gaussian weights of shape 512×3136 (DQN fc1, transposed), 512×512 and 2048×512 (SimBa 4h×h):
- ``ns10``: the paper's 10 cubic Newton–Schulz steps (`polar`, default);
- ``ns_tol``: cubic Newton–Schulz until max|σ − 1| ≤ --tol (tolerance mode; steps taken are reported);
- ``pe_tol``: Polar Express until max|σ − 1| ≤ --tol;
- ``svd``: the exact polar factor from `torch.linalg.svd`.
Tolerance-mode timings include the one `svdvals` of the input that finds the ranks (the rank rule of `polar`).
Then one `fire_` on every layer of a Nature-CNN Q-network (4 frames, 18 actions), with and without the per-layer
measurements, and on the DQN preset's layers (the three convs); and on a paper-width SimBa critic (h = 512, 2 blocks,
h1 observation 51 + action 19) when `fire_rl.networks` provides `SimbaCritic`.

Times are medians over --repeats runs after one warm-up (CUDA: synchronised before and after each run). Residuals are
computed afterwards, independently, from float64 singular values of the result. The JSON also records the thread
count (`torch.get_num_threads()`), torch version, device and CPU/GPU name.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import socket
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from fire_rl.polar import polar, polar_with_info
from fire_rl.resets import fire_, select_layers

SHAPES = ((512, 3136), (512, 512), (2048, 512))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto: CUDA if available")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per case (median reported)")
    parser.add_argument("--tol", type=float, default=1e-3, help="tolerance of the tolerance-mode cases")
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default benchmarks/polar_<host>.json)")
    args = parser.parse_args()
    if args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    if not 0 < args.tol < 1:
        parser.error(f"--tol must be in (0, 1), got {args.tol}")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    return args


def timed(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Median wall time of `fn` in seconds, after one warm-up run."""
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def residual(q: torch.Tensor) -> float:
    return float((torch.linalg.svdvals(q.detach().double().cpu()) - 1.0).abs().max())


def bench_kernels(device: torch.device, repeats: int, tol: float) -> list[dict]:
    gen = torch.Generator().manual_seed(0)
    rows = []
    for shape in SHAPES:
        w = torch.randn(*shape, generator=gen).to(device)
        cases = {
            "ns10": dict(method="newton_schulz", steps=10),
            "ns_tol": dict(method="newton_schulz", tol=tol, max_steps=200),
            "pe_tol": dict(method="polar_express", tol=tol),
            "svd": dict(method="svd"),
        }
        for case, options in cases.items():
            q, info = polar_with_info(w, **options)
            seconds = timed(lambda w=w, options=options: polar(w, **options), device, repeats)
            rows.append(
                {
                    "shape": list(shape),
                    "case": case,
                    "steps": info.steps,
                    "residual": residual(q),
                    "seconds": seconds,
                }
            )
            res = rows[-1]["residual"]
            print(f"{str(shape):>12} {case:>7}: steps {info.steps:>3}  max|σ-1| {res:.2e}  {seconds:.4f} s")
    return rows


def bench_fire(device: torch.device, repeats: int) -> list[dict]:
    import fire_rl.networks as networks

    nets: list[tuple[str, nn.Module, dict[str, nn.Module]]] = []
    dqn = networks.QNetwork(18, in_channels=4).to(device)
    nets.append(("nature_cnn_all", dqn, select_layers(dqn)))
    nets.append(("nature_cnn_convs", dqn, select_layers(dqn, kinds=["conv"])))
    critic_cls = getattr(networks, "SimbaCritic", None)
    if critic_cls is not None:
        critic = critic_cls(obs_dim=51, act_dim=19, hidden=512, num_blocks=2).to(device)
        nets.append(("simba_critic_h512", critic, select_layers(critic)))
    else:
        print("fire_rl.networks has no SimbaCritic: SimBa case skipped")

    rows = []
    for label, net, layers in nets:
        state = {k: v.clone() for k, v in net.state_dict().items()}
        for measure in (False, True):

            def run(net=net, layers=layers, measure=measure, state=state) -> None:
                net.load_state_dict(state)  # FIRE of a trained-like (not yet orthogonal) network every time
                fire_(net, layers, measure=measure)

            seconds = timed(run, device, repeats)
            n_params = sum(m.weight.numel() for m in layers.values())
            rows.append(
                {"network": label, "layers": len(layers), "weights": n_params, "measure": measure, "seconds": seconds}
            )
            print(f"fire_ {label:>18} ({len(layers)} layers, measure={measure!s:>5}): {seconds:.4f} s")
    return rows


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(
        "cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) else "cpu"
    )
    host = re.sub(r"[^A-Za-z0-9_.-]", "_", socket.gethostname() or "cpu")
    out = args.out or Path("benchmarks") / f"polar_{host}{'_cuda' if device.type == 'cuda' else ''}.json"
    hardware = (
        torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine())
    )
    print(f"device {device} ({hardware}), torch {torch.__version__}, threads {torch.get_num_threads()}")

    result = {
        "host": host,
        "device": str(device),
        "hardware": hardware,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "repeats": args.repeats,
        "tol": args.tol,
        "dtype": "float32",
        "kernels": bench_kernels(device, args.repeats, args.tol),
        "fire": bench_fire(device, args.repeats),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
