#!/usr/bin/env bash
# Side by side: env steps/s of a CleanRL script and of our agent with the same settings, CPU, one torch thread each,
# alternating rounds (CleanRL, ours, ours variant, CleanRL, ...) so that drift of the machine hits all alike.
#
#   scripts/bench_cleanrl.sh {dqn,sac} CLEANRL_DIR CLEANRL_PYTHON [TOTAL_TIMESTEPS] [ROUNDS]
#
# dqn: CleanRL's cleanrl/dqn_atari.py against agents/dqn_atari.py (the default: the serial loop, CleanRL's order, one
#      core) and agents/dqn_atari.py --overlap (background learner: a second core busy; key "overlap"; summaries
#      written before the serial default call overlap "ours" and the serial loop "serial"): BreakoutNoFrameskip-v4,
#      one env, replay ratio 0.25, learning from env step 1,000, buffer BUFFER_SIZE (default 100000). TOTAL_TIMESTEPS default 6000.
# sac: CleanRL's cleanrl/sac_continuous_action.py (MLP 256x2, one critic update per env step, batch 256) against
#      agents/sac_simba.py at CleanRL's FLOPs (SimBa 128 wide with one block, whose 4x-wide MLP gives about the
#      multiply-adds of a 256x2 MLP; action repeat 1, replay ratio 1, batch 256) and at SimBa's widths (its defaults:
#      actor 128x1, critics 512x2, action repeat 2, replay ratio 2 = one update per env step): Humanoid-v4, learning
#      from env step 5,000. TOTAL_TIMESTEPS default 7000.
# ROUNDS default 2. It prints the CPU and torch's CPU capability, every run's env steps/s while learning (from the
# wall-clock stamps of the charts/SPS events all scripts write while learning: (last step - first step) / (last
# stamp - first stamp)), then per script the median and range over rounds and the ratio of medians to CleanRL.
# SUMMARY (default: summary.json in OUT_DIR) receives the figures under the key dqn or sac, with the machine; an
# existing SUMMARY keeps its other key, so one file per machine holds both. OUT_DIR (default: a new temporary
# directory; one that is not empty is refused) receives the runs and logs; OURS_PYTHON (default: python) runs our agents and the summary.
# ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 make an AVX-512 host run AVX2 kernels.
#
# It fetches nothing and copies no CleanRL code: give it a CleanRL checkout and a Python that runs it (setup:
# benchmarks/README.md, "CleanRL side by side").
set -euo pipefail

usage="usage: $0 {dqn,sac} CLEANRL_DIR CLEANRL_PYTHON [TOTAL_TIMESTEPS] [ROUNDS]"
AGENT=${1:?$usage}
CLEANRL_DIR=${2:?$usage}
CLEANRL_PYTHON=${3:?$usage}
OURS_PYTHON=${OURS_PYTHON:-python}
BUFFER_SIZE=${BUFFER_SIZE:-100000}
REPO=$(cd "$(dirname "$0")/.." && pwd)
OUT_DIR=${OUT_DIR:-$(mktemp -d /tmp/bench_cleanrl.XXXXXX)}
case $AGENT in
    dqn)
        SCRIPT=cleanrl/dqn_atari.py LEARNING_STARTS=1000 TOTAL=${4:-6000}
        CLEANRL_FLAGS=(--env-id BreakoutNoFrameskip-v4 --buffer-size "$BUFFER_SIZE")
        COMMON=(agents/dqn_atari.py --env-id BreakoutNoFrameskip-v4 --buffer-size "$BUFFER_SIZE")
        VARIANTS=(ours overlap)
        FLAGS_ours=() FLAGS_overlap=(--overlap)
        ;;
    sac)
        SCRIPT=cleanrl/sac_continuous_action.py LEARNING_STARTS=5000 TOTAL=${4:-7000}
        CLEANRL_FLAGS=(--env-id Humanoid-v4)
        COMMON=(agents/sac_simba.py --env-id Humanoid-v4 --eval-every 0)
        VARIANTS=(ours_cleanrl_flops ours_simba_widths)
        FLAGS_ours_cleanrl_flops=(--actor-hidden 128 --actor-blocks 1 --critic-hidden 128 --critic-blocks 1
                                  --action-repeat 1 --replay-ratio 1 --batch-size 256)
        FLAGS_ours_simba_widths=()
        ;;
    *) echo "error: the agent '$AGENT' is not one of: dqn, sac" >&2; exit 2 ;;
esac
ROUNDS=${5:-2}
SUMMARY=${SUMMARY:-$OUT_DIR/summary.json}
if [[ ! -f "$CLEANRL_DIR/$SCRIPT" ]]; then
    echo "error: CLEANRL_DIR=$CLEANRL_DIR has no $SCRIPT (give the root of a CleanRL checkout)" >&2
    exit 2
fi
if ! [[ "$TOTAL" =~ ^[0-9]+$ ]] || (( TOTAL <= LEARNING_STARTS + 1000 )); then
    echo "error: TOTAL_TIMESTEPS=$TOTAL must be an integer > $((LEARNING_STARTS + 1000)) env steps" >&2
    exit 2
