#!/usr/bin/env bash
# The H2O learning curve of docs/results.md: invariant D=6 on nested training sets, equal step budget.
# Usage: [TEMPERATURE=1000] [STEPS=25000] [SIZES="50 100 200 500"] [SEEDS=0] scripts/learning_curve_h2o.sh [DATA_DIR] [RUNS_DIR]
# N = 1000 with seed 0 is the run of scripts/results_h2o.sh (same split, seed and budget). The seed sets both
# the split and the initial parameters; seeds other than 0 get run directories ending in _sS.
set -euo pipefail
DATA=${1:-data}
RUNS=${2:-runs/results}
QFF=${QFF:-.venv/bin/qff}
T=${TEMPERATURE:-1000}
STEPS=${STEPS:-25000}
export XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
DS=$DATA/h2o_b3lyp_631gs_${T}k.zarr
mkdir -p "$RUNS"
for S in ${SEEDS:-0}; do
for N in ${SIZES:-50 100 200 500}; do
    R=$RUNS/h2o_${T}k_lc_n$N; [ "$S" = 0 ] || R=${R}_s$S
    RESUME=(); [ -f "$R/run.json" ] && RESUME=(--resume)    # an interrupted run continues from its checkpoint
    $QFF train "${RESUME[@]}" --dataset "$DS" --model invariant --depth 6 --steps "$STEPS" --batch-size 128 --test-size 300 \
        --val-size 100 --n-train "$N" --force-weight 10 --learning-rate 1e-2 --final-learning-rate 1e-4 \
        --eval-every 1000 --checkpoint-every 1000 --seed "$S" --no-prefect --run-dir "$R" >> "$R.log" 2>&1
    $QFF evaluate "$R" --no-prefect --no-plots --json > "$R.evaluate.json"
done
done
