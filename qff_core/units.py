"""Unit conversions, from one place (CODATA 2018, as used by ASE >= 3.23 and QCElemental).

Inside qff: positions in Angstrom, energies in eV, forces in eV/Angstrom. Engines convert
at their boundary with these constants and nowhere else.
"""

from __future__ import annotations

CODATA_YEAR = 2018
HARTREE_EV = 27.211386245988
BOHR_ANGSTROM = 0.529177210903
EV_KCAL_PER_MOL = 23.060547830619026  # 1 eV = 96.48533212 kJ/mol / 4.184
EV_MEV = 1000.0
HARTREE_PER_BOHR_EV_PER_ANGSTROM = HARTREE_EV / BOHR_ANGSTROM


def ev_to_kcal_per_mol(energy_ev: float) -> float:
    """Convert eV to kcal/mol (thermochemical calorie)."""
    return energy_ev * EV_KCAL_PER_MOL


def hartree_to_ev(energy_hartree: float) -> float:
    """Convert Hartree to eV."""
    return energy_hartree * HARTREE_EV
