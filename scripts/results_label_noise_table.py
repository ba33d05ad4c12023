"""Markdown table and plot of scripts/results_label_noise.sh's outputs: clean test errors against the label noise.

Usage: results_label_noise_table.py RUNS_DIR   (writes RUNS_DIR/label_noise.png)

Energies in kcal/mol, forces in kcal/mol/A; "rot" = the randomly rotated test set. The noise level is read from
each run's run.json (training labels only; every score is on clean labels); KRR is the invariant run's baseline,
fitted on the same noisy training labels.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from qff_core.units import EV_KCAL_PER_MOL

MODELS = {"invariant": "_invariant_d6", "generic": "_generic_d1"}
COLUMNS = ("noise E (kcal/mol)", "noise F (kcal/mol/A)", "invariant E MAE", "invariant F MAE", "generic E MAE",
           "generic F MAE", "generic E MAE rot", "generic F MAE rot", "KRR E MAE", "KRR F MAE")
E, F = "energy_mae_kcal_mol", "forces_mae_kcal_mol_a"


def _load(run: Path) -> dict | None:
    """The run's evaluation summary (evaluate.out, written once by the script), None when not evaluated yet."""
    out = run / "evaluate.out"
    return json.loads(out.read_text()) if out.exists() and out.stat().st_size else None


def _noise_kcal(run: Path) -> tuple[float, float]:
    """(energy, force) noise of the run's training labels in kcal/mol and kcal/mol/A."""
    config = json.loads((run / "run.json").read_text())["config"]
    return (config.get("label_noise_energy_ev", 0.0) * EV_KCAL_PER_MOL,
            config.get("label_noise_forces_ev_per_a", 0.0) * EV_KCAL_PER_MOL)


def collect(runs_dir: Path) -> list[dict]:
    """One row per noise level: the test metrics of each model and of KRR (None where a run is missing)."""
    rows: dict[tuple[float, float], dict] = {}
    for model, suffix in MODELS.items():
        for run in sorted(runs_dir.glob(f"*{suffix}")):
            summary = _load(run)
            if summary is None:
                continue
            row = rows.setdefault(tuple(round(x, 6) for x in _noise_kcal(run)), {})
            row[model] = summary
            if "krr_inverse_distances" in summary["baselines"]:
                row["krr"] = summary["baselines"]["krr_inverse_distances"]
    return [{"noise": k, **v} for k, v in sorted(rows.items())]


def _cell(row: dict, who: str, part: str, metric: str) -> str:
    """Three decimals, or two significant digits below 0.01 (KRR's errors would print as 0.000); - when missing."""
    s = row.get(who)
    if s is None or part not in s:
        return "-"
    x = s[part][metric]
    return f"{x:.3f}" if abs(x) >= 0.01 or x == 0 else f"{x:.2g}"


def table(rows: list[dict]) -> str:
    """The markdown table of ``collect``'s rows."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        cells = [f"{r['noise'][0]:g}", f"{r['noise'][1]:g}", _cell(r, "invariant", "test", E),
                 _cell(r, "invariant", "test", F), _cell(r, "generic", "test", E), _cell(r, "generic", "test", F),
                 _cell(r, "generic", "rotated", E), _cell(r, "generic", "rotated", F), _cell(r, "krr", "test", E),
                 _cell(r, "krr", "test", F)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    """Test energy and force MAE against the energy noise level, one line per model (and KRR)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    curves = (("invariant D=6", "invariant", "test"), ("generic D=1", "generic", "test"),
              ("generic D=1, rotated", "generic", "rotated"), ("KRR (inverse distances)", "krr", "test"))
    for ax, metric, unit in ((axes[0], E, "energy MAE (kcal/mol)"), (axes[1], F, "force MAE (kcal/mol/A)")):
        for label, who, part in curves:
            points = [(r["noise"][0], r[who][part][metric]) for r in rows if who in r and part in r[who]]
            if points:
                ax.plot(*zip(*points, strict=True), "o-", label=label)
        ax.set_xlabel("label noise sigma (kcal/mol; forces kcal/mol/A)")
        ax.set_ylabel(f"clean test {unit}")
        ax.set_yscale("log")
        ax.legend(fontsize=8)
    fig.suptitle("H2O B3LYP/6-31G* 500 K: trained on noisy labels, tested on clean ones")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(runs_dir: Path) -> None:
    rows = collect(runs_dir)
    if not rows:
        raise SystemExit(f"no evaluated runs in {runs_dir}; run scripts/results_label_noise.sh first")
    print(table(rows))
    plot(rows, runs_dir / "label_noise.png")
    print(f"\nplot: {runs_dir / 'label_noise.png'}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
