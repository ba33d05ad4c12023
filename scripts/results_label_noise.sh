#!/usr/bin/env bash
# Robustness to label noise: H2O (psi4 B3LYP/6-31G*, 500 K, the dataset of scripts/results_h2o.sh) trained on
# training labels with Gaussian noise (energy sigma L kcal/mol, every force component sigma L kcal/mol/A) and scored
# on the clean validation and test labels; invariant D=6 vs generic D=1 (34 parameters each), the training settings
# of scripts/results_h2o.sh, KRR (fitted on the same noisy training labels) with the invariant runs. The noise seed
# follows --seed 0, so every level adds the same pattern at a different amplitude (smoother curves).
# Usage: [STEPS=10000] [LEVELS="0 0.1 0.5 1.0"] scripts/results_label_noise.sh [DATA_DIR] [RUNS_DIR]
# Rerunning it after an interruption resumes: training continues, finished evaluations are kept.
set -euo pipefail
DATA=${1:-data}
RUNS=${2:-runs/results/label_noise}
QFF=${QFF:-.venv/bin/qff}
STEPS=${STEPS:-10000}
LEVELS=${LEVELS:-0 0.1 0.5 1.0}  # kcal/mol (energies) and kcal/mol/A (force components)
KCAL_MOL_EV=0.0433641  # 1 kcal/mol in eV
export XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
DS=$DATA/h2o_b3lyp_631gs_500k.zarr
if [ ! -f "$DS/zarr.json" ]; then
    echo "no dataset $DS: make it first with scripts/results_h2o.sh (TEMPERATURE=500)" >&2
    exit 2
fi
mkdir -p "$RUNS"

# The split and training settings of scripts/results_h2o.sh: 300 test, 100 validation, 1000 training geometries.
COMMON=(--dataset "$DS" --test-size 300 --val-size 100 --n-train 1000 --batch-size 128 --force-weight 10
        --learning-rate 1e-2 --final-learning-rate 1e-4 --eval-every 1000 --checkpoint-every 1000 --seed 0
        --no-prefect --steps "$STEPS")
train() {  # RUN_DIR FLAGS...: trains (or resumes) one run, then evaluates it once on the clean test set
    local R=$1; shift
    local RESUME=(); [ -f "$R/run.json" ] && RESUME=(--resume)
    $QFF train "${COMMON[@]}" "${RESUME[@]}" "$@" --run-dir "$R" >> "$R.log" 2>&1
    if [ ! -s "$R/evaluate.out" ]; then
        local KRR=(); case $R in *_invariant_*) KRR=(--krr) ;; esac
        $QFF evaluate "$R" --no-prefect --json "${KRR[@]}" > "$R/evaluate.tmp"
        mv "$R/evaluate.tmp" "$R/evaluate.out"
    fi
}
for L in $LEVELS; do
    EV=$(awk -v l="$L" -v c="$KCAL_MOL_EV" 'BEGIN { printf "%.10g", l * c }')
    NOISE=(--label-noise-energy-ev "$EV" --label-noise-forces-ev-per-a "$EV")
    P=$RUNS/h2o_500k_noise${L}
    # Two single-threaded trainings at a time (2 cores); either failing stops the script after both ended.
    train "${P}_invariant_d6" --model invariant --depth 6 "${NOISE[@]}" & A=$!
    train "${P}_generic_d1" --model generic --depth 1 "${NOISE[@]}" & B=$!
    FAILED=0; wait $A || FAILED=1; wait $B || FAILED=1
    [ $FAILED = 0 ] || { echo "a training at noise $L failed: see ${P}_*.log" >&2; exit 1; }
done
.venv/bin/python scripts/results_label_noise_table.py "$RUNS"