fi
if ! [[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]]; then
    echo "error: ROUNDS=$ROUNDS must be an integer >= 1" >&2
    exit 2
fi
if [[ -d "$OUT_DIR" && -n "$(ls -A "$OUT_DIR")" ]]; then  # the summary reads every run in it
    echo "error: OUT_DIR=$OUT_DIR is not empty (give a new directory)" >&2
    exit 2
fi
mkdir -p "$OUT_DIR"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONUNBUFFERED=1
# The machine before the first run (bench.py's machine_info: CPU, torch's CPU capability, ISA caps, load average).
PYTHONPATH="$REPO/scripts" "$OURS_PYTHON" -c "
import json, sys
from bench import machine_info
m = machine_info()
json.dump(m, open(sys.argv[1], 'w'), indent=2)
print(f\"CPU: {m['device_name']}; torch {m['torch']}, CPU capability {m['cpu_capability']}\")" "$OUT_DIR/machine.json"

for round in $(seq 1 "$ROUNDS"); do
    echo "load average before round $round: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT_DIR/load.txt"
    # CleanRL: its script unchanged, in its own run directory. ale-py >= 0.9 registers the Atari ids only when
    # imported, which CleanRL's script (written for ale-py 0.8's entry point) does not do, so the interpreter does.
    echo "== round $round: CleanRL $SCRIPT, $TOTAL env steps"
    mkdir -p "$OUT_DIR/cleanrl_$round"
    (
        cd "$OUT_DIR/cleanrl_$round"
        PYTHONPATH="$CLEANRL_DIR" "$CLEANRL_PYTHON" -c "
import contextlib, runpy, sys
with contextlib.suppress(ImportError):
    import ale_py  # noqa: F401
sys.argv = ['$SCRIPT'] + sys.argv[1:]
runpy.run_path('$CLEANRL_DIR/$SCRIPT', run_name='__main__')
" "${CLEANRL_FLAGS[@]}" --learning-starts "$LEARNING_STARTS" --total-timesteps "$TOTAL" --no-cuda --exp-name bench
    ) > "$OUT_DIR/cleanrl_$round.log" 2>&1 || { echo "error: CleanRL failed: $OUT_DIR/cleanrl_$round.log" >&2; exit 1; }
    for variant in "${VARIANTS[@]}"; do
        echo "== round $round: $variant, $TOTAL env steps"
        flags="FLAGS_$variant[@]"
        (
            cd "$REPO"
            "$OURS_PYTHON" "${COMMON[@]}" --learning-starts "$LEARNING_STARTS" --total-timesteps "$TOTAL" \
                --threads 1 --device cpu --run-dir "$OUT_DIR/${variant}_$round" --start-over "${!flags}"
        ) > "$OUT_DIR/${variant}_$round.log" 2>&1 || { echo "error: failed: $OUT_DIR/${variant}_$round.log" >&2; exit 1; }
    done
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT_DIR/load.txt"

PYTHONPATH="$REPO/scripts" "$OURS_PYTHON" - "$AGENT" "$OUT_DIR" "$SUMMARY" "$TOTAL" "$LEARNING_STARTS" "$ROUNDS" \
    "cleanrl ${VARIANTS[*]}" <<'EOF'
import json
import statistics
import sys
from pathlib import Path

from bench import learning_window
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

agent, out_dir, summary_path = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
total, learning_starts, rounds, variants = int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), sys.argv[7].split()


def learning_rate(run_dir: Path) -> float:
    """Env steps/s between the first and last charts/SPS event after learning starts (CleanRL writes its run under
    runs/<name>/ in its working directory: exactly one event file per run directory)."""
    (events,) = run_dir.rglob("events.out.tfevents.*")
    acc = EventAccumulator(str(events.parent), size_guidance={"scalars": 0})
    acc.Reload()
    steps = [(e.step, e.wall_time) for e in acc.Scalars("charts/SPS")]
    return learning_window({"events": steps}, learning_starts)["env_steps_per_s"]


runs = {v: [learning_rate(out_dir / f"{v}_{r}") for r in range(1, rounds + 1)] for v in variants}
result = {"total_timesteps": total, "load": (out_dir / "load.txt").read_text().splitlines()}
for variant, rates in runs.items():
    median = statistics.median(rates)
    ratio = median / statistics.median(runs["cleanrl"])
    result[variant] = {"sps_learning": rates, "median": median, "ratio_to_cleanrl": ratio}
    print(f"{variant:>20}: {median:7.1f} env steps/s while learning (median of {len(rates)}: "
          f"{min(rates):.1f}-{max(rates):.1f}), {ratio:.2f}x CleanRL")
summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
summary.update({"machine": json.loads((out_dir / "machine.json").read_text()), agent: result})
summary_path.write_text(json.dumps(summary, indent=2) + "\n")
print(f"wrote {summary_path}; logs and runs in {out_dir}")
EOF
