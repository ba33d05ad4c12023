#!/usr/bin/env bash
# Reproduces the NH3 and CH4 numbers of docs/results.md: psi4 B3LYP/6-31G* thermal normal modes at 500 K,
# 600 geometries each (150 test, 50 validation, 400 training); invariant vs generic at equal parameter count
# (NH3: invariant D=9, 49 parameters, vs generic D=1, 50; CH4: invariant D=12, 64, vs generic D=1, 66), equal
# data and step budget; NH3 (not planar) also with --symmetrize-inversion. KRR and the constant predictor with
# the invariant runs.
# Usage: [STAGE=data|all] [WORKERS=1] [STEPS=10000] scripts/results_nh3_ch4.sh [DATA_DIR] [RUNS_DIR]
# Rerunning it after an interruption resumes: generation and training continue, finished evaluations are kept.
set -euo pipefail
DATA=${1:-data}
RUNS=${2:-runs/results}
QFF=${QFF:-.venv/bin/qff}
WORKERS=${WORKERS:-1}
STEPS=${STEPS:-10000}
export XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
mkdir -p "$DATA" "$RUNS"

for M in nh3 ch4; do
    $QFF dataset generate --molecule $M --engine psi4 --method b3lyp --basis '6-31g*' --samples 600 \
        --temperature-k 500 --seed 500 --chunk-size 20 --out "$DATA/${M}_b3lyp_631gs_500k.zarr" \
        --no-prefect --workers "$WORKERS"
done
[ "${STAGE:-all}" = data ] && exit 0

COMMON=(--test-size 150 --val-size 50 --batch-size 64 --force-weight 10 --learning-rate 1e-2 --final-learning-rate 1e-4
        --eval-every 500 --checkpoint-every 500 --seed 0 --no-prefect --steps "$STEPS")
train() {  # RUN_NAME MOLECULE FLAGS...: trains (or resumes) one run, then evaluates it once
    local R=$RUNS/$1 M=$2; shift 2
    local RESUME=(); [ -f "$R/run.json" ] && RESUME=(--resume)
    $QFF train "${COMMON[@]}" "${RESUME[@]}" --dataset "$DATA/${M}_b3lyp_631gs_500k.zarr" "$@" --run-dir "$R" >> "$R.log" 2>&1
    if [ ! -s "$R/evaluate.out" ]; then
        $QFF evaluate "$R" --no-prefect --json > "$R/evaluate.tmp"
        mv "$R/evaluate.tmp" "$R/evaluate.out"
    fi
}
train nh3_invariant_d9 nh3 --model invariant --depth 9
train nh3_invariant_d9_symm nh3 --model invariant --depth 9 --symmetrize-inversion
train nh3_generic_d1 nh3 --model generic --depth 1
train ch4_invariant_d12 ch4 --model invariant --depth 12
train ch4_generic_d1 ch4 --model generic --depth 1
for R in nh3_invariant_d9 ch4_invariant_d12; do  # KRR once per molecule (same split)
    [ -s "$RUNS/$R/evaluate_krr.out" ] || $QFF evaluate "$RUNS/$R" --no-prefect --no-plots --krr --json \
        > "$RUNS/$R/evaluate_krr.out"
done
.venv/bin/python scripts/results_table.py "$RUNS"/nh3_invariant_d9 "$RUNS"/nh3_invariant_d9_symm "$RUNS"/nh3_generic_d1
.venv/bin/python scripts/results_table.py "$RUNS"/ch4_invariant_d12 "$RUNS"/ch4_generic_d1
