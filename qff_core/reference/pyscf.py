"""PySCF: HF, DFT (any libxc functional) and MP2 energies with analytic gradients.

In this process when the request has no ``timeout_s``; with one, in a child process that is
killed when the time is up (``pyscf_process``). Basis sets use Cartesian or spherical d functions
as Psi4's basis files say (``uses_cartesian_d``); a mismatch costs ~1e-3 Eh for 6-31G*, 4e-4 Eh
for 6-311G*. Open shells (multiplicity > 1) are unrestricted, UHF or UKS, as the psi4 engine asks
of Psi4.
"""

from __future__ import annotations

import re
import time
import warnings

import numpy as np

from qff_core.errors import ConvergenceError, InputError, ResourceError
from qff_core.reference.base import CalculationRequest, CalculationResult
from qff_core.reference.pyscf_process import PySCFProcess
from qff_core.units import BOHR_ANGSTROM, HARTREE_EV

WAVEFUNCTION_METHODS = ("hf", "scf", "mp2")
KEYWORDS = {"grid": "DFT integration grid as (radial, angular) points per atom, e.g. [99, 590]"}


def check_keywords(method: str, keywords: dict) -> None:
    """InputError for a keyword this engine would ignore (psi4 refuses unknown options; PySCF has none to refuse
    with, and a misspelt one would be recorded in the level of theory while doing nothing)."""
    unknown = sorted(set(keywords) - set(KEYWORDS))
    if unknown:
        known = "; ".join(f"{k}: {v}" for k, v in KEYWORDS.items())
        raise InputError(f"the pyscf engine has no keyword {', '.join(map(repr, unknown))} (it knows {known}); "
                         "max_iterations is a setting of its own")
    grid = keywords.get("grid")
    if grid is not None:
        if method.lower() in WAVEFUNCTION_METHODS:
            raise InputError(f"the pyscf keyword 'grid' is for DFT functionals; {method} uses no grid")
        ok = isinstance(grid, list | tuple) and len(grid) == 2 and all(
            isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in grid)
        if not ok:
            raise InputError(f"the pyscf keyword 'grid' must be two positive whole numbers (radial, angular), "
                             f"e.g. [99, 590]; got {grid!r}")


CARTESIAN_BASIS_SETS = frozenset({"dz", "lanl2dz"})
"""Cartesian sets that PySCF and Psi4 share besides the Pople families, in ``basis_key`` form. Not "dzp": PySCF's
DZP is Jorge's, a different set from Psi4's (Dunning's), so no d convention makes the two agree."""
_CARTESIAN_POPLE = re.compile(r"(321|431|631)(?!1)")  # 3-21G, 4-31G, 6-31G...; 6-311G is spherical


def basis_key(basis: str) -> str:
    """A basis name as PySCF looks it up (lower case, no '-', '_' or blanks): '6-31G*' and '631g*' are one set."""
    return re.sub(r"[-_\s]", "", basis.lower())


def uses_cartesian_d(basis: str) -> bool:
    """Whether ``basis`` is defined with Cartesian d functions, as Psi4's basis file headers say: the 3-21G and
    6-31G families (and 4-31G, which Psi4 lacks), DZ and LANL2DZ are; 6-311G, Dunning cc, def2 and the rest are
    spherical."""
    key = basis_key(basis)
    return key in CARTESIAN_BASIS_SETS or _CARTESIAN_POPLE.match(key) is not None


