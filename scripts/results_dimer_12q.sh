#!/usr/bin/env bash
# The 12-qubit whole-system water dimer of docs/results.md (issue 19): invariant rep=2 (4 qubits per water, the
# paper's setting) D=4, 54 parameters, on the dimer dataset of scripts/results_dimer.sh (generated here if missing),
# the same split and budget as the fragment model (15 000 steps, batch 64), then evaluated with its audit.
# One step is about 1 s CPU in the benchmark (per-geometry gradients, Kronecker-blocked encodings, unrolled layers:
# docs/performance.md) and 1.3-1.5 s in training here (2026-12-04, 2-core AMD EPYC, with validation and checkpoints),
# so the run takes 5-6 hours on one free core, after 6454 s of psi4 on 2 workers for the dataset. Rerun after an
# interruption: generation and training resume.
# Usage: [STEPS=15000] [WORKERS=2] scripts/results_dimer_12q.sh [DATA_DIR] [RUNS_DIR]
set -euo pipefail
DATA=${1:-data}
RUNS=${2:-runs/results}
QFF=${QFF:-.venv/bin/qff}
STEPS=${STEPS:-15000}
export XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
DS=$DATA/h2o_dimer_b3lyp_631gs_300k.zarr
STAGE=data scripts/results_dimer.sh "$DATA" "$RUNS"   # the dimer dataset (generated or resumed there)
R=$RUNS/dimer_invariant_r2_d4
mkdir -p "$RUNS"
RESUME=(); [ -f "$R/run.json" ] && RESUME=(--resume)
$QFF train --dataset "$DS" --test-size 150 --val-size 50 --batch-size 64 --force-weight 10 --learning-rate 1e-2 \
    --final-learning-rate 1e-4 --eval-every 500 --checkpoint-every 100 --seed 0 --no-prefect --steps "$STEPS" \
    --model invariant --rep 2 --depth 4 "${RESUME[@]}" --run-dir "$R" >> "$R.log" 2>&1
if [ ! -s "$R/evaluate.out" ]; then
    $QFF evaluate "$R" --no-prefect --json > "$R/evaluate.tmp" && mv "$R/evaluate.tmp" "$R/evaluate.out"
fi
# The dimer table with whichever of scripts/results_dimer.sh's runs exist here.
TABLE=("$R")
for r in dimer_fragment_d6_p2 dimer_invariant_r1_d9 dimer_generic_r1_d1; do
    [ -s "$RUNS/$r/evaluation.json" ] && TABLE+=("$RUNS/$r")
done
.venv/bin/python scripts/results_table.py "${TABLE[@]}"
