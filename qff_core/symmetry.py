"""Permutation groups of identical atoms and the rigid motions used to audit a model.

A permutation ``p`` is a tuple with ``p[i]`` the image of point ``i``. Groups are kept by
generators: orbits and invariance checks need only those, so groups with many elements
(identical hydrogens in larger molecules) stay cheap.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from qff_core.errors import SymmetryError

T = TypeVar("T", bound=Hashable)
Permutation = tuple[int, ...]


def compose(p: Permutation, q: Permutation) -> Permutation:
    """The permutation ``p after q``: point ``i`` goes to ``p[q[i]]``."""
    return tuple(p[j] for j in q)


def inverse(p: Permutation) -> Permutation:
    """The inverse permutation."""
    inv = [0] * len(p)
    for i, j in enumerate(p):
        inv[j] = i
    return tuple(inv)


def check_permutation(p: Sequence[int], degree: int) -> Permutation:
    """Validate ``p`` as a permutation of ``range(degree)`` and return it as a tuple."""
    p = tuple(int(i) for i in p)
    if len(p) != degree or sorted(p) != list(range(degree)):
        raise SymmetryError(
            f"{list(p)} is not a permutation of 0..{degree - 1}: give each atom index exactly once"
        )
    return p


@dataclass(frozen=True)
class PermutationGroup:
    """A group of permutations of ``degree`` points, given by generators (identity if none)."""

    degree: int
    generators: tuple[Permutation, ...] = ()

    def __post_init__(self) -> None:
        gens = tuple(check_permutation(g, self.degree) for g in self.generators)
        identity = tuple(range(self.degree))
        object.__setattr__(self, "generators", tuple(g for g in dict.fromkeys(gens) if g != identity))

    @property
    def is_trivial(self) -> bool:
        """True when the group holds only the identity."""
        return not self.generators

    def orbits(self, items: Iterable[T], act: Callable[[Permutation, T], T]) -> list[list[T]]:
        """Orbits of ``items`` under the group acting by ``act(p, item)``, in first-seen order.

        Every image of an item must itself be among ``items``.
        """
        items = list(items)
        seen: set[T] = set()
        result: list[list[T]] = []
        for start in items:
            if start in seen:
                continue
            orbit = [start]
            seen.add(start)
            frontier = [start]
            while frontier:
                nxt = []
                for item in frontier:
                    for g in self.generators:
                        image = act(g, item)
                        if image not in seen:
                            seen.add(image)
                            orbit.append(image)
                            nxt.append(image)
                frontier = nxt
            result.append(orbit)
        return result

    def point_orbits(self) -> list[list[int]]:
        """Orbits of the points ``0..degree-1``."""
        return self.orbits(range(self.degree), lambda p, i: p[i])

    def fixes(self, point: int) -> bool:
        """True when every group element maps ``point`` to itself."""
        return all(g[point] == point for g in self.generators)

    def leaves_invariant(self, subsets: Iterable[frozenset[int]]) -> bool:
        """True when the set of ``subsets`` is mapped to itself by every group element."""
        family = set(subsets)
        return all(frozenset(g[i] for i in s) in family for g in self.generators for s in family)

    def elements(self, limit: int = 100_000) -> list[Permutation]:
        """All elements (identity first), by closure; raises if there are more than ``limit``."""
        identity = tuple(range(self.degree))
        found = {identity: None}
        frontier = [identity]
        while frontier:
            nxt = []
            for h in frontier:
                for g in self.generators:
                    e = compose(g, h)
                    if e not in found:
                        found[e] = None
                        nxt.append(e)
                        if len(found) > limit:
                            raise SymmetryError(
                                f"the permutation group has more than {limit} elements; "
                                "use random_element() instead of enumerating it"
                            )
            frontier = nxt
        return list(found)

    def order(self, limit: int = 100_000) -> int | None:
        """Number of elements, or ``None`` when there are more than ``limit`` (not enumerated)."""
        try:
            return len(self.elements(limit))
        except SymmetryError:
            return None

    def random_element(self, rng: np.random.Generator, *, exclude_identity: bool = True) -> Permutation:
        """A random group element: uniform for small groups, a long random word otherwise."""
        identity = tuple(range(self.degree))
        if self.is_trivial:
            return identity
        try:
            elems = self.elements(limit=50_000)
        except SymmetryError:
            while True:
                p = identity
                for _ in range(64):
                    p = compose(self.generators[int(rng.integers(len(self.generators)))], p)
                if p != identity or not exclude_identity:
                    return p
        if exclude_identity:
            elems = elems[1:]
        return elems[int(rng.integers(len(elems)))]


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A Haar-random proper rotation matrix (det +1), from the QR decomposition of a Gaussian."""
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def permute_atoms(values: np.ndarray, p: Permutation) -> np.ndarray:
    """Move atom ``i``'s row to slot ``p[i]`` (works on positions and on forces, last axes (atoms, 3))."""
    out = np.empty_like(values)
    out[..., list(p), :] = values[..., :, :]
    return out
