"""The built-in molecules: the paper's systems (LiH, H2O, (H2O)2) and two non-planar ones (NH3, CH4)."""

from __future__ import annotations

import numpy as np

from qff_core.errors import InputError
from qff_core.molecules.spec import MoleculeSpec, make_molecule


def _h2o_positions(r_oh: float = 0.9572, angle_deg: float = 104.52) -> np.ndarray:
    half = np.deg2rad(angle_deg) / 2
    return np.array(
        [[0.0, 0.0, 0.0],
         [0.0, r_oh * np.sin(half), r_oh * np.cos(half)],
         [0.0, -r_oh * np.sin(half), r_oh * np.cos(half)]]
    )


def _pyramid_positions(r: float, angle_deg: float, n: int) -> np.ndarray:
    """A central atom at the origin and n ligands on a cone with equal ligand-centre-ligand angles."""
    # Ligands at polar angle t on a cone: cos(angle) = cos^2 t + sin^2 t cos(2 pi / n).
    c = np.cos(2 * np.pi / n)
    cos_t = np.sqrt((np.cos(np.deg2rad(angle_deg)) - c) / (1 - c))
    sin_t = np.sqrt(1 - cos_t**2)
    ligands = [[r * sin_t * np.cos(2 * np.pi * k / n), r * sin_t * np.sin(2 * np.pi * k / n), -r * cos_t]
               for k in range(n)]
    return np.array([[0.0, 0.0, 0.0], *ligands])


def _ch4_positions(r: float = 1.087) -> np.ndarray:
    h = r / np.sqrt(3)
    return np.array([[0, 0, 0], [h, h, h], [h, -h, -h], [-h, h, -h], [-h, -h, h]], dtype=float)


# S22 water dimer (Jurecka et al. 2006), Angstrom.
_WATER_DIMER = np.array(
    [[-1.551007, -0.114520, 0.000000],
     [-1.934259, 0.762503, 0.000000],
     [-0.599677, 0.040712, 0.000000],
     [1.350625, 0.111469, 0.000000],
     [1.680398, -0.373741, -0.758561],
     [1.680398, -0.373741, 0.758561]]
)


def builtin_molecule(name: str) -> MoleculeSpec:
    """One of the built-in molecules: ``lih``, ``h2o``, ``nh3``, ``ch4``, ``h2o_dimer``."""
    key = name.strip().lower().replace("-", "_")
    key = _ALIASES.get(key, key)
    if key == "lih":
        return make_molecule("lih", ["Li", "H"], [[0, 0, 0], [0, 0, 1.5949]])
    if key == "h2o":
        return make_molecule("h2o", ["O", "H", "H"], _h2o_positions())
    if key == "nh3":
        return make_molecule("nh3", ["N", "H", "H", "H"], _pyramid_positions(1.012, 106.67, 3))
    if key == "ch4":
        return make_molecule("ch4", ["C", "H", "H", "H", "H"], _ch4_positions())
    if key == "h2o_dimer":
        return make_molecule(
            "h2o_dimer", ["O", "H", "H", "O", "H", "H"], _WATER_DIMER,
            center="centroid", fragments=[[0, 1, 2], [3, 4, 5]],
        )
    raise InputError(f"unknown built-in molecule {name!r}; choose one of {', '.join(BUILTIN_NAMES)}, or give a "
                     "molecule file ending in .xyz, .yaml or .yml")


BUILTIN_NAMES = ("lih", "h2o", "nh3", "ch4", "h2o_dimer")
_ALIASES = {"water": "h2o", "(h2o)2": "h2o_dimer", "water_dimer": "h2o_dimer", "ammonia": "nh3",
            "methane": "ch4"}
