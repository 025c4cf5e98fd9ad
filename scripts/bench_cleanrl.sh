#!/usr/bin/env bash
# Side by side: env steps/s of CleanRL's cleanrl/dqn_atari.py and of our agents/dqn_atari.py with the same settings
# (BreakoutNoFrameskip-v4, one env, replay ratio 0.25, learning from env step 1,000), run back to back with one torch
# thread each: CleanRL, ours (the serial loop, CleanRL's order), ours with --overlap (updates in a background thread,
# acting one learning step behind).
# How to set CleanRL up and read the output: benchmarks/README.md, "CleanRL side by side".
#
# It fetches nothing and copies no CleanRL code: give it a CleanRL checkout and a Python that runs it.
#
#   scripts/bench_cleanrl.sh CLEANRL_DIR CLEANRL_PYTHON [TOTAL_TIMESTEPS]      (default 6000 env steps)
#
# Both get --buffer-size BUFFER_SIZE (default 100000): CleanRL's buffer stores whole 4-frame stacks, 26 GiB at its
# default 1M, which machines with less memory refuse to allocate; sampling cost hardly depends on the size.
# OURS_PYTHON (default: python) runs our agent and reads both runs' tensorboard events; OUT_DIR (default: a new
# temporary directory) receives both runs and the logs. Both runs get OMP_NUM_THREADS=1 (CleanRL never sets torch's
# thread count; ours also gets --threads 1) and the CPU (--no-cuda for CleanRL, --device cpu for ours).
set -euo pipefail

usage="usage: $0 CLEANRL_DIR CLEANRL_PYTHON [TOTAL_TIMESTEPS]"
CLEANRL_DIR=${1:?$usage}
CLEANRL_PYTHON=${2:?$usage}
TOTAL=${3:-6000}
OURS_PYTHON=${OURS_PYTHON:-python}
LEARNING_STARTS=1000
BUFFER_SIZE=${BUFFER_SIZE:-100000}
REPO=$(cd "$(dirname "$0")/.." && pwd)
OUT_DIR=${OUT_DIR:-$(mktemp -d /tmp/bench_cleanrl.XXXXXX)}

if [[ ! -f "$CLEANRL_DIR/cleanrl/dqn_atari.py" ]]; then
    echo "error: CLEANRL_DIR=$CLEANRL_DIR has no cleanrl/dqn_atari.py (give the root of a CleanRL checkout)" >&2
    exit 2
fi
if ! [[ "$TOTAL" =~ ^[0-9]+$ ]] || (( TOTAL <= LEARNING_STARTS + 1000 )); then
    echo "error: TOTAL_TIMESTEPS=$TOTAL must be an integer > $((LEARNING_STARTS + 1000)) env steps" >&2
    exit 2
fi
mkdir -p "$OUT_DIR"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONUNBUFFERED=1
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)" | tee "$OUT_DIR/load.txt"

# CleanRL: its script unchanged. ale-py >= 0.9 registers the Atari ids only when imported, which CleanRL's script
# (written for ale-py 0.8's entry point) does not do, so the interpreter imports it first.
echo "== CleanRL cleanrl/dqn_atari.py, $TOTAL env steps"
(
    cd "$CLEANRL_DIR"
    "$CLEANRL_PYTHON" -c "
import runpy, sys
try:
    import ale_py  # noqa: F401
except ImportError:
    pass
sys.argv = ['cleanrl/dqn_atari.py'] + sys.argv[1:]
runpy.run_path('cleanrl/dqn_atari.py', run_name='__main__')
" --env-id BreakoutNoFrameskip-v4 --learning-starts "$LEARNING_STARTS" --total-timesteps "$TOTAL" --no-cuda \
        --buffer-size "$BUFFER_SIZE" --exp-name bench_cleanrl
) > "$OUT_DIR/cleanrl.log" 2>&1
CLEANRL_RUN=$(ls -td "$CLEANRL_DIR"/runs/BreakoutNoFrameskip-v4__bench_cleanrl__* | head -1)
echo "load average between: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT_DIR/load.txt"

for variant in ours overlap; do
    echo "== $variant agents/dqn_atari.py, $TOTAL env steps"
    (
        cd "$REPO"
        "$OURS_PYTHON" agents/dqn_atari.py --env-id BreakoutNoFrameskip-v4 --learning-starts "$LEARNING_STARTS" \
            --total-timesteps "$TOTAL" --buffer-size "$BUFFER_SIZE" --threads 1 --device cpu \
            --run-dir "$OUT_DIR/$variant" --start-over $([[ $variant == overlap ]] && echo --overlap)
    ) > "$OUT_DIR/$variant.log" 2>&1
    echo "load average after $variant: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT_DIR/load.txt"
done

# Both scripts log charts/SPS = env steps since the start / seconds since the start. The learning-phase rate comes
# from the wall-clock stamps of those events: (last step - first step) / (last stamp - first stamp).
"$OURS_PYTHON" - "$CLEANRL_RUN" "$OUT_DIR/ours" "$OUT_DIR/overlap" "$OUT_DIR/summary.json" <<'EOF'
import json
import sys

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def rates(run_dir):
    acc = EventAccumulator(run_dir, size_guidance={"scalars": 0})
    acc.Reload()
    events = acc.Scalars("charts/SPS")
    first, last = events[0], events[-1]
    return {
        "run_dir": run_dir,
        "sps_overall": last.value,
        "sps_learning": (last.step - first.step) / (last.wall_time - first.wall_time),
        "steps": [first.step, last.step],
    }


summary = {"cleanrl": rates(sys.argv[1]), "ours": rates(sys.argv[2]), "overlap": rates(sys.argv[3])}
for name in ("ours", "overlap"):
    for key in ("overall", "learning"):
        summary[f"ratio_{key}" + ("" if name == "ours" else "_overlap")] = (
            summary[name][f"sps_{key}"] / summary["cleanrl"][f"sps_{key}"]
        )
with open(sys.argv[4], "w") as f:
    json.dump(summary, f, indent=2)
for name in ("cleanrl", "ours", "overlap"):
    r = summary[name]
    print(f"{name:>8}: {r['sps_overall']:7.1f} env steps/s overall, {r['sps_learning']:7.1f} while learning "
          f"(env steps {r['steps'][0]}-{r['steps'][1]})")
print(f"   ratio: {summary['ratio_overall']:.2f}x overall, {summary['ratio_learning']:.2f}x while learning")
print(f"   ratio with --overlap: {summary['ratio_overall_overlap']:.2f}x overall, "
      f"{summary['ratio_learning_overlap']:.2f}x while learning")
EOF
echo "logs and runs in $OUT_DIR"
