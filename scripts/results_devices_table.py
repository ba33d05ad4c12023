"""The device table of docs/results.md from scripts/results_devices.sh's outputs. Usage: results_devices_table.py DIR"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROWS = [("exact", "exact simulator"), ("shots", "shots only (1e4, aer)"),
        ("torino", "FakeTorino noise, 1e4 shots (aer)"), ("torino_recal", "... + recalibration (20 geometries)"),
        ("torino_ibm0", "FakeTorino, no mitigation (ibm local, level 0)"),
        ("torino_trex", "FakeTorino, TREX + twirling (ibm local, level 1)"),
        ("torino_zne", "FakeTorino, ZNE (ibm local)"),
        ("torino_zne_recal", "FakeTorino, ZNE + recalibration (10)"),
        # scripts/results_devices_energies.sh: energies only (--energies-only), all N test geometries
        ("energies_torino_ibm0", "energies only: FakeTorino, no mitigation (ibm local, level 0)"),
        ("energies_torino_trex", "energies only: FakeTorino, TREX + twirling (ibm local, level 1)"),
        ("energies_torino_zne", "energies only: FakeTorino, ZNE (ibm local)"),
        ("energies_torino_zne_recal", "energies only: FakeTorino, ZNE + recalibration on energies (10)"),
        ("energies_torino_recal", "energies only: FakeTorino (aer) + recalibration on energies (20)")]


def main(out: Path) -> None:
    cost = {}
    for name in ("shots", "trex", "zne", "energies_shots", "energies_trex", "energies_zne"):
        p = out / f"cost_{name}.json"
        if p.exists():
            d = json.loads(p.read_text())
            cost[name] = d.get("qpu_seconds_total")
    t = json.loads((out / "transpiled.json").read_text())["transpiled"] if (out / "transpiled.json").exists() else {}
    base = None
    print("| mode | geometries | energy MAE (kcal/mol) | force MAE (kcal/mol/A) | force MAE rotated (kcal/mol/A) | "
          "deviation from exact E (kcal/mol) | QPU s on ibm_torino for the N test geometries and their rotated "
          "copies |")
    print("|---|---|---|---|---|---|---|")
    for key, label in ROWS:
        p = out / f"{key}.json"
        if not p.exists():
            continue
        d = json.loads(p.read_text())
        base = base or d["baselines"]["constant_energy_zero_forces"]
        rot = d.get("rotated", {}).get("forces_mae_kcal_mol_a")
        dev = d.get("deviation_from_exact", {}).get("energy_mae_kcal_mol", 0.0)
        c = cost.get({"torino": "shots", "torino_recal": "shots", "torino_ibm0": "shots", "torino_trex": "trex",
                      "torino_zne": "zne", "torino_zne_recal": "zne", "energies_torino_ibm0": "energies_shots",
                      "energies_torino_recal": "energies_shots", "energies_torino_trex": "energies_trex",
                      "energies_torino_zne": "energies_zne", "energies_torino_zne_recal": "energies_zne"}.get(key, key))
        f_test = d["test"]["forces_mae_kcal_mol_a"]
        rot_s, c_s = "-" if rot is None else f"{rot:.3f}", "-" if c is None else f"{c:,.0f}"
        f_s = "-" if f_test is None else f"{f_test:.3f}"
        print(f"| {label} | {d['run']['n_test_scored']} | {d['test']['energy_mae_kcal_mol']:.3f} | "
              f"{f_s} | {rot_s} | {dev:.3f} | {c_s} |")
    if base:
        print(f"\nconstant predictor: energy MAE {base['energy_mae_kcal_mol']:.3f} kcal/mol, force MAE "
              f"{base['forces_mae_kcal_mol_a']:.2f} kcal/mol/A")
    if t:
        print(f"circuit on FakeTorino: {t['two_qubit_gates']} two-qubit gates, depth {t['depth']}, estimated fidelity "
              f"{t['estimated_fidelity']:.3f}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
