"""Psi4, in this process through its Python API when ``import psi4`` works, else through the
``psi4`` executable with a QCSchema JSON file.

The mode is explicit and recorded in each result's provenance (``"mode"``): ``auto`` (the
default) takes the Python API when psi4 imports here and the executable otherwise;
``QFF_PSI4_MODE=in-process|executable`` (or ``Psi4Engine(mode=...)``) forces one, and forcing
``in-process`` where psi4 does not import is a ResourceError that says so. Both modes send the
same QCSchema input document (``schema_input``) and read the same output fields.

Executable: Debian's psi4 1.3.2 runs ``psi4 --json in.json`` with ``"schema_name":
"qcschema_input"`` and geometry in Bohr, and writes the result back into the same file (exit
code 0 even on failure: ``success`` tells); newer releases take ``--qcschema``, read from
``psi4 --help``. ``fix_com`` and ``fix_orientation`` keep the gradient in the frame of the
geometry sent. Conventional integrals (``scf_type pk``) unless the request says otherwise, so
that results agree with PySCF to ~1e-10 Eh. Open shells (multiplicity > 1) get ``reference uhf``
(``uks`` for a DFT functional) unless the keywords name a reference: Psi4's default RHF refuses
them, and PySCF runs UHF/UKS there. ``timeout_s`` stops the executable; a calculation in this
process cannot be interrupted, so the in-process mode does not enforce it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from functools import cache
from pathlib import Path

import numpy as np

from qff_core.errors import CalculationTimeoutError, ConvergenceError, EngineError, InputError, ResourceError
from qff_core.processes import pid_alive
from qff_core.reference.base import CalculationRequest, CalculationResult
from qff_core.units import BOHR_ANGSTROM, HARTREE_EV

INSTALL_HINT = "install it with `apt-get install psi4` (Debian/Ubuntu) or `conda install -c conda-forge psi4`"
MODE_ENV = "QFF_PSI4_MODE"
MODES = ("auto", "in-process", "executable")
_INPUT_ERRORS = ("ValidationError", "BasisSetNotFound", "UpgradeHelper", "KeyError", "ValueError", "TypeError")
_API_LOCK = threading.Lock()  # psi4 keeps global state: one in-process calculation at a time
WAVEFUNCTION_METHODS = frozenset({
    "hf", "scf", "mp2", "mp2.5", "mp3", "lccd", "ccd", "cc2", "ccsd", "ccsd(t)", "ccsd(at)", "a-ccsd(t)", "eom-ccsd",
    "omp2", "omp2.5", "omp3", "olccd", "remp2", "oremp2", "dcft", "dct",
})
"""Psi4's gradient methods that are not DFT (its ``proc_table``): open shells run them on a UHF reference."""
_FATAL_ERROR = re.compile(r"Fatal Error:[ \t]*(.+?)[ \t]*(?:\\n|\n|$)")
"""Psi4's C++ errors (PsiException) state their reason in a ``Fatal Error:`` line, also inside a repr."""
SCRATCH_PREFIX = "qff-psi4-"
"""Scratch folders are ``<tmp>/qff-psi4-<pid>-<random>``: those of processes that are gone are removed."""


