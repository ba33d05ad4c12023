#!/usr/bin/env bash
# Reproduces the H2O numbers of docs/results.md (2 cores: two single-threaded trainings at a time).
# Usage: scripts/results_h2o.sh [DATA_DIR] [RUNS_DIR]
set -euo pipefail
DATA=${1:-data}
RUNS=${2:-runs/results}
QFF=${QFF:-.venv/bin/qff}
export XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
DS=$DATA/h2o_b3lyp_631gs_500k.zarr

# 1400 thermal normal-mode samples at 500 K around the psi4 B3LYP/6-31G* minimum.
$QFF dataset generate --molecule h2o --engine psi4 --method b3lyp --basis '6-31g*' --samples 1400 \
    --temperature-k 500 --seed 500 --chunk-size 20 --out "$DS" --no-prefect --workers 2

# Same split for every model: 300 test, 100 validation, 1000 training geometries.
COMMON=(--dataset "$DS" --test-size 300 --val-size 100 --n-train 1000 --batch-size 128 --force-weight 10
        --learning-rate 1e-2 --final-learning-rate 1e-4 --eval-every 500 --checkpoint-every 500 --no-prefect)
STEPS=${STEPS:-11000}
train() { $QFF train "${COMMON[@]}" --steps "$STEPS" "$@" > "$RUNS/$(basename "${@: -1}").log" 2>&1; }
mkdir -p "$RUNS"
train --model invariant --depth 6 --seed 0 --run-dir "$RUNS/invariant_d6" &
train --model generic --depth 1 --seed 0 --run-dir "$RUNS/generic_d1" &
wait
train --model generic --depth 6 --seed 0 --run-dir "$RUNS/generic_d6" &
train --model invariant --depth 6 --seed 1 --init random --run-dir "$RUNS/invariant_d6_random" &
wait
for r in invariant_d6 generic_d1 generic_d6 invariant_d6_random; do
    $QFF evaluate "$RUNS/$r" --no-prefect --json $([ "$r" = invariant_d6 ] && echo --krr) > "$RUNS/$r/evaluate.out"
done
.venv/bin/python scripts/results_table.py "$RUNS"/invariant_d6 "$RUNS"/invariant_d6_random "$RUNS"/generic_d1 "$RUNS"/generic_d6
