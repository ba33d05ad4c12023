#!/usr/bin/env bash
# The "On (simulated) devices" numbers of docs/results.md: the H2O 500 K invariant model (scripts/results_h2o.sh)
# evaluated exactly, with shots, with FakeTorino's noise (aer, the used qubits with the device noise), with readout
# recalibration, and with qiskit-ibm-runtime's client-side mitigation (TREX, ZNE) in local testing mode on
# fake_torino; the ibm_torino QPU seconds of each from qff cost. Rerun after an interruption: finished rows are kept.
# Usage: [N=50] [N_MITIGATED=3] [MITIGATED_SETS="test"] [SHOTS_ROW=1] [WORKERS=2] [MODEL="--molecule h2o --depth 6"]
#        scripts/results_devices.sh [RUN] [OUT]
# The force columns of the mitigated rows on all 50 geometries and their rotated copies:
#        N_MITIGATED=50 MITIGATED_SETS="test rotated" scripts/results_devices.sh RUN runs/results/devices_forces50
# (days of CPU here; a killed row resumes from its finished jobs, RUN/evaluation_chunks/).
# (MODEL: the run's model, for the transpiled gate counts; LiH: scripts/results_devices_lih.sh)
# Cost here (2 cores): aer rows about 25 s CPU per geometry; the ibm local rows about 9 min per geometry (TREX) and more
# (ZNE), because the client-side Estimator simulates every twirling randomization: hence fewer mitigated geometries.
# Memory: an aer worker with device noise and 1e4 shots holds about 5-9 GB at 4096 rows per PUB; WORKERS=1 on 24 GB
# when anything else runs.
set -euo pipefail
RUN=${1:-runs/results/h2o_500k_invariant_d6}
OUT=${2:-runs/results/devices}
N=${N:-50}
NM=${N_MITIGATED:-3}
read -r -a MSETS <<< "${MITIGATED_SETS:-test}"
QFF=${QFF:-.venv/bin/qff}
export XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
mkdir -p "$OUT"
once() {  # once NAME args...: qff evaluate into NAME.json unless it exists
    local f=$OUT/$1.json; shift
    [ -s "$f" ] && return 0
    $QFF evaluate "$RUN" --no-prefect --no-plots --json --shot-seed 1 --workers "${WORKERS:-2}" "$@" > "$f.tmp" \
        && mv "$f.tmp" "$f"
}
# The client-side Estimator holds every twirled instance of a job: 471 rows (3 geometries) in one job took 24 GB and
# was killed; 64 rows per job keeps it to a few GB (ibm local rows only; the aer rows keep 4096).
printf 'executor: {rows_per_pub: 64}\n' > "$OUT/ibm_local.yaml"
IBM_LOCAL=(--config "$OUT/ibm_local.yaml")
# The aer rows' PUB size: 4096 rows (the default, as the H2O ring rows ran) hold up to 15 GB in one process with
# device noise; AER_ROWS_PER_PUB=512 keeps it to about 1 GB (another shot-noise draw of the same distribution).
printf 'executor: {rows_per_pub: %s}\n' "${AER_ROWS_PER_PUB:-4096}" > "$OUT/aer_rows.yaml"
AER=(--config "$OUT/aer_rows.yaml")
ZNE='{resilience: {zne_mitigation: true, zne: {noise_factors: [1, 3, 5]}}}'  # default extrapolators: exponential, then linear
once exact --max-test "$N" --sets test rotated
[ "${SHOTS_ROW:-1}" = 1 ] && once shots --max-test "$N" --sets test rotated --executor aer --shots 10000
once torino --max-test "$N" --sets test rotated "${AER[@]}" --executor aer --noise fake_torino --shots 10000
once torino_recal --max-test "$N" --sets test rotated "${AER[@]}" --executor aer --noise fake_torino --shots 10000 --recalibrate 20
if [ "$NM" -gt 0 ]; then  # N_MITIGATED=0 skips the ibm local rows
    # The unmitigated baseline of the mitigated rows: the same geometries, the same local testing-mode path.
    once torino_ibm0 --max-test "$NM" --sets "${MSETS[@]}" "${IBM_LOCAL[@]}" --executor ibm --ibm-backend fake_torino --shots 10000 --resilience-level 0
    once torino_trex --max-test "$NM" --sets "${MSETS[@]}" "${IBM_LOCAL[@]}" --executor ibm --ibm-backend fake_torino --shots 10000 --resilience-level 1
    once torino_zne --max-test "$NM" --sets "${MSETS[@]}" "${IBM_LOCAL[@]}" --executor ibm --ibm-backend fake_torino --shots 10000 --mitigation "$ZNE"
    once torino_zne_recal --max-test "$NM" --sets "${MSETS[@]}" "${IBM_LOCAL[@]}" --executor ibm --ibm-backend fake_torino --shots 10000 \
        --mitigation "$ZNE" --recalibrate 10
fi
# What each would cost on ibm_torino (the same settings with a device name).
. "$(dirname "$0")/_devices_cost.sh"
price_rows "" "[test, rotated]"
# shellcheck disable=SC2086
$QFF model show ${MODEL:---molecule h2o --depth 6} --backend fake_torino --optimization-level 1 --json > "$OUT/transpiled.json"
.venv/bin/python scripts/results_devices_table.py "$OUT"
