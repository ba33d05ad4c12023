"""Sampled parameter-shift forces of a trained invariant model with and without the off-axis evaluation frame.

For each geometry of a bond scan of a diatomic-like run (the second atom moved along z from the first), prints
the standard deviation of the sampled forces (from the shot variances, largest component) and their largest
error against the exact simulator, in the data frame with the frame turned off and on (docs/results.md,
"On (simulated) devices"). JSON on stdout. Usage:

    python scripts/force_conditioning.py [RUN] [--shots 10000] [--seed 3] [--from-a 1.2 --to-a 2.6 --points 15]
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from qff_core.execution.exact.executor import ExactExecutor
from qff_core.execution.qiskit.aer import AerEvaluator
from qff_core.execution.qiskit.compiler import compile_qiskit
from qff_core.execution.shift.executor import ShiftExecutor
from qff_core.execution.shift.planner import Request
from qff_core.run.directory import open_run
from qff_core.units import EV_KCAL_PER_MOL


def _sampled(model, frame: bool, shots: int, seed: int) -> ShiftExecutor:
    qmodel = compile_qiskit(model, off_axis_frame=frame)
    evaluator = AerEvaluator(shots=shots)
    return ShiftExecutor(name="aer", qmodel=qmodel, evaluator=evaluator, program=evaluator.prepare(qmodel), seed=seed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", nargs="?", default="runs/results/lih_invariant_d6")
    parser.add_argument("--shots", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--from-a", type=float, default=1.2)
    parser.add_argument("--to-a", type=float, default=2.6)
    parser.add_argument("--points", type=int, default=15)
    args = parser.parse_args()
    run = open_run(args.run)
    theta, _ = run.final_parameters()
    model = run.model
    if model.molecule.n_atoms != 2:
        raise SystemExit(f"{args.run}: a two-atom model is needed (the scan moves atom 1 along z); got "
                         f"{model.molecule.n_atoms} atoms")
    bonds = np.linspace(args.from_a, args.to_a, args.points)
    X = np.zeros((len(bonds), 2, 3))
    X[:, 1, 2] = bonds
    _, f_exact = ExactExecutor.for_model(model).energies_forces(theta, X)
    rows = {"bond_a": bonds.round(4).tolist()}
    for frame in (False, True):
        ex = _sampled(model, frame, args.shots, args.seed)
        res = ex.run(ex.plan(theta, X, Request(forces=True)))
        k = "frame" if frame else "no_frame"
        std = np.sqrt(res.forces_var).max(axis=(1, 2)) * EV_KCAL_PER_MOL
        rows[f"force_std_kcal_mol_a_{k}"] = std.round(2).tolist()
        rows[f"force_error_kcal_mol_a_{k}"] = (np.abs(res.forces - f_exact).max(axis=(1, 2))
                                               * EV_KCAL_PER_MOL).round(2).tolist()
    print(json.dumps({"run": args.run, "shots": args.shots, "seed": args.seed, **rows}, indent=1))


if __name__ == "__main__":
    main()
