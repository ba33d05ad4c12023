#!/usr/bin/env bash
# The LiH rows of "On (simulated) devices" in docs/results.md: the LiH invariant D=6 model of the LiH table
# (trained here if missing), evaluated on its 30 test geometries and their rotated copies by
# scripts/results_devices.sh (exact, shots, FakeTorino noise, recalibration; TREX and ZNE on 10 geometries).
# Rerun after an interruption: finished rows are kept.
# Usage: [WORKERS=0] scripts/results_devices_lih.sh [DATA_DIR] [RUNS_DIR]
set -euo pipefail
DATA=${1:-data}
RUNS=${2:-runs/results}
QFF=${QFF:-.venv/bin/qff}
export XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
R=$RUNS/lih_invariant_d6
RESUME=(); [ -f "$R/run.json" ] && RESUME=(--resume)
$QFF train --dataset "$DATA/lih_b3lyp_631gs_scan.zarr" --model invariant --depth 6 --steps 3000 --batch-size 64 \
    --test-size 30 --val-size 15 --force-weight 10 --eval-every 250 --checkpoint-every 250 --seed 0 --no-prefect \
    "${RESUME[@]}" --run-dir "$R" >> "$R.log" 2>&1
N=30 N_MITIGATED=${N_MITIGATED:-10} MODEL="--molecule lih --depth 6" WORKERS=${WORKERS:-0} \
    scripts/results_devices.sh "$R" "$RUNS/devices_lih"
