# Sourced by scripts/results_devices*.sh: what their rows would cost on ibm_torino, from qff cost.
# price_rows PREFIX SETS [EVALUATE_FIELDS]: writes $OUT/cost_<PREFIX>{shots,trex,zne}.yaml and .json (kept if present)
# for $RUN's first $N test geometries (needs OUT, RUN, N, ZNE, QFF).
price_rows() {
    local prefix=$1 sets=$2 fields=${3:-} mode name level extra
    for mode in shots:0 trex:1 zne:0; do
        name=${mode%%:*}; level=${mode##*:}
        extra=""; [ "$name" = zne ] && extra=", mitigation: $ZNE"
        printf 'evaluate: {run_dir: %s, sets: %s, max_test: %s%s}\nexecutor: {name: ibm, backend: ibm_torino, shots: 10000, resilience_level: %s%s}\n' \
            "$RUN" "$sets" "$N" "$fields" "$level" "$extra" > "$OUT/cost_$prefix$name.yaml"
        [ -s "$OUT/cost_$prefix$name.json" ] || $QFF cost --config "$OUT/cost_$prefix$name.yaml" --json > "$OUT/cost_$prefix$name.json"
    done
}
