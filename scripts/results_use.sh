#!/usr/bin/env bash
# The "Using the learned force field" numbers of docs/results.md, from the H2O 500 K invariant model of
# scripts/results_h2o.sh: harmonic wavenumbers against psi4's, 1 ps NVE drift, 10 ps Langevin at 300 K, and
# active learning against random selection, scored on psi4-labelled frames of a 1000 K MD of that model.
# Usage: scripts/results_use.sh [RUNS_DIR] [DATA_DIR]   (rerun after an interruption: finished steps are kept)
set -euo pipefail
RUNS=${1:-runs/results}
DATA=${2:-data}
QFF=${QFF:-.venv/bin/qff}
PY=${PY:-.venv/bin/python}
export XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
MODEL=$RUNS/h2o_500k_invariant_d6
OUT=$RUNS/use
mkdir -p "$OUT"
once() {  # once FILE command...: run the command into FILE unless FILE exists
    local f=$1; shift
    [ -s "$f" ] && return 0
    "$@" > "$f.tmp" && mv "$f.tmp" "$f"
}

once "$OUT/vibrations.json" $QFF vibrations "$MODEL" --json
once "$OUT/nve_1ps.json" $QFF md "$MODEL" --ensemble nve --timestep-fs 0.5 --steps 2000 --temperature-k 300 \
    --out "$OUT/nve_1ps.extxyz" --quiet --json
once "$OUT/nve_1ps_dt0.25.json" $QFF md "$MODEL" --ensemble nve --timestep-fs 0.25 --steps 4000 --temperature-k 300 \
    --out "$OUT/nve_1ps_dt0.25.extxyz" --quiet --json
once "$OUT/nve_10ps.json" $QFF md "$MODEL" --ensemble nve --timestep-fs 0.5 --steps 20000 --temperature-k 300 \
    --write-every 10 --out "$OUT/nve_10ps.extxyz" --quiet --json
once "$OUT/langevin_10ps.json" $QFF md "$MODEL" --ensemble langevin --timestep-fs 0.5 --steps 20000 \
    --temperature-k 300 --friction-per-fs 0.01 --write-every 20 --out "$OUT/langevin_10ps.extxyz" --quiet --json

# The MD test set: 1000 K Langevin trajectories of the model, labelled by psi4. At 1000 K the 500 K model comes
# apart within half a picosecond (qff md stops when a distance doubles), so eight seeds each give the frames
# before that; every 60th frame (30 fs apart), the first 100 of them.
if [ ! -s "$OUT/md_1000k.extxyz" ]; then
    for seed in 1 2 3 4 5 6 7 8; do
        $QFF md "$MODEL" --ensemble langevin --timestep-fs 0.5 --steps 4000 --temperature-k 1000 --seed $seed \
            --out "$OUT/md_1000k_s$seed.extxyz" --quiet --json > "$OUT/md_1000k_s$seed.json" 2> "$OUT/md_1000k_s$seed.err" \
            || true
    done
    cat "$OUT"/md_1000k_s?.extxyz > "$OUT/md_1000k.extxyz.tmp" && mv "$OUT/md_1000k.extxyz.tmp" "$OUT/md_1000k.extxyz"
fi
$QFF dataset generate --molecule h2o --engine psi4 --method b3lyp --basis '6-31g*' --sampler file \
    --geometries "$OUT/md_1000k.extxyz" --every 60 --samples 100 --chunk-size 5 --out "$DATA/h2o_md1000k_test.zarr" \
    --catalog "$OUT/catalog" --no-prefect --workers 2 || [ $? -eq 3 ]  # 3: some samples failed (SCF), the rest count

# Two arms on copies of the model and its dataset (active learning appends to the dataset): committee and random.
# RETRAIN_LR: initial learning rate of each round's warm-start retraining (the 500 K model ended at 1e-4).
LR=${RETRAIN_LR:-1e-4}
for arm in committee random; do
    A=$OUT/al_${arm}_lr$LR
    if [ ! -f "$A/run/run.json" ]; then
        rm -rf "$A" && mkdir -p "$A"
        cp -r "$(readlink -f "$DATA/h2o_b3lyp_631gs_500k.zarr")" "$A/h2o.zarr"
        cp -r "$MODEL" "$A/run.partial"
        $PY - "$A" <<'EOF'
import json, sys
from pathlib import Path
arm = Path(sys.argv[1]).resolve()
info = json.loads((arm / "run.partial/run.json").read_text())
info["dataset"].update(path="../h2o.zarr", absolute=str(arm / "h2o.zarr"))
info["config"]["dataset"] = "../h2o.zarr"
(arm / "run.partial/run.json").write_text(json.dumps(info, indent=2))
EOF
        mv "$A/run.partial" "$A/run"
    fi
    once "$A/summary.json" $QFF active-learn --no-prefect --run "$A/run" --rounds 3 --per-round 20 --committee 3 \
        --committee-steps 6000 --retrain-steps 3000 --retrain-learning-rate "$LR" --selection "$arm" --temperature-k 1000 --md-steps 4000 \
        --sample-every 5 --test-set "$DATA/h2o_md1000k_test.zarr" --chunk-size 5 --json
done
# The control for retraining itself: the same warm start, steps and learning rate on the 500 K data alone (no new
# frames), scored on the same MD test set. Active learning must beat this, not only the round-0 model.
C=$OUT/retrain_control_lr$LR
if [ ! -s "$C.json" ]; then
    RESUME=(); [ -f "$C/run.json" ] && RESUME=(--resume)
    $QFF train --dataset "$DATA/h2o_b3lyp_631gs_500k.zarr" --init-from "$MODEL" --steps 3000 --learning-rate "$LR" \
        --final-learning-rate "$LR" --run-dir "$C" --no-prefect "${RESUME[@]}" > "$C.log" 2>&1
    $PY - "$C" "$DATA/h2o_md1000k_test.zarr" > "$C.json.tmp" <<'EOF2'
import json, sys
import numpy as np
from qff_core.execution.exact import compile_exact
from qff_core.metrics import error_metrics
from qff_core.run import open_run
from qff_core.store.dataset import DONE, Dataset
run, ds = open_run(sys.argv[1]), Dataset.open(sys.argv[2])
x, e, f = ds.samples(np.flatnonzero(ds.status() == DONE))
pe, pf = compile_exact(run.model).evaluate(run.final_parameters()[0], x)
print(json.dumps({"run": sys.argv[1], "test_set": sys.argv[2], "test": error_metrics(pe, e, pf, f)}, indent=2))
EOF2
    mv "$C.json.tmp" "$C.json"
fi
$PY scripts/results_use_table.py "$OUT"
