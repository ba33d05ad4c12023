"""Markdown table of scripts/results_symmetry_breaking.sh: accuracy against exact invariance, per setting.

Usage: results_symmetry_breaking_table.py DIR"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(out: Path) -> None:
    print("| molecule | RZ(eps) | eps (initial) | E MAE | E MAE rotated | F MAE rotated | audit: rotation | "
          "audit: permutation |\n|---|---|---|---|---|---|---|---|")
    for path in sorted(out.glob("*/evaluate.out")):
        molecule, _, setting = path.parent.name.partition("_")
        kind, _, eps = setting.partition("_")
        d = json.loads(path.read_text())
        test, rot, audit = d["test"], d.get("rotated", {}), d.get("audit", {})
        nan = float("nan")
        print(f"| {molecule} | {kind} | {eps or '-'} | {test['energy_mae_kcal_mol']:.3f} | "
              f"{rot.get('energy_mae_kcal_mol', nan):.3f} | {rot.get('forces_mae_kcal_mol_a', nan):.3f} | "
              f"{audit.get('rotation', nan):.1e} | {audit.get('permutation', nan):.1e} |")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
