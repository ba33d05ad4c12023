"""Markdown table of evaluated runs (reads RUN/evaluation.json): `python scripts/results_table.py RUN [RUN ...]`.

Energies in kcal/mol, forces in kcal/mol/A; "rot" = the randomly rotated test set. The last
rows are the baselines of the first run's test set (constant energy + zero forces, and KRR
when it was evaluated with --krr).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

COLUMNS = ("model", "params", "train", "steps", "E MAE", "E MAE rot", "F MAE", "F MAE rot", "F err norm",
           "F err norm rot", "max rel. change (rot/trans/perm/inv)")


def _number(x: float) -> str:
    """Three decimals, or two significant digits below 0.01 (KRR's errors would print as 0.000)."""
    return f"{x:.3f}" if abs(x) >= 0.01 or x == 0 else f"{x:.2g}"


def row(name: str, s: dict, params: str, train: str, steps: str) -> str:
    inv = s.get("invariance")
    change = "-" if inv is None else " / ".join(
        f"{max(v['energy_mae_rel_change'], v['forces_err_norm_rel_change']):.0e}" for v in inv.values())
    metric = [("test", "energy_mae_kcal_mol"), ("rotated", "energy_mae_kcal_mol"), ("test", "forces_mae_kcal_mol_a"),
              ("rotated", "forces_mae_kcal_mol_a"), ("test", "forces_err_norm_kcal_mol_a"),
              ("rotated", "forces_err_norm_kcal_mol_a")]
    cells = [name, params, train, steps, *(_number(s[k][m]) for k, m in metric), change]
    return "| " + " | ".join(cells) + " |"


def main(paths: list[str]) -> None:
    print("| " + " | ".join(COLUMNS) + " |")
    print("|" + "---|" * len(COLUMNS))
    summaries = []
    for p in paths:
        s = json.loads((Path(p) / "evaluation.json").read_text())
        summaries.append(s)
        r = s["run"]
        config = json.loads((Path(p) / "run.json").read_text()).get("config", {}).get("model", {})
        name = f"{r['model']} D={r['depth']}"
        if config.get("symmetrize_inversion"):
            name += ", symmetrised inversion"
        print(row(name, s, str(r["n_parameters"]), str(r["split"]["train"]), str(r["step"])))
    first = summaries[0]
    base = first["baselines"]["constant_energy_zero_forces"]
    base_rot = first["baselines"]["constant_energy_zero_forces_rotated"]
    print(row("constant E, zero F", {"test": base, "rotated": base_rot}, "1", "-", "-"))
    for s in summaries:
        krr = s["baselines"].get("krr_inverse_distances")
        if krr:
            print(row(f"KRR (inverse distances, gamma {krr['gamma']:g}, alpha {krr['alpha']:g})", krr,
                      str(krr["n_train"]), str(krr["n_train"]), "-"))
            break


if __name__ == "__main__":
    main(sys.argv[1:])
