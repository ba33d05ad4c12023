#!/usr/bin/env bash
# The energies-only rows of "On (simulated) devices" in docs/results.md: qiskit-ibm-runtime's client-side mitigation
# (local testing mode on fake_torino) on all N test geometries, energies only (--energies-only: one parameter binding
# per geometry instead of 157 with forces for H2O D=6, so N=50 costs what 1/3 of a geometry with forces does).
# Rows: level 0, TREX (level 1), ZNE, ZNE + recalibration fitted on energies, and aer FakeTorino + energy-only
# recalibration. Rerun after an interruption: finished rows are kept.
# Usage: [N=50] [WORKERS=0] scripts/results_devices_energies.sh [RUN] [OUT]
set -euo pipefail
RUN=${1:-runs/results/h2o_500k_invariant_d6}
OUT=${2:-runs/results/devices50}
N=${N:-50}
QFF=${QFF:-.venv/bin/qff}
export XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
mkdir -p "$OUT"
once() {  # once NAME args...: qff evaluate --energies-only into NAME.json unless it exists
    local f=$OUT/$1.json; shift
    [ -s "$f" ] && return 0
    $QFF evaluate "$RUN" --no-prefect --no-plots --json --shot-seed 1 --workers "${WORKERS:-0}" --energies-only \
        --max-test "$N" --sets test "$@" > "$f.tmp" && mv "$f.tmp" "$f"
}
printf 'executor: {rows_per_pub: 64}\n' > "$OUT/ibm_local.yaml"   # a few GB per client-side job (see results_devices.sh)
IBM=(--config "$OUT/ibm_local.yaml" --executor ibm --ibm-backend fake_torino --shots 10000)
ZNE='{resilience: {zne_mitigation: true, zne: {noise_factors: [1, 3, 5]}}}'
once energies_torino_ibm0 "${IBM[@]}" --resilience-level 0
once energies_torino_trex "${IBM[@]}" --resilience-level 1
once energies_torino_zne "${IBM[@]}" --mitigation "$ZNE"
once energies_torino_zne_recal "${IBM[@]}" --mitigation "$ZNE" --recalibrate 10
once energies_torino_recal --executor aer --noise fake_torino --shots 10000 --recalibrate 20
# What the energies-only rows would cost on ibm_torino (N test geometries, no rotated copies).
. "$(dirname "$0")/_devices_cost.sh"
price_rows energies_ "[test]" ", energies_only: true"
.venv/bin/python scripts/results_devices_table.py "$OUT"
