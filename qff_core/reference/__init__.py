"""Reference engines (ab initio energies and forces) behind one protocol, looked up by name.

``get_engine("psi4")`` / ``get_engine("pyscf")``; ``found()`` lists which can run here and why
not. Engines convert Hartree and Bohr to eV and Angstrom once, with ``qff_core.units``.
"""

from __future__ import annotations

from collections.abc import Callable

from qff_core.errors import InputError, ResourceError
from qff_core.reference.base import CalculationRequest, CalculationResult, ReferenceEngine

_FACTORIES: dict[str, Callable[[], ReferenceEngine]] = {}


def register_engine(name: str, factory: Callable[[], ReferenceEngine]) -> None:
    """Make an engine available under ``name`` (a factory: engines are created on use)."""
    _FACTORIES[name.lower()] = factory


def _register_builtins() -> None:
    if "psi4" not in _FACTORIES:
        from qff_core.reference.psi4 import Psi4Engine
        from qff_core.reference.pyscf import PySCFEngine

        register_engine("psi4", Psi4Engine)
        register_engine("pyscf", PySCFEngine)


def get_engine(name: str, *, require: bool = True) -> ReferenceEngine:
    """The engine called ``name``; with ``require``, ResourceError when it cannot run here."""
    _register_builtins()
    try:
        engine = _FACTORIES[name.lower()]()
    except KeyError:
        raise InputError(f"unknown engine {name!r}; choose one of {sorted(_FACTORIES)}") from None
    if require:
        ok, why = engine.found()
        if not ok:
            raise ResourceError(f"engine {name!r} cannot run here: {why}")
    return engine


def found() -> dict[str, tuple[bool, str]]:
    """Every registered engine with (available, reason)."""
    _register_builtins()
    return {name: factory().found() for name, factory in sorted(_FACTORIES.items())}


__all__ = ["CalculationRequest", "CalculationResult", "ReferenceEngine", "found", "get_engine", "register_engine"]
