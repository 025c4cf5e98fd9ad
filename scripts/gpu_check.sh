#!/usr/bin/env bash
# The GPU path in one command, on a machine with one CUDA device and no network (about 5-8 minutes on one H100):
#
#   scripts/gpu_check.sh [CLEANRL_DIR CLEANRL_PYTHON]
#
# 1. the test cases that run only on CUDA (what CI skips): the polar kernel, resets and replay sampling on the device,
#    the compiled and graph-captured update without a host sync (pytest -k cuda);
# 2. scripts/bench.py --device cuda --compile: the DQN update (Nature CNN, batch 32) and the SimBa update (paper widths,
#    batch 256) eager, compiled (--compile) and captured (--cudagraphs); one reset of each network (FIRE, S&P,
#    injection); replay sampling; the polar kernel on the device. Written to benchmarks/bench_<gpu name>.json;
# 3. given a CleanRL checkout and a Python that runs it: scripts/bench_cleanrl.sh dqn and sac on the device (its
#    summary lands beside the JSON).
# The agents' own loops (env steps/s) are part of bench.py's dqn and sac sections. Exit code: pytest's if it failed,
# else the benchmark's.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
if ! "$PYTHON" -c "import fire_rl, torch" 2>/dev/null; then
    echo "error: $PYTHON cannot import fire_rl and torch: activate the project's environment (README, set-up)" >&2
    exit 2
fi
if ! "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "error: no CUDA device: scripts/gpu_check.sh measures the GPU path; run it on a machine with one" >&2
    exit 2
fi
GPU=$("$PYTHON" -c "import re, torch; print(re.sub(r'[^a-z0-9]+', '_', torch.cuda.get_device_name().lower()).strip('_'))")
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true

set +e
"$PYTHON" -m pytest -q -rs -k cuda tests/
tests_rc=$?
set -e
"$PYTHON" scripts/bench.py --device cuda --compile --only peak,dqn,sac,resets,buffer,polar --seconds 6 \
    --dqn-ratios 1 --sac-ratios 2 --dqn-updates 500 --sac-updates 300 --out "benchmarks/bench_${GPU}.json"
if [[ $# -ge 2 ]]; then
    for agent in dqn sac; do
        OUT_DIR=$(mktemp -d) SUMMARY="benchmarks/cleanrl_${GPU}.json" scripts/bench_cleanrl.sh "$agent" "$1" "$2"
    done
fi
exit "$tests_rc"
