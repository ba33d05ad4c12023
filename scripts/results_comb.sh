#!/usr/bin/env bash
# The heavy-hex "comb" pattern of docs/results.md (issue 18): H2O invariant rep=2 with exchanges on (H1,H2) in
# copy 0 and on each H's two copies (a path of 4 qubits, so no routing SWAPs), trained exactly as the ring model
# of scripts/results_h2o.sh (500 K data, same split, 25 000 steps), at D=6 (28 parameters) and D=8 (36), then
# evaluated (rotated, permuted sets) and transpiled for FakeTorino, FakeFez and FakeSherbrooke at level 3; the D=8
# model then runs on FakeTorino noise with and without recalibration (about 1 h CPU).
# Rerun after an interruption: training resumes, finished evaluations are kept. ~7 min per training on a free core.
# Usage: scripts/results_comb.sh [DATA_DIR] [RUNS_DIR]
set -euo pipefail
DATA=${1:-data}
RUNS=${2:-runs/results}
QFF=${QFF:-.venv/bin/qff}
export XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
DS=$DATA/h2o_b3lyp_631gs_500k.zarr
COMMON=(--dataset "$DS" --test-size 300 --val-size 100 --n-train 1000 --batch-size 128 --force-weight 10
        --learning-rate 1e-2 --final-learning-rate 1e-4 --eval-every 1000 --checkpoint-every 1000 --no-prefect
        --steps 25000 --seed 0 --model invariant --pattern comb)
mkdir -p "$RUNS"
for D in 6 8; do
    R=$RUNS/h2o_500k_comb_d$D
    RESUME=(); [ -f "$R/run.json" ] && RESUME=(--resume)
    $QFF train "${COMMON[@]}" --depth "$D" "${RESUME[@]}" --run-dir "$R" >> "$R.log" 2>&1
    if [ ! -s "$R/evaluate.out" ]; then
        $QFF evaluate "$R" --no-prefect --no-plots --json > "$R/evaluate.tmp" && mv "$R/evaluate.tmp" "$R/evaluate.out"
    fi
    for B in fake_torino fake_fez fake_sherbrooke; do
        [ -s "$R/transpiled_$B.json" ] && continue
        $QFF model show --molecule h2o --pattern comb --depth "$D" --backend "$B" --optimization-level 3 --json \
            > "$R/transpiled_$B.tmp" && mv "$R/transpiled_$B.tmp" "$R/transpiled_$B.json"
    done
done
.venv/bin/python scripts/results_table.py "$RUNS/h2o_500k_invariant_d6" "$RUNS/h2o_500k_comb_d6" "$RUNS/h2o_500k_comb_d8"
# The D=8 comb's harmonic wavenumbers and 1 ps NVE (the "Using the learned force field" protocol).
U=$RUNS/use_comb_d8; mkdir -p "$U"
[ -s "$U/vibrations.json" ] || $QFF vibrations "$RUNS/h2o_500k_comb_d8" --json > "$U/vibrations.json"
[ -s "$U/nve_1ps.json" ] || $QFF md "$RUNS/h2o_500k_comb_d8" --ensemble nve --timestep-fs 0.5 --steps 2000 \
    --temperature-k 300 --out "$U/nve_1ps.extxyz" --quiet --json > "$U/nve_1ps.json"
# The D=8 comb on FakeTorino (the devices table's rows, without the shots-only and ibm local ones).
N=50 N_MITIGATED=0 SHOTS_ROW=0 WORKERS=0 AER_ROWS_PER_PUB=512 MODEL="--molecule h2o --pattern comb --depth 8" \
    scripts/results_devices.sh "$RUNS/h2o_500k_comb_d8" "$RUNS/devices50_comb_d8"