@cache
def remove_stale_scratch() -> None:
    """Remove scratch folders left by psi4 calculations of processes that were killed (once per process)."""
    for folder in Path(tempfile.gettempdir()).glob(f"{SCRATCH_PREFIX}*-*"):
        pid = folder.name[len(SCRATCH_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


@cache
def _cli(executable: str) -> tuple[str, str]:
    """(version, JSON flag) of a psi4 executable (run in a scratch directory: psi4 leaves timer.dat)."""
    with tempfile.TemporaryDirectory(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-") as scratch:
        def run(flag: str) -> str:
            return subprocess.run([executable, flag], capture_output=True, text=True, timeout=60, cwd=scratch).stdout

        version, helptext = run("--version").strip(), run("--help")
    return version, "--qcschema" if "--qcschema" in helptext else "--json"


@cache
def python_api() -> tuple[bool, str]:
    """Whether ``import psi4`` works in this Python: (True, version and place) or (False, why)."""
    try:
        import psi4
    except Exception as exc:  # ImportError, or an install that fails inside psi4's own imports
        return False, f"{type(exc).__name__}: {exc}"
    return True, f"psi4 {psi4.__version__} ({Path(psi4.__file__).parent})"


def choose_mode(requested: str, api: tuple[bool, str]) -> str:
    """``in-process`` or ``executable`` for a requested mode, given ``python_api()``'s answer."""
    if requested not in MODES:
        raise InputError(f"psi4 mode {requested!r} is not one of {', '.join(MODES)} (set {MODE_ENV} or mode=)")
    importable, why = api
    if requested == "in-process" and not importable:
        raise ResourceError(
            f"psi4 in-process mode was requested, but `import psi4` fails in {sys.executable} ({why}); install "
            f"psi4 into this environment (`conda install -c conda-forge psi4`) or set {MODE_ENV}=executable")
    if requested == "auto":
        return "in-process" if importable else "executable"
    return requested


class Psi4Engine:
    """The ``psi4`` engine: the Python API in this process, or one psi4 process per calculation;
    either way in a scratch directory of its own per calculation."""

    name = "psi4"

    def __init__(self, executable: str | None = None, memory_bytes: int = 2_000_000_000,
                 mode: str | None = None) -> None:
        self.executable = executable or shutil.which("psi4")
        self.memory_bytes = memory_bytes
        self.requested_mode = (mode or os.environ.get(MODE_ENV) or "auto").strip().lower()
        if self.requested_mode not in MODES:
            raise InputError(f"psi4 mode {self.requested_mode!r} is not one of {', '.join(MODES)} "
                             f"(from {'mode=' if mode else MODE_ENV})")

    @property
    def mode(self) -> str:
        """How ``compute`` runs psi4 here: ``in-process`` or ``executable`` (ResourceError when
        in-process is forced and psi4 does not import)."""
        if self.requested_mode == "executable":  # do not import psi4 at all
            return "executable"
        return choose_mode(self.requested_mode, python_api())

    def found(self) -> tuple[bool, str]:
        """Whether psi4 runs here, in which mode, and if not why."""
        try:
            mode = self.mode
        except ResourceError as exc:
            return False, str(exc)
        if mode == "in-process":
            return True, f"{python_api()[1]}, in-process (Python API)"
        no_api = "" if self.requested_mode == "executable" else f"`import psi4` fails ({python_api()[1]}) and "
        if not self.executable or not Path(self.executable).exists():
            return False, f"{no_api}no psi4 executable on PATH; {INSTALL_HINT}"
        try:
            version, flag = _cli(self.executable)
        except (OSError, subprocess.SubprocessError) as exc:
            return False, f"{no_api}{self.executable} does not run ({exc}); {INSTALL_HINT}"
        return True, f"psi4 {version} at {self.executable} ({flag}), executable"

    def computes_in_process(self, timeout_s: float | None) -> bool:
        """True in the in-process mode; the executable is a process per calculation, so Dask
        workers for it can be threads."""
        return self.mode == "in-process"

    def close(self) -> None:
        """Nothing to release."""

    def schema_input(self, request: CalculationRequest) -> dict:
        """The QCSchema input document for ``request`` (geometry in Bohr), for either mode."""
        keywords = {
            "scf_type": "pk",
            "e_convergence": request.convergence_hartree,
            "d_convergence": request.convergence_hartree,
            "maxiter": request.max_iterations,
            **({"mp2_type": "conv"} if request.method == "mp2" else {}),  # psi4 defaults to DF-MP2
            **open_shell_reference(request),
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
        mode, document = self.mode, self.schema_input(request)
        t0 = time.perf_counter()
        remove_stale_scratch()
        with tempfile.TemporaryDirectory(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-") as scratch:
            if mode == "in-process":
                from qff_core.reference.psi4_api import run_gradient

                interface = "python API"
                with _API_LOCK:
                    out = run_gradient(document, scratch)
            else:
                interface = f"executable {_cli(self.executable)[1]}"
                out = self._run_executable(document, scratch, request.timeout_s)
        return result_from_output(out, request, document, mode=mode, interface=interface,
                                  wall_time_s=time.perf_counter() - t0)

    def _run_executable(self, document: dict, scratch: str, timeout_s: float | None) -> dict:
        """``psi4 --json`` (or ``--qcschema``) on ``document`` in ``scratch``; the output document."""
        flag = _cli(self.executable)[1]
        path = Path(scratch) / "calc.json"
        path.write_text(json.dumps(document))
        env = {**os.environ, "PSI_SCRATCH": scratch}
        try:
            proc = subprocess.run([self.executable, flag, path.name], cwd=scratch, env=env, capture_output=True,
                                  text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise CalculationTimeoutError(
                f"psi4 {document['model']['method']}/{document['model']['basis']} did not finish within "
                f"{timeout_s:g} s (timeout_s) and was stopped; raise timeout_s, or choose a cheaper method or basis"
            ) from None
        try:
            out = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            out = {}
        # psi4 writes its result over the input file; a crash leaves the input (no "success") or nothing.
        if "success" not in out:
            said = (proc.stderr or proc.stdout or "").strip()[-800:] or "no output"
            raise EngineError(f"psi4 exited with status {proc.returncode} and left no result: {said}")
        return out


def open_shell_reference(request: CalculationRequest) -> dict:
    """``{"reference": "uhf"}`` (``"uks"`` for DFT) for an open shell whose keywords name no reference, else
    nothing: Psi4's default RHF stops with 'RHF reference is only for singlets', and PySCF runs UHF/UKS there."""
    if request.multiplicity == 1 or any(key.lower() == "reference" for key in request.keywords):
        return {}
    return {"reference": "uhf" if request.method in WAVEFUNCTION_METHODS else "uks"}


def result_from_output(out: dict, request: CalculationRequest, document: dict, *, mode: str, interface: str,
                       wall_time_s: float) -> CalculationResult:
    """A result (eV, eV/Angstrom) from psi4's QCSchema output fields, the same for both modes; a
    failure is raised as the qff error class that says what to do."""
    if not out.get("success"):
        _raise_for(out.get("error") or {}, request)
    props = out.get("properties", {})
    energy = float(props.get("return_energy", out.get("extras", {}).get("qcvars", {}).get("CURRENT ENERGY")))
    gradient = np.asarray(out["return_result"], dtype=float).reshape(len(request.symbols), 3)
    return CalculationResult(
        energy_ev=energy * HARTREE_EV,
        forces_ev_per_a=-gradient * HARTREE_EV / BOHR_ANGSTROM,
        energy_hartree=energy,
        gradient_hartree_per_bohr=gradient,
        wall_time_s=wall_time_s,
        provenance={
            "engine": "psi4",
            "version": out.get("provenance", {}).get("version") or "unknown",
            "mode": mode,
            "interface": interface,
            "method": request.method,
            "basis": request.basis,
            "keywords": dict(document["keywords"]),
            "scf_iterations": props.get("scf_iterations"),
            "wall_time_s": wall_time_s,
        },
    )


def psi4_says(kind: str, message: str) -> str:
    """Psi4's own reason in a failure's traceback: its ``Fatal Error:`` lines (a C++ error, whose traceback
    ends in the C++ signature of PsiException), else the lines of the ``kind: ...`` exception, else the last."""
    fatal = list(dict.fromkeys(_FATAL_ERROR.findall(message)))
    if fatal:
        return "; ".join(reason.rstrip(".") for reason in fatal)
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    exception_line = re.compile(rf"(?:[\w.]+\.)?{re.escape(kind)}:\s*(.*)")
    for i in range(len(lines) - 1, -1, -1):
        found = exception_line.fullmatch(lines[i])
        if found:
            said = " ".join([found.group(1), *lines[i + 1:]]).strip()
            if said:
                return said if len(said) <= 1000 else said[:1000] + " ..."
    return lines[-1] if lines else kind


def _raise_for(error: dict, request: CalculationRequest) -> None:
    """Raise the qff error class for a psi4 failure, with psi4's own reason in the message."""
    kind = str(error.get("error_type", "unknown"))
    message = str(error.get("error_message", "")).strip()
    last = psi4_says(kind, message)
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
