"""The control for the NVE energy-drift bar (issue 17): the same velocity-Verlet run as `qff md RUN --ensemble nve`
(same seed, temperature, time step and steps), on the reference surface's harmonic approximation instead of the
model: a PySCF B3LYP/6-31G* Hessian at the dataset's psi4 minimum. What final − initial total energy it gives is
the integrator's own O(dt^2) oscillation on the reference physics, which no model can do better than by being
softer. Prints JSON.

Usage: python scripts/nve_reference_control.py [--dataset data/h2o_b3lyp_631gs_500k.zarr] [--timestep-fs 0.5]
       [--steps 2000] [--temperature-k 300] [--seed 0] [--out runs/results/use/nve_reference_control]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from qff_core.units import BOHR_ANGSTROM, HARTREE_EV


def pyscf_hessian_ev_per_a2(symbols: list[str], positions_a: np.ndarray, basis: str) -> np.ndarray:
    """(3N, 3N) B3LYP Hessian in eV/Å^2, analytic (PySCF), Cartesian d functions as psi4 uses for 6-31G*."""
    from pyscf import dft, gto

    from qff_core.reference.pyscf import uses_cartesian_d

    mol = gto.M(atom=[(s, tuple(p)) for s, p in zip(symbols, positions_a, strict=True)], basis=basis,
                unit="Angstrom", cart=uses_cartesian_d(basis), verbose=0)
    mf = dft.RKS(mol)
    mf.xc = "b3lyp"
    mf.conv_tol = 1e-11
    mf.kernel()
    h = mf.Hessian().kernel()  # (N, N, 3, 3), Hartree/Bohr^2
    n = len(symbols)
    return h.transpose(0, 2, 1, 3).reshape(3 * n, 3 * n) * HARTREE_EV / BOHR_ANGSTROM**2


def harmonic_wavenumbers_cm1(hessian: np.ndarray, masses_amu: np.ndarray) -> np.ndarray:
    """The vibrational wavenumbers of a Cartesian Hessian (the 3N - 6 largest)."""
    from ase import units

    m = np.repeat(masses_amu, 3)
    w2 = np.linalg.eigvalsh(hessian / np.sqrt(np.outer(m, m)))  # eV / (Å^2 amu)
    omega = np.sqrt(np.clip(w2, 0, None) * units._e / units._amu) * 1e10  # rad/s
    return np.sort(omega / (2 * np.pi * units._c * 100))[6:]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="data/h2o_b3lyp_631gs_500k.zarr")
    p.add_argument("--timestep-fs", type=float, default=0.5)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--temperature-k", type=float, default=300.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("runs/results/use/nve_reference_control"))
    args = p.parse_args()

    import zarr
    from ase import Atoms
    from ase.calculators.harmonic import HarmonicCalculator, HarmonicForceField
    from ase.io import write

    from qff_core.md import MDConfig, run_md

    attrs = dict(zarr.open_group(args.dataset, mode="r").attrs)
    symbols = attrs["molecule"]["symbols"]
    minimum = attrs["sampler"]["minimum"]
    positions = np.asarray(minimum["positions_a"])
    basis = attrs["level_of_theory"]["basis"]
    ref = Atoms(symbols=symbols, positions=positions)
    hessian = pyscf_hessian_ev_per_a2(symbols, positions, basis)
    wavenumbers = harmonic_wavenumbers_cm1(hessian, ref.get_masses())

    args.out.mkdir(parents=True, exist_ok=True)
    start = args.out / "start.xyz"
    write(start, ref)
    calc = HarmonicCalculator(HarmonicForceField(ref_atoms=ref, hessian_x=hessian, ref_energy=0.0))
    config = MDConfig(run_dir=str(args.out), ensemble="nve", timestep_fs=args.timestep_fs, steps=args.steps,
                      temperature_k=args.temperature_k, seed=args.seed, start=str(start),
                      out=str(args.out / "nve.extxyz"))
    summary = run_md(config, calc=calc, plot=False)
    keep = ("timestep_fs", "steps", "energy_drift_ev", "energy_drift_fit_ev", "energy_fluctuation_ev",
            "max_energy_deviation_ev", "mean_temperature_k")
    print(json.dumps({"surface": f"harmonic, PySCF b3lyp/{basis} Hessian at the dataset's psi4 minimum",
                      "wavenumbers_cm1": [round(float(w), 1) for w in wavenumbers],
                      "psi4_wavenumbers_cm1": minimum.get("frequencies_cm1"),
                      **{k: summary[k] for k in keep}}, indent=2))


if __name__ == "__main__":
    main()
