#!/usr/bin/env bash
# "Training under noise, honestly sized" of docs/results.md: LiH (psi4 B3LYP/6-31G* bond scan), invariant D=2,
# 100 Adam steps on FakeTorino noise with shots (aer, the used qubits with the device noise) against exact
# training at the same budget; both scored on the exact simulator. Prints what qff cost says first, and what a full
# H2O training would cost on ibm_torino. Rerun after an interruption: training resumes, finished steps are kept.
# Usage: scripts/results_noisy_training.sh [DATA_DIR] [RUNS_DIR]
set -euo pipefail
DATA=${1:-data}
RUNS=${2:-runs/results/noisy_training}
QFF=${QFF:-.venv/bin/qff}
STEPS=${STEPS:-100}
export XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
mkdir -p "$RUNS"
DS=$DATA/lih_b3lyp_631gs_scan.zarr
$QFF dataset generate --molecule lih --engine psi4 --method b3lyp --basis '6-31g*' --samples 150 \
    --sampler bond_scan --seed 7 --chunk-size 15 --out "$DS" --no-prefect --workers 1
COMMON=(--dataset "$DS" --model invariant --depth 2 --steps "$STEPS" --batch-size 8 --test-size 30 --val-size 15
        --force-weight 10 --learning-rate 2e-2 --final-learning-rate 2e-3 --eval-every 25 --checkpoint-every 5
        --seed 0 --no-prefect)
NOISY=(--executor aer --noise fake_torino --shots 1000 --shot-seed 1)
cat > "$RUNS/cost_lih.yaml" <<YAML
train: {dataset: $DS, model: {depth: 2}, steps: $STEPS, batch_size: 8, test_size: 30, val_size: 15}
executor: {name: ibm, backend: ibm_torino, shots: 1000}
YAML
$QFF cost --config "$RUNS/cost_lih.yaml" | tee "$RUNS/cost_lih.txt"
cat > "$RUNS/cost_h2o.yaml" <<YAML
train: {dataset: $DATA/h2o_b3lyp_631gs_500k.zarr, model: {depth: 6}, steps: 25000, batch_size: 128, test_size: 300,
        val_size: 100, n_train: 1000}
executor: {name: ibm, backend: ibm_torino, shots: 1000}
YAML
$QFF cost --config "$RUNS/cost_h2o.yaml" | tee "$RUNS/cost_h2o.txt"
train() {  # train RUN_DIR flags...: resumes an interrupted run
    local R=$1; shift; local RESUME=(); [ -f "$R/run.json" ] && RESUME=(--resume)
    $QFF train "${COMMON[@]}" "${RESUME[@]}" --run-dir "$R" "$@" >> "$R.log" 2>&1
}
train "$RUNS/lih_exact"
train "$RUNS/lih_fake_torino" "${NOISY[@]}"
for r in lih_exact lih_fake_torino; do
    [ -s "$RUNS/$r/evaluate.out" ] || { $QFF evaluate "$RUNS/$r" --no-prefect --no-plots --json > "$RUNS/$r/evaluate.tmp" \
        && mv "$RUNS/$r/evaluate.tmp" "$RUNS/$r/evaluate.out"; }
done
.venv/bin/python scripts/results_table.py "$RUNS/lih_exact" "$RUNS/lih_fake_torino"
