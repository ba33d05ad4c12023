"""What a reference engine is: a request, a result, and the protocol every engine follows."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Protocol, runtime_checkable

import numpy as np

from qff_core.molecules import normalize_symbol, validate_positions


@dataclass(frozen=True, eq=False)
class CalculationRequest:
    """One energy + gradient calculation: a geometry (Angstrom) and a level of theory.

    ``keywords`` are passed to the engine as they are (engine-specific names); ``max_iterations``
    and ``convergence_hartree`` are understood by every engine.
    """

    symbols: tuple[str, ...]
    positions_a: np.ndarray
    method: str
    basis: str
    charge: int = 0
    multiplicity: int = 1
    max_iterations: int = 100
    convergence_hartree: float = 1e-10
    keywords: dict = field(default_factory=dict)
    threads: int = 1
    timeout_s: float | None = None

    @classmethod
    def create(cls, symbols, positions_a, method: str, basis: str, **kwargs) -> CalculationRequest:
        """Validate symbols and geometry (clear errors before any engine starts)."""
        syms = tuple(normalize_symbol(s) for s in symbols)
        pos = validate_positions(positions_a, len(syms))
        if pos.ndim != 2:
            raise ValueError(f"one calculation takes one geometry (atoms, 3); got {pos.shape}")
        return cls(symbols=syms, positions_a=pos, method=method.lower(), basis=basis.lower(), **kwargs)

    def to_json(self) -> dict:
        """A JSON-ready dict (floats round-trip exactly through Python's json)."""
        return {**{f.name: getattr(self, f.name) for f in fields(self)},
                "symbols": list(self.symbols), "positions_a": self.positions_a.tolist()}

    @classmethod
    def from_json(cls, data: dict) -> CalculationRequest:
        """The inverse of ``to_json``."""
        return cls(**{**data, "symbols": tuple(data["symbols"]), "positions_a": np.asarray(data["positions_a"])})


@dataclass(frozen=True, eq=False)
class CalculationResult:
    """Energy (eV) and forces (eV/Angstrom) in the frame of the request's geometry, with provenance."""

    energy_ev: float
    forces_ev_per_a: np.ndarray
    energy_hartree: float
    gradient_hartree_per_bohr: np.ndarray
    wall_time_s: float
    provenance: dict

    def to_json(self) -> dict:
        """A JSON-ready dict (floats round-trip exactly through Python's json)."""
        return {**{f.name: getattr(self, f.name) for f in fields(self)},
                "forces_ev_per_a": self.forces_ev_per_a.tolist(),
                "gradient_hartree_per_bohr": self.gradient_hartree_per_bohr.tolist()}

    @classmethod
    def from_json(cls, data: dict) -> CalculationResult:
        """The inverse of ``to_json``."""
        return cls(**{**data, "forces_ev_per_a": np.asarray(data["forces_ev_per_a"], dtype=float),
                      "gradient_hartree_per_bohr": np.asarray(data["gradient_hartree_per_bohr"], dtype=float)})


@runtime_checkable
class ReferenceEngine(Protocol):
    """A program that computes energies and analytic gradients."""

    name: str

    def found(self) -> tuple[bool, str]:
        """Whether the engine can run here, and if not, why and how to fix it."""
        ...

    def compute(self, request: CalculationRequest) -> CalculationResult:
        """Run one calculation; raise InputError, ConvergenceError, ResourceError or TransientError."""
        ...

    def close(self) -> None:
        """Release what the engine holds (a child process); it starts again on the next compute."""
        ...

    def computes_in_process(self, timeout_s: float | None) -> bool:
        """Whether ``compute`` runs the calculation in this process (holding it): then parallel
        workers must be processes; otherwise threads that wait for a subprocess suffice."""
        ...
