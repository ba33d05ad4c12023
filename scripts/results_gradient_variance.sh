#!/usr/bin/env bash
# Barren-plateau study: variance over random initialisations of the gradient of <O> (averaged over 8 fixed random
# geometries) against depth, for the invariant and generic models of H2O on 4, 6 and 12 qubits (rep 2, 3, 6: one
# molecule, only the width changes). One JSON per width and model, named with its sample count; a rerun skips the
# finished ones (delete a file to recompute it). The 12-qubit models compile for minutes per depth (tensor strategy)
# and run ~1 s per initialisation and layer, hence their own, smaller defaults.
# The geometries stay in the reference frame like training data; EXTRA_FLAGS=--rotate-geometries (into another OUT)
# orients them at random, which lowers the generic model's variance by averaging over orientations.
# Usage: [WIDTHS="4 6 12"] [SAMPLES=200] [DEPTHS=1,2,4,8,16,32] [SAMPLES_12=20] [DEPTHS_12=1,2,4]
#        [GEOMETRIES=8] [SEED=0] [EXTRA_FLAGS=...] scripts/results_gradient_variance.sh [OUT]
set -euo pipefail
OUT=${1:-runs/results/gradient_variance}
WIDTHS=${WIDTHS:-4 6 12}
SAMPLES=${SAMPLES:-200}
DEPTHS=${DEPTHS:-1,2,4,8,16,32}
SAMPLES_12=${SAMPLES_12:-20}
DEPTHS_12=${DEPTHS_12:-1,2,4}
GEOMETRIES=${GEOMETRIES:-8}
SEED=${SEED:-0}
read -r -a EXTRA <<< "${EXTRA_FLAGS:-}"
QFF=${QFF:-.venv/bin/qff}
export XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
mkdir -p "$OUT"
once() {  # once NAME args...: qff model gradient-variance into NAME.json unless it exists
    local f=$OUT/$1.json; shift
    if [ -s "$f" ]; then echo "$f: already done"; return 0; fi
    local start=$SECONDS
    $QFF model gradient-variance --json "$@" > "$f.tmp" && mv "$f.tmp" "$f"
    echo "$f: $((SECONDS - start)) s"
}
for width in $WIDTHS; do
    case $width in
        4) rep=2 depths=$DEPTHS samples=$SAMPLES ;;
        6) rep=3 depths=$DEPTHS samples=$SAMPLES ;;
        12) rep=6 depths=$DEPTHS_12 samples=$SAMPLES_12 ;;
        *) echo "no H2O model of width $width here (4, 6 or 12)" >&2; exit 2 ;;
    esac
    for model in invariant generic; do
        once "h2o_q${width}_${model}_n${samples}" --molecule h2o --rep "$rep" --model "$model" --depths "$depths" \
            --samples "$samples" --geometries "$GEOMETRIES" --seed "$SEED" \
            ${EXTRA[@]+"${EXTRA[@]}"}
    done
done
.venv/bin/python scripts/results_gradient_variance_table.py "$OUT"
