"""Markdown tables of scripts/results_use.sh's outputs (vibrations, MD, active learning).

Usage: results_use_table.py DIR"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() and path.stat().st_size else None


def main(out: Path) -> None:
    vib = load(out / "vibrations.json")
    if vib:
        ref = vib["reference"]
        print("| mode | model (cm-1) | psi4 B3LYP/6-31G* (cm-1) | difference |\n|---|---|---|---|")
        for k, w in enumerate(vib["wavenumbers_cm1"]):
            diff = 100 * ref["relative_difference"][k]
            print(f"| {k + 1} | {w:.1f} | {ref['wavenumbers_cm1'][k]:.1f} | {diff:+.2f} % |")
        print()
    for name in ("nve_1ps", "nve_1ps_dt0.25", "nve_10ps", "langevin_10ps"):
        md = load(out / f"{name}.json")
        if md:
            print(f"- {name}: {md['steps']} steps of {md['timestep_fs']} fs, drift {md['energy_drift_ev']:+.2e} eV "
                  f"(fitted {md.get('energy_drift_fit_ev', float('nan')):+.2e}, fluctuation "
                  f"{md.get('energy_fluctuation_ev', float('nan')):.2e}), max "
                  f"|E - E0| {md['max_energy_deviation_ev']:.2e} eV, mean T {md['mean_temperature_k']:.1f} K "
                  f"(target {md['target_temperature_k']}), {md['wall_time_s']:.0f} s, {md['ns_per_day']:.2f} ns/day")
    print()
    arms = {d.name[3:]: load(d / "summary.json") for d in sorted(out.glob("al_*"))}
    if any(arms.values()):
        print("| round | selection | psi4 calls (total) | force MAE on MD test (kcal/mol/A) | energy MAE (kcal/mol) |"
              "\n|---|---|---|---|---|")
        for arm, s in arms.items():
            if not s:
                continue
            t = s["initial_test"]
            print(f"| 0 | {arm} | 0 | {t['forces_mae_kcal_mol_a']:.3f} | {t['energy_mae_kcal_mol']:.3f} |")
            calls = 0
            for r in s["rounds"]:
                calls += r["reference_calls"]
                a = r["test_after"]
                print(f"| {r['round']} | {arm} | {calls} | {a['forces_mae_kcal_mol_a']:.3f} | "
                      f"{a['energy_mae_kcal_mol']:.3f} |")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