class PySCFEngine:
    """The ``pyscf`` engine (pip-installable, always embedded)."""

    name = "pyscf"

    def found(self) -> tuple[bool, str]:
        """Whether PySCF imports here."""
        try:
            import pyscf
        except ImportError:
            return False, "PySCF is not installed; pip install pyscf"
        return True, f"pyscf {pyscf.__version__} (in process)"

    def __init__(self) -> None:
        self._child: PySCFProcess | None = None

    def computes_in_process(self, timeout_s: float | None) -> bool:
        """Without a timeout the calculation holds this process (and its GIL); with one it runs in
        a child, so Dask workers for it can be threads."""
        return timeout_s is None

    def compute(self, request: CalculationRequest) -> CalculationResult:
        """Run one calculation: in a child process that is stopped after ``request.timeout_s``
        seconds (CalculationTimeoutError), or in this process when there is no timeout."""
        if request.timeout_s is None:
            return self.compute_here(request)
        if self._child is None:
            self._child = PySCFProcess()
        return self._child.compute(request, request.timeout_s)

    @property
    def child_pid(self) -> int | None:
        """Process id of the child that runs calculations with a timeout, while it runs."""
        return None if self._child is None else self._child.pid

    def close(self) -> None:
        """Stop the child process, if one runs."""
        if self._child is not None:
            self._child.close()

    def compute_here(self, request: CalculationRequest) -> CalculationResult:
        """Run one calculation in this process (it cannot be interrupted)."""
        try:
            import pyscf
            from pyscf import dft, gto, lib, mp, scf
        except ImportError:
            raise ResourceError("PySCF is not installed; pip install pyscf") from None
        method = request.method
        check_keywords(method, request.keywords)
        t0 = time.perf_counter()
        lib.num_threads(request.threads)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # PySCF suggests basis-set-exchange for unknown names
                mol = gto.M(
                    atom=[(s, tuple(p)) for s, p in zip(request.symbols, request.positions_a, strict=True)],
                    basis=request.basis, unit="Angstrom", cart=uses_cartesian_d(request.basis),
                    charge=request.charge, spin=request.multiplicity - 1, verbose=0,
                )
        except (KeyError, RuntimeError, ValueError) as exc:
            raise InputError(f"PySCF cannot build {request.basis!r} for {request.symbols}: {exc}") from None
        restricted = request.multiplicity == 1
        reference = ("r" if restricted else "u") + ("hf" if method in WAVEFUNCTION_METHODS else "ks")
        if method in WAVEFUNCTION_METHODS:
            mf = scf.RHF(mol) if restricted else scf.UHF(mol)
        else:
            try:
                dft.libxc.parse_xc(method)
            except (KeyError, ValueError):
                raise InputError(
                    f"unknown method {method!r}: use hf, mp2 or a DFT functional such as b3lyp or pbe"
                ) from None
            mf = dft.RKS(mol) if restricted else dft.UKS(mol)
            mf.xc = method
            grid = request.keywords.get("grid")
            if grid is not None:
                mf.grids.atom_grid = tuple(grid)
        mf.conv_tol = request.convergence_hartree
        mf.max_cycle = request.max_iterations
        energy = mf.kernel()
        if not mf.converged:
            raise ConvergenceError(
                f"PySCF {method}/{request.basis}: SCF not converged in {request.max_iterations} iterations "
                "(raise max_iterations or start from a better geometry)"
            )
        if method == "mp2":
            post = mp.MP2(mf).run()
            energy = post.e_tot
            gradient = post.nuc_grad_method().kernel()
        else:
            gradient = mf.nuc_grad_method().kernel()
        wall = time.perf_counter() - t0
        gradient = np.asarray(gradient, dtype=float)
        return CalculationResult(
            energy_ev=float(energy) * HARTREE_EV,
            forces_ev_per_a=-gradient * HARTREE_EV / BOHR_ANGSTROM,
            energy_hartree=float(energy),
            gradient_hartree_per_bohr=gradient,
            wall_time_s=wall,
            provenance={
                "engine": "pyscf",
                "version": pyscf.__version__,
                "interface": "in process" if request.timeout_s is None else "child process",
                "method": method,
                "basis": request.basis,
                "reference": reference,
                "cartesian_d": uses_cartesian_d(request.basis),
                "scf_iterations": getattr(mf, "cycles", None),
                "converged": bool(mf.converged),
                "wall_time_s": wall,
            },
        )
