"""Where a model was trained: for each pair of elements, the range of interatomic distances in its training split.

A force field is fitted only there; outside it (a bond stretched beyond any training geometry, atoms pushed
closer than any were) its energies are extrapolation, whatever their smoothness. The calculator warns at the first
such geometry and counts them, and ``qff md`` reports how many steps left the domain.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass

import numpy as np

# A distance within this fraction beyond the trained range is still counted as inside: thermal motion a little
# hotter than the training data's reaches just past its extremes without being extrapolation of any weight.
DOMAIN_MARGIN = 0.05


class ExtrapolationWarning(UserWarning):
    """A geometry outside the range of interatomic distances the model was trained on."""


@dataclass(frozen=True)
class TrainingDomain:
    """Per pair of elements (``("O", "H")``: the element first in the molecule first), the shortest and longest
    distance (Angstrom) in training."""

    symbols: tuple[str, ...]
    ranges_a: dict[tuple[str, str], tuple[float, float]]
    margin: float = DOMAIN_MARGIN

    @classmethod
    def of_positions(cls, symbols: tuple[str, ...], positions_a: np.ndarray) -> TrainingDomain:
        """The domain of geometries ``positions_a`` (samples, atoms, 3), atoms in the order of ``symbols``."""
        i, j = np.triu_indices(len(symbols), k=1)
        d = np.linalg.norm(positions_a[:, i] - positions_a[:, j], axis=-1)  # (samples, pairs)
        keys = _pair_keys(tuple(symbols))
        ranges = {}
        for key in set(keys):
            of_key = d[:, [k for k, other in enumerate(keys) if other == key]]
            ranges[key] = (float(of_key.min()), float(of_key.max()))
        return cls(tuple(symbols), ranges)

    def outside(self, positions_a: np.ndarray) -> list[str]:
        """The pairs of one geometry (atoms in the model's order) whose distance lies outside the domain, described
        (``"O-H 9.571 A (trained 0.871-1.124 A)"``, the farthest out of each pair of elements); empty inside it."""
        i, j = np.triu_indices(len(self.symbols), k=1)
        d = np.linalg.norm(positions_a[i] - positions_a[j], axis=-1)
        worst: dict[tuple[str, str], tuple[float, float]] = {}  # per pair of elements: how far out, the distance
        for key, dist in zip(_pair_keys(self.symbols), d, strict=True):
            lo, hi = self.ranges_a[key]
            beyond = max(lo * (1 - self.margin) - dist, dist - hi * (1 + self.margin))
            if not beyond <= 0 and (key not in worst or beyond > worst[key][0]):  # NaN counts as outside
                worst[key] = (beyond, float(dist))
        return [f"{k[0]}-{k[1]} {dist:.3f} A (trained {self.ranges_a[k][0]:.3f}-{self.ranges_a[k][1]:.3f} A)"
                for k, (_, dist) in worst.items()]

    def warn(self, where: list[str], stacklevel: int = 1) -> None:
        """An ExtrapolationWarning naming the pairs ``where`` (from ``outside``), attributed to the caller
        (``stacklevel`` frames further up)."""
        shown = "; ".join(where[:3]) + (f"; and {len(where) - 3} more" if len(where) > 3 else "")
        warnings.warn(f"the geometry lies outside the model's training domain ({shown}): the energy and forces "
                      "there are extrapolated", ExtrapolationWarning, stacklevel=stacklevel + 1)


@functools.cache
def _pair_keys(symbols: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """The pair of elements of every atom pair (``np.triu_indices`` order), the element first in the molecule first
    (O-H, C-H)."""
    first = {s: symbols.index(s) for s in set(symbols)}
    i, j = np.triu_indices(len(symbols), k=1)
    return tuple(tuple(sorted((symbols[a], symbols[b]), key=first.__getitem__))  # type: ignore[misc]
                 for a, b in zip(i, j, strict=True))


__all__ = ["DOMAIN_MARGIN", "ExtrapolationWarning", "TrainingDomain"]
