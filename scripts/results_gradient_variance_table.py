"""The barren-plateau table and plot from scripts/results_gradient_variance.sh's JSON files.

Prints a markdown table (variance of dC/dθ per depth, one column per model and width; then the details of every
row) and draws DIR/gradient_variance.png (log scale, one line per model and width). When a case was run with more
than one sample count, the file with the most samples is used. Usage: results_gradient_variance_table.py DIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from qff_core.gradient_variance import plot_variance


def load(out: Path) -> list[dict]:
    """One report per (molecule, width, model), the one with the most samples; ordered by width, then model."""
    best: dict[tuple, dict] = {}
    for path in sorted(out.glob("*.json")):
        report = json.loads(path.read_text())
        if not report.get("depths"):
            continue
        key = (report["molecule"], report["depths"][0]["n_qubits"], report["model"])
        if key not in best or report["settings"]["samples"] > best[key]["settings"]["samples"]:
            best[key] = report
    return [best[k] for k in sorted(best, key=lambda k: (k[1], k[2] != "invariant", k[0]))]


def label(report: dict) -> str:
    """``invariant, 4 qubits`` (with the molecule when it is not H2O)."""
    molecule = "" if report["molecule"] == "h2o" else f"{report['molecule']} "
    return f"{molecule}{report['model']}, {report['depths'][0]['n_qubits']} qubits"


def main(out: Path) -> None:
    reports = load(out)
    if not reports:
        sys.exit(f"no gradient-variance JSON in {out}; run scripts/results_gradient_variance.sh first")
    depths = sorted({d["depth"] for r in reports for d in r["depths"]})
    print("Mean over circuit parameters of Var[dC/dθ] over random initialisations (C = <O> averaged over the "
          "fixed geometries)\n")
    print("| depth | " + " | ".join(label(r) for r in reports) + " |")
    print("|---" * (len(reports) + 1) + "|")
    for depth in depths:
        cells = []
        for r in reports:
            row = next((d for d in r["depths"] if d["depth"] == depth), None)
            cells.append("-" if row is None else f"{row['variance']:.2e}")
        print(f"| {depth} | " + " | ".join(cells) + " |")
    print("\n| model | qubits | depth | circuit params | Var[dC/dθ] | first layer | last layer | mean \\|dC/dθ\\| "
          "| samples | geometries | seconds |\n|---|---|---|---|---|---|---|---|---|---|---|")
    for r in reports:
        s = r["settings"]
        for d in r["depths"]:
            print(f"| {r['model']} | {d['n_qubits']} | {d['depth']} | {d['n_circuit_parameters']} | "
                  f"{d['variance']:.2e} | {d['variance_first_layer']:.2e} | {d['variance_last_layer']:.2e} | "
                  f"{d['mean_abs_gradient']:.2e} | {s['samples']} | {s['geometries']} | {d['seconds']:.0f} |")
    total = sum(d["seconds"] for r in reports for d in r["depths"])
    print(f"\ncompute time of all rows: {total / 60:.1f} min (compilation included)")
    path = plot_variance([(label(r), [d["depth"] for d in r["depths"]], [d["variance"] for d in r["depths"]])
                          for r in reports], out / "gradient_variance.png")
    print(f"plot: {path}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: results_gradient_variance_table.py DIR")
    main(Path(sys.argv[1]))
