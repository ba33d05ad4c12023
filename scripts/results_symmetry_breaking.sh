#!/usr/bin/env bash
# Symmetry breaking, measured: the invariant model with RZ(eps) on every qubit after each block, the angles frozen at
# their initial values or trained, at several initial scales (eps = 0 is the exact model with idle gates), against
# the model without them; equal data and budget. H2O: the 500 K dataset and training settings of
# scripts/results_h2o.sh (D=6, STEPS, default 10000); LiH: the bond scan and settings of docs/results.md (D=6, 3000
# steps). Each run is scored by qff evaluate (test and rotated sets, the audit's relative changes at the trained
# parameters). Rerun after an interruption: training resumes, finished evaluations are kept.
# Usage: [STEPS=10000] scripts/results_symmetry_breaking.sh [DATA_DIR] [RUNS_DIR]
set -euo pipefail
DATA=${1:-data}
RUNS=${2:-runs/results/symmetry_breaking}
QFF=${QFF:-.venv/bin/qff}
STEPS=${STEPS:-10000}
export XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
mkdir -p "$RUNS"
$QFF dataset generate --molecule lih --engine psi4 --method b3lyp --basis '6-31g*' --samples 150 \
    --sampler bond_scan --seed 7 --chunk-size 15 --out "$DATA/lih_b3lyp_631gs_scan.zarr" --no-prefect --workers 1
H2O=(--dataset "$DATA/h2o_b3lyp_631gs_500k.zarr" --depth 6 --test-size 300 --val-size 100 --n-train 1000
     --batch-size 128 --learning-rate 1e-2 --final-learning-rate 1e-4 --eval-every 1000 --checkpoint-every 1000
     --steps "$STEPS")
LIH=(--dataset "$DATA/lih_b3lyp_631gs_scan.zarr" --depth 6 --test-size 30 --val-size 15 --batch-size 64
     --learning-rate 1e-2 --final-learning-rate 1e-4 --eval-every 250 --checkpoint-every 250 --steps 3000)
train() {  # RUN_DIR FLAGS...: trains (or resumes) one run, then evaluates it once
    local R=$1; shift
    local RESUME=(); [ -f "$R/run.json" ] && RESUME=(--resume)
    $QFF train --model invariant --force-weight 10 --seed 0 --no-prefect "${RESUME[@]}" "$@" --run-dir "$R" \
        >> "$R.log" 2>&1
    if [ ! -s "$R/evaluate.out" ]; then
        $QFF evaluate "$R" --no-prefect --no-plots --json > "$R/evaluate.tmp"
        mv "$R/evaluate.tmp" "$R/evaluate.out"
    fi
}
SETTINGS=("off" "frozen 0" "frozen 0.01" "frozen 0.1" "trainable 0.001" "trainable 0.1")
for M in lih h2o; do
    for S in "${SETTINGS[@]}"; do
        read -r KIND EPS <<< "$S"
        FLAGS=(); NAME=${M}_off
        if [ "$KIND" != off ]; then FLAGS=(--symmetry-breaking "$KIND" --symmetry-breaking-eps "$EPS"); NAME=${M}_${KIND}_$EPS; fi
        if [ $M = lih ]; then train "$RUNS/$NAME" "${LIH[@]}" "${FLAGS[@]}"; else train "$RUNS/$NAME" "${H2O[@]}" "${FLAGS[@]}"; fi
    done
done
.venv/bin/python scripts/results_symmetry_breaking_table.py "$RUNS"
