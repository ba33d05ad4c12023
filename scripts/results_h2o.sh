#!/usr/bin/env bash
# Reproduces the H2O numbers of docs/results.md (2 cores: two single-threaded trainings at a time).
# Usage: [TEMPERATURE=500|1000] [STEPS=25000] scripts/results_h2o.sh [DATA_DIR] [RUNS_DIR]
# Rerunning it after an interruption resumes (generation, training), finished evaluations are kept.
# 500 K: the tables "H2O: thermal normal modes at 500 K"; 1000 K: "... at 1000 K" (seed = temperature).
set -euo pipefail
DATA=${1:-data}
RUNS=${2:-runs/results}
QFF=${QFF:-.venv/bin/qff}
T=${TEMPERATURE:-500}
STEPS=${STEPS:-25000}
export XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
DS=$DATA/h2o_b3lyp_631gs_${T}k.zarr

# 1400 thermal normal-mode samples at T around the psi4 B3LYP/6-31G* minimum (resumes if interrupted).
$QFF dataset generate --molecule h2o --engine psi4 --method b3lyp --basis '6-31g*' --samples 1400 \
    --temperature-k "$T" --seed "$T" --chunk-size 20 --out "$DS" --no-prefect --workers 2

# Same split for every model: 300 test, 100 validation, 1000 training geometries.
COMMON=(--dataset "$DS" --test-size 300 --val-size 100 --n-train 1000 --batch-size 128 --force-weight 10
        --learning-rate 1e-2 --final-learning-rate 1e-4 --eval-every 1000 --checkpoint-every 1000 --no-prefect
        --steps "$STEPS")
train() {  # resumes an interrupted run
    local R=${*: -1} RESUME=(); [ -f "$R/run.json" ] && RESUME=(--resume)
    $QFF train "${COMMON[@]}" "${RESUME[@]}" "$@" >> "$RUNS/$(basename "$R").log" 2>&1
}
mkdir -p "$RUNS"
P=h2o_${T}k
# Equal size (34 parameters each), equal data, equal step budget.
train --model invariant --depth 6 --seed 0 --run-dir "$RUNS/${P}_invariant_d6" &
train --model generic --depth 1 --seed 0 --run-dir "$RUNS/${P}_generic_d1" &
wait
for r in ${P}_invariant_d6 ${P}_generic_d1; do
    [ -s "$RUNS/$r/evaluate.out" ] && continue
    $QFF evaluate "$RUNS/$r" --no-prefect --json $([ "$r" = ${P}_invariant_d6 ] && echo --krr) > "$RUNS/$r/evaluate.tmp"
    mv "$RUNS/$r/evaluate.tmp" "$RUNS/$r/evaluate.out"
done
.venv/bin/python scripts/results_table.py "$RUNS/${P}_invariant_d6" "$RUNS/${P}_generic_d1"
