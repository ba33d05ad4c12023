"""Molecule specs: species, reference geometry, origin rule and permutation group.

A spec is everything the model builder needs to know about a molecule's symmetry (``spec.py``).
Built-ins cover the paper's systems (LiH, H2O, (H2O)2) and two non-planar ones (NH3, CH4)
(``builtins.py``); others come from an XYZ file or a YAML spec (``files.py``, ``MoleculeFile``).
"""

from __future__ import annotations

from pathlib import Path

from qff_core.molecules.builtins import BUILTIN_NAMES, builtin_molecule
from qff_core.molecules.files import MoleculeFile, molecule_from_xyz, molecule_from_yaml, read_xyz
from qff_core.molecules.spec import (
    MIN_DISTANCE_A,
    CenterRule,
    MoleculeSpec,
    fragment_group,
    make_molecule,
    normalize_symbol,
    species_group,
    validate_positions,
)


def load_molecule(name_or_path: str | Path) -> MoleculeSpec:
    """A built-in by name, or a spec from an ``.xyz`` or ``.yaml``/``.yml`` file."""
    text = str(name_or_path)
    suffix = Path(text).suffix.lower()
    if suffix == ".xyz":
        return molecule_from_xyz(text)
    if suffix in (".yaml", ".yml"):
        return molecule_from_yaml(text)
    return builtin_molecule(text)


__all__ = ["BUILTIN_NAMES", "MIN_DISTANCE_A", "CenterRule", "MoleculeFile", "MoleculeSpec", "builtin_molecule",
           "fragment_group", "load_molecule", "make_molecule", "molecule_from_xyz", "molecule_from_yaml",
           "normalize_symbol", "read_xyz", "species_group", "validate_positions"]
