"""Psi4 through its QCSchema JSON interface (the ``psi4`` executable).

Debian's psi4 1.3.2 runs ``psi4 --json in.json`` with ``"schema_name": "qcschema_input"``
and geometry in Bohr, and writes the result back into the same file (exit code 0 even on
failure: ``success`` tells). Newer releases take ``--qcschema`` instead; the flag is read
from ``psi4 --help``. ``fix_com`` and ``fix_orientation`` keep the gradient in the frame of
the geometry sent. Conventional integrals (``scf_type pk``) unless the request says otherwise,
so that results agree with PySCF to ~1e-10 Eh.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from functools import cache
from pathlib import Path

import numpy as np

from qff_core.errors import ConvergenceError, EngineError, InputError, ResourceError, TransientError
from qff_core.reference.base import CalculationRequest, CalculationResult
from qff_core.units import BOHR_ANGSTROM, HARTREE_EV

INSTALL_HINT = "install it with `apt-get install psi4` (Debian/Ubuntu) or `conda install -c conda-forge psi4`"
_INPUT_ERRORS = ("ValidationError", "BasisSetNotFound", "UpgradeHelper", "KeyError", "ValueError", "TypeError")


@cache
def _cli(executable: str) -> tuple[str, str]:
    """(version, JSON flag) of a psi4 executable (run in a scratch directory: psi4 leaves timer.dat)."""
    with tempfile.TemporaryDirectory(prefix="qff-psi4-") as scratch:
        def run(flag: str) -> str:
            return subprocess.run([executable, flag], capture_output=True, text=True, timeout=60, cwd=scratch).stdout

        version, helptext = run("--version").strip(), run("--help")
    return version, "--qcschema" if "--qcschema" in helptext else "--json"


class Psi4Engine:
    """The ``psi4`` engine: one process per calculation, in its own scratch directory."""

    name = "psi4"

    def __init__(self, executable: str | None = None, memory_bytes: int = 2_000_000_000) -> None:
        self.executable = executable or shutil.which("psi4")
        self.memory_bytes = memory_bytes

    def found(self) -> tuple[bool, str]:
        """Whether the psi4 executable runs here."""
        if not self.executable or not Path(self.executable).exists():
            return False, f"no psi4 executable on PATH; {INSTALL_HINT}"
        try:
            version, flag = _cli(self.executable)
        except (OSError, subprocess.SubprocessError) as exc:
            return False, f"{self.executable} does not run ({exc}); {INSTALL_HINT}"
        return True, f"psi4 {version} at {self.executable} ({flag})"

    def computes_in_process(self, timeout_s: float | None) -> bool:
        """False: each calculation is a psi4 process, so Dask workers for it can be threads."""
        return False

    def close(self) -> None:
        """Nothing to release: each calculation is its own process."""

    def schema_input(self, request: CalculationRequest) -> dict:
        """The QCSchema input document for ``request`` (geometry in Bohr)."""
        keywords = {
            "scf_type": "pk",
            "e_convergence": request.convergence_hartree,
            "d_convergence": request.convergence_hartree,
            "maxiter": request.max_iterations,
            **({"mp2_type": "conv"} if request.method == "mp2" else {}),  # psi4 defaults to DF-MP2
            **request.keywords,
        }
        return {
            "schema_name": "qcschema_input",
            "schema_version": 1,
            "molecule": {
                "symbols": list(request.symbols),
                "geometry": (request.positions_a / BOHR_ANGSTROM).ravel().tolist(),
                "molecular_charge": request.charge,
                "molecular_multiplicity": request.multiplicity,
                "fix_com": True,
                "fix_orientation": True,
            },
            "driver": "gradient",
            "model": {"method": request.method, "basis": request.basis},
            "keywords": keywords,
            "nthreads": request.threads,
            "memory": self.memory_bytes,
            "return_output": False,
        }

    def compute(self, request: CalculationRequest) -> CalculationResult:
        """Run psi4 on one geometry; errors are mapped to qff's exception classes."""
        ok, why = self.found()
        if not ok:
            raise ResourceError(why)
        version, flag = _cli(self.executable)
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="qff-psi4-") as scratch:
            path = Path(scratch) / "calc.json"
            path.write_text(json.dumps(self.schema_input(request)))
            env = {**os.environ, "PSI_SCRATCH": scratch}
            try:
                proc = subprocess.run(
                    [self.executable, flag, path.name], cwd=scratch, env=env, capture_output=True, text=True,
                    timeout=request.timeout_s,
                )
            except subprocess.TimeoutExpired:
                raise TransientError(f"psi4 did not finish within {request.timeout_s} s") from None
            try:
                out = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError):
                raise EngineError(
                    f"psi4 exited with status {proc.returncode} and left no readable result: "
                    f"{(proc.stderr or proc.stdout).strip()[-800:]}"
                ) from None
        wall = time.perf_counter() - t0
        if not out.get("success"):
            _raise_for(out.get("error") or {}, request)
        props = out.get("properties", {})
        energy = float(props.get("return_energy", out["extras"]["qcvars"]["CURRENT ENERGY"]))
        gradient = np.asarray(out["return_result"], dtype=float).reshape(len(request.symbols), 3)
        return CalculationResult(
            energy_ev=energy * HARTREE_EV,
            forces_ev_per_a=-gradient * HARTREE_EV / BOHR_ANGSTROM,
            energy_hartree=energy,
            gradient_hartree_per_bohr=gradient,
            wall_time_s=wall,
            provenance={
                "engine": "psi4",
                "version": out.get("provenance", {}).get("version", version),
                "interface": f"executable {flag}",
                "method": request.method,
                "basis": request.basis,
                "keywords": {k: v for k, v in self.schema_input(request)["keywords"].items()},
                "scf_iterations": props.get("scf_iterations"),
                "wall_time_s": wall,
            },
        )


def _raise_for(error: dict, request: CalculationRequest) -> None:
    kind = str(error.get("error_type", "unknown"))
    message = str(error.get("error_message", "")).strip()
    last = message.splitlines()[-1] if message else kind
    if "Convergence" in kind or "could not converge" in message.lower():
        raise ConvergenceError(
            f"psi4 {request.method}/{request.basis}: {last} (raise max_iterations, loosen convergence "
            "or start from a better geometry)"
        )
    if kind == "BasisSetNotFound":
        raise InputError(f"psi4 does not know the basis set {request.basis!r} for {sorted(set(request.symbols))}")
    if kind in _INPUT_ERRORS or "not found" in message.lower() or "not available" in message.lower():
        raise InputError(f"psi4 rejected {request.method}/{request.basis}: {kind}: {last}")
    raise EngineError(f"psi4 failed ({kind}): {last}")
