"""Molecule specs: species, reference geometry, origin rule and permutation group.

A spec is everything the model builder needs to know about a molecule's symmetry: built by
``make_molecule`` (which checks elements, geometry and group), from a built-in
(``builtins.py``) or a file (``files.py``).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from ase.data import atomic_numbers, chemical_symbols

from qff_core.errors import GeometryError, InputError, SymmetryError, UnknownElementError
from qff_core.symmetry import Permutation, PermutationGroup, check_permutation

MIN_DISTANCE_A = 0.1
"""Two atoms closer than this (Angstrom) are rejected as a broken geometry."""

CenterRule = int | str | None  # atom index, element symbol, "auto", "centroid" or None (centroid)


@dataclass(frozen=True, eq=False)
class MoleculeSpec:
    """A molecule and its symmetry: what the invariant model is built from.

    ``center`` is the index of the atom used as origin (it must be fixed by ``group``), or
    ``None`` for the centroid. ``group`` permutes identical atoms; ``fragments`` (monomers)
    are recorded when the group was built from them.
    """

    name: str
    symbols: tuple[str, ...]
    positions_a: np.ndarray
    center: int | None
    group: PermutationGroup
    fragments: tuple[tuple[int, ...], ...] | None = None
    charge: int = 0
    multiplicity: int = 1

    @property
    def n_atoms(self) -> int:
        """Number of atoms."""
        return len(self.symbols)

    @property
    def numbers(self) -> tuple[int, ...]:
        """Atomic numbers."""
        return tuple(atomic_numbers[s] for s in self.symbols)

    @property
    def active_atoms(self) -> tuple[int, ...]:
        """Atoms whose relative vector is encoded: all but the central atom."""
        return tuple(a for a in range(self.n_atoms) if a != self.center)

    @property
    def origin_rule(self) -> str:
        """Human-readable origin: ``"atom 0 (O)"`` or ``"centroid"``."""
        if self.center is None:
            return "centroid"
        return f"atom {self.center} ({self.symbols[self.center]})"

    def origin(self, positions_a: np.ndarray) -> np.ndarray:
        """The origin of the relative vectors for one geometry (or a batch, atoms on axis -2)."""
        if self.center is None:
            return positions_a.mean(axis=-2)
        return positions_a[..., self.center, :]

    def validate_positions(self, positions_a: np.ndarray | Sequence) -> np.ndarray:
        """Check a geometry (n_atoms, 3) or a batch (n, n_atoms, 3) of this molecule; return float64."""
        return validate_positions(positions_a, self.n_atoms)

    def describe(self) -> dict:
        """A JSON-ready summary of the spec."""
        return {
            "name": self.name,
            "symbols": list(self.symbols),
            "origin": self.origin_rule,
            "group_generators": [list(g) for g in self.group.generators],
            "group_order": self.group.order(),
            "fragments": [list(f) for f in self.fragments] if self.fragments else None,
            "charge": self.charge,
            "multiplicity": self.multiplicity,
        }


def normalize_symbol(symbol: str | int) -> str:
    """Canonical element symbol for ``"h"``, ``"H"``, ``1`` ...; raises UnknownElementError."""
    if isinstance(symbol, (int, np.integer)) or (isinstance(symbol, str) and symbol.strip().isdigit()):
        z = int(symbol)
        if 1 <= z < len(chemical_symbols):
            return chemical_symbols[z]
        raise UnknownElementError(f"atomic number {z} is not an element (use 1..{len(chemical_symbols) - 1})")
    s = str(symbol).strip()
    canonical = s[:1].upper() + s[1:].lower()
    if canonical not in atomic_numbers or canonical == "X":
        raise UnknownElementError(
            f"unknown element {symbol!r}: use a periodic-table symbol such as H, C, N, O, Li"
        )
    return canonical


def validate_positions(positions_a: np.ndarray | Sequence, n_atoms: int | None = None) -> np.ndarray:
    """Return positions as float64 after checking shape, finiteness and minimum distance."""
    try:
        x = np.asarray(positions_a, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise GeometryError(f"positions are not numbers: {exc}") from exc
    if x.ndim not in (2, 3) or x.shape[-1] != 3:
        raise GeometryError(
            f"positions must have shape (atoms, 3) or (samples, atoms, 3); got {x.shape}"
        )
    if n_atoms is not None and x.shape[-2] != n_atoms:
        raise GeometryError(f"expected {n_atoms} atoms, got positions for {x.shape[-2]}")
    bad = ~np.isfinite(x)
    if bad.any():
        idx = np.argwhere(bad)[0]
        raise GeometryError(
            f"positions hold NaN or infinite values (first at index {tuple(int(i) for i in idx)}); "
            "fix or drop that geometry"
        )
    if x.shape[-2] > 1:
        d = np.linalg.norm(x[..., :, None, :] - x[..., None, :, :], axis=-1)
        iu = np.triu_indices(x.shape[-2], k=1)
        pair = d[..., iu[0], iu[1]]
        if (pair < MIN_DISTANCE_A).any():
            flat = np.argwhere(pair < MIN_DISTANCE_A)[0]
            k = int(flat[-1])
            i, j = int(iu[0][k]), int(iu[1][k])
            where = f" in sample {int(flat[0])}" if x.ndim == 3 else ""
            raise GeometryError(
                f"atoms {i} and {j} are {float(pair[tuple(flat)]):.4f} Angstrom apart{where}, closer "
                f"than {MIN_DISTANCE_A} Angstrom: the geometry is broken (units in Bohr?)"
            )
    return x


def species_group(symbols: Sequence[str]) -> PermutationGroup:
    """All permutations of identical atoms, generated by adjacent transpositions within each element."""
    gens: list[Permutation] = []
    n = len(symbols)
    for element in dict.fromkeys(symbols):
        idx = [i for i, s in enumerate(symbols) if s == element]
        for a, b in itertools.pairwise(idx):
            p = list(range(n))
            p[a], p[b] = b, a
            gens.append(tuple(p))
    return PermutationGroup(n, tuple(gens))


def fragment_group(symbols: Sequence[str], fragments: Sequence[Sequence[int]]) -> PermutationGroup:
    """Swaps of identical atoms within each fragment times swaps of identical fragments.

    Two fragments are identical when they hold the same elements in the same counts; their
    atoms are matched element by element in index order.
    """
    n = len(symbols)
    flat = sorted(i for f in fragments for i in f)
    if flat != list(range(n)):
        raise SymmetryError(
            f"fragments {[list(f) for f in fragments]} must partition the atoms 0..{n - 1}, each atom once"
        )
    gens: list[Permutation] = []
    for frag in fragments:
        sub = species_group([symbols[i] for i in frag])
        for g in sub.generators:
            p = list(range(n))
            for local, image in enumerate(g):
                p[frag[local]] = frag[image]
            gens.append(tuple(p))

    def key(frag: Sequence[int]) -> tuple:
        return tuple(sorted(symbols[i] for i in frag))

    def matched(frag: Sequence[int]) -> list[int]:
        return sorted(frag, key=lambda i: (symbols[i], i))

    for a, fa in enumerate(fragments):
        for fb in fragments[a + 1 :]:
            if key(fa) == key(fb):
                p = list(range(n))
                for i, j in zip(matched(fa), matched(fb), strict=True):
                    p[i], p[j] = j, i
                gens.append(tuple(p))
                break  # swaps of consecutive identical fragments generate all of them
    return PermutationGroup(n, tuple(gens))


def _resolve_center(symbols: Sequence[str], group: PermutationGroup, center: CenterRule) -> int | None:
    if center is None or center == "centroid":
        return None
    if center == "auto":
        unique = [i for i, s in enumerate(symbols) if symbols.count(s) == 1 and group.fixes(i)]
        if not unique:
            return None
        return max(unique, key=lambda i: atomic_numbers[symbols[i]])
    if isinstance(center, str) and not center.lstrip("-").isdigit():
        element = normalize_symbol(center)
        idx = [i for i, s in enumerate(symbols) if s == element]
        if len(idx) != 1:
            raise SymmetryError(
                f"central atom {element!r} is not unique: the molecule has {len(idx)} of them; "
                "name an element that occurs once, an atom index, or 'centroid'"
            )
        index = idx[0]
    else:
        index = int(center)
        if not 0 <= index < len(symbols):
            raise SymmetryError(f"central atom index {index} is out of range 0..{len(symbols) - 1}")
    if not group.fixes(index):
        partners = sorted({g[index] for g in group.generators} - {index})
        raise SymmetryError(
            f"central atom {index} ({symbols[index]}) is not unique: the permutation group exchanges "
            f"it with atoms {partners}; choose an atom the group fixes, or 'centroid'"
        )
    return index


def check_spin(symbols: Sequence[str], charge: int, multiplicity: int) -> None:
    """InputError unless ``charge`` leaves electrons and ``multiplicity`` fits their count (odd count: even
    multiplicity, and the reverse): what every reference engine would refuse, said before it is asked."""
    from ase.data import atomic_numbers

    electrons = sum(atomic_numbers[s] for s in symbols) - charge
    if electrons < 0:
        raise InputError(f"charge {charge} leaves {electrons} electrons on {''.join(symbols)}; lower the charge")
    if multiplicity < 1 or (electrons + multiplicity - 1) % 2:
        raise InputError(f"multiplicity {multiplicity} is impossible with {electrons} electrons (charge {charge}): "
                         f"{'an odd' if electrons % 2 else 'an even'} count needs "
                         f"{'an even (2, 4, ...)' if electrons % 2 else 'an odd (1, 3, ...)'} multiplicity")


def make_molecule(
    name: str,
    symbols: Sequence[str | int],
    positions_a: np.ndarray | Sequence,
    *,
    center: CenterRule = "auto",
    fragments: Sequence[Sequence[int]] | None = None,
    permutations: Sequence[Sequence[int]] | None = None,
    charge: int = 0,
    multiplicity: int = 1,
) -> MoleculeSpec:
    """Validate and build a spec.

    The group is, in order of precedence: the given ``permutations`` (generators), the
    fragment group of ``fragments``, or all permutations of identical atoms. ``center`` is
    ``"auto"`` (the heaviest atom whose element occurs once, else the centroid), ``"centroid"``,
    an element symbol or an atom index.
    """
    syms = tuple(normalize_symbol(s) for s in symbols)
    if not syms:
        raise GeometryError("a molecule needs at least one atom")
    pos = validate_positions(positions_a, len(syms))
    if pos.ndim != 2:
        raise GeometryError(f"a reference geometry has shape (atoms, 3); got {pos.shape}")
    frags = tuple(tuple(int(i) for i in f) for f in fragments) if fragments else None
    if permutations is not None:
        gens = tuple(check_permutation(p, len(syms)) for p in permutations)
        for g in gens:
            for i, j in enumerate(g):
                if syms[i] != syms[j]:
                    raise SymmetryError(
                        f"permutation {list(g)} maps atom {i} ({syms[i]}) onto atom {j} ({syms[j]}); "
                        "a symmetry may only exchange identical atoms"
                    )
        group = PermutationGroup(len(syms), gens)
    elif frags:
        group = fragment_group(syms, frags)
    else:
        group = species_group(syms)
    c = _resolve_center(syms, group, center)
    check_spin(syms, int(charge), int(multiplicity))
    pos = pos.copy()
    pos.setflags(write=False)
    return MoleculeSpec(
        name=name, symbols=syms, positions_a=pos, center=c, group=group, fragments=frags,
        charge=int(charge), multiplicity=int(multiplicity),
    )
