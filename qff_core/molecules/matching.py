"""Matching atoms given in any order (an ASE ``Atoms``, an imported frame) to a molecule's atom order.

A model numbers its atoms as its ``MoleculeSpec`` does. Atoms given in another order are mapped
species by species: among the assignments of the given atoms of each element to the model's
atoms of that element, the one whose interatomic distances are closest to the molecule's
reference geometry. Assignments that differ by an element of the molecule's permutation group
give the same energy on an invariant model, so only which coset is picked matters, and the
distance match picks the chemically right one (which H belongs to which O in a dimer).
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Sequence

import numpy as np

from qff_core.errors import InputError
from qff_core.molecules.spec import MoleculeSpec

MAX_ASSIGNMENTS = 200_000
"""Species-preserving assignments tried at most; beyond, give the atoms in the model's order."""


class AtomsMismatchError(InputError):
    """The atoms given are not the model's molecule (other elements or counts)."""


def formula(symbols: Sequence[str]) -> str:
    """Hill formula: C, then H, then the other elements alphabetically (``H2O``, ``CH4``, ``H3N``)."""
    counts = Counter(symbols)
    first = ["C", "H"] if "C" in counts else []
    order = [s for s in first if s in counts] + sorted(s for s in counts if s not in first)
    return "".join(f"{s}{counts[s] if counts[s] > 1 else ''}" for s in order)


def check_species(molecule: MoleculeSpec, symbols: Sequence[str], what: str = "the atoms given") -> None:
    """AtomsMismatchError unless ``symbols`` hold the molecule's elements, each as often."""
    if Counter(symbols) != Counter(molecule.symbols):
        raise AtomsMismatchError(f"{what} are {formula(symbols)} ({len(symbols)} atoms) but the model is of "
                                 f"{molecule.name}, {formula(molecule.symbols)} ({molecule.n_atoms} atoms)")


def _distances(positions_a: np.ndarray) -> np.ndarray:
    return np.linalg.norm(positions_a[:, None, :] - positions_a[None, :, :], axis=-1)


def match_atoms(molecule: MoleculeSpec, symbols: Sequence[str], positions_a: np.ndarray) -> tuple[int, ...]:
    """``order`` such that given atom ``order[i]`` is the model's atom ``i`` (positions_a[order] is in the
    model's order). The identity when the symbols are already in the model's order."""
    symbols = tuple(symbols)
    check_species(molecule, symbols)
    if symbols == tuple(molecule.symbols):
        return tuple(range(len(symbols)))
    given_by_species = {s: [i for i, t in enumerate(symbols) if t == s] for s in set(symbols)}
    model_by_species = {s: [i for i, t in enumerate(molecule.symbols) if t == s] for s in set(symbols)}
    species = sorted(given_by_species)
    n = math.prod(math.factorial(len(given_by_species[s])) for s in species)
    if n > MAX_ASSIGNMENTS:
        raise AtomsMismatchError(f"{n} ways to map these atoms onto {molecule.name}'s order; give the atoms in the "
                                 f"model's order ({' '.join(molecule.symbols)})")
    reference = _distances(molecule.positions_a)
    given = _distances(np.asarray(positions_a, dtype=np.float64))
    best, best_order = np.inf, None
    for choice in itertools.product(*(itertools.permutations(given_by_species[s]) for s in species)):
        order = [0] * len(symbols)
        for s, perm in zip(species, choice, strict=True):
            for model_index, given_index in zip(model_by_species[s], perm, strict=True):
                order[model_index] = given_index
        mismatch = float(np.sum((given[np.ix_(order, order)] - reference) ** 2))
        if mismatch < best - 1e-12:
            best, best_order = mismatch, tuple(order)
    assert best_order is not None
    return best_order


SAME_GEOMETRY_A = 1e-6
"""Two geometries whose sorted interatomic distances agree to this (Angstrom) are one geometry."""


def _fingerprints(x: np.ndarray) -> np.ndarray:
    """Sorted interatomic distances of each geometry (samples, pairs): equal for equal geometries up to rotation,
    translation and permutation."""
    x = np.asarray(x, dtype=np.float64).reshape(-1, *np.shape(x)[-2:])
    iu = np.triu_indices(x.shape[1], 1)
    return np.sort(np.array([_distances(g)[iu] for g in x]).reshape(len(x), len(iu[0])), axis=1)


def same_geometries(known_a: np.ndarray, new_a: np.ndarray, tol_a: float = SAME_GEOMETRY_A) -> dict[int, int]:
    """``{k: i}``: new geometry ``k`` is known geometry ``i`` up to rotation, translation and permutation of atoms
    (equal sorted interatomic distances). Arrays are (samples, atoms, 3) in Angstrom."""
    from scipy.spatial import cKDTree

    known, new = _fingerprints(known_a), _fingerprints(new_a)
    if known.shape[0] == 0 or new.shape[0] == 0 or known.shape[1] == 0:
        return {}
    distance, index = cKDTree(known).query(new, distance_upper_bound=tol_a, p=np.inf)
    return {int(k): int(i) for k, (d, i) in enumerate(zip(distance, index, strict=True)) if np.isfinite(d)}


def repeated_geometries(positions_a: np.ndarray, tol_a: float = SAME_GEOMETRY_A) -> dict[int, int]:
    """``{k: i}`` with i < k: geometry ``k`` of ``positions_a`` repeats the earlier geometry ``i`` (as in
    ``same_geometries``)."""
    from scipy.spatial import cKDTree

    prints = _fingerprints(positions_a)
    if prints.shape[0] < 2 or prints.shape[1] == 0:
        return {}
    repeats: dict[int, int] = {}
    for i, k in sorted(cKDTree(prints).query_pairs(tol_a, p=np.inf)):
        repeats[k] = min(repeats.get(k, i), i)
    return repeats


def inverse_order(order: Sequence[int]) -> np.ndarray:
    """The inverse of ``order``: model-ordered values ``v`` back in the given order are ``v[inverse]``."""
    inv = np.empty(len(order), dtype=int)
    inv[np.asarray(order)] = np.arange(len(order))
    return inv


__all__ = ["MAX_ASSIGNMENTS", "SAME_GEOMETRY_A", "AtomsMismatchError", "check_species", "formula", "inverse_order",
           "match_atoms", "repeated_geometries", "same_geometries"]
