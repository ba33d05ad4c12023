"""Unit conversions and physical constants, from one place (CODATA 2018, as used by ASE >= 3.23 and
QCElemental).

Inside qff: positions in Angstrom, energies in eV, forces in eV/Angstrom. Engines convert
at their boundary with these constants and nowhere else.
"""

from __future__ import annotations

HARTREE_EV = 27.211386245988
BOHR_ANGSTROM = 0.529177210903
EV_KCAL_PER_MOL = 23.060547830619026  # 1 eV = 96.48533212 kJ/mol / 4.184
BOLTZMANN_EV_PER_K = 8.617333262e-5
