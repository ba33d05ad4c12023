"""Psi4 in-process (Python API) or executable: the choice, its override, its report, and both paths.

This venv cannot ``import psi4`` (Debian's psi4 is built for the system Python), so the
in-process code (``qff_core/reference/psi4_api.py``, which imports nothing from qff) is run
for real under the Python of the psi4 installation, and its output goes through the same
parser as the executable's.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from qff_core.errors import InputError, ResourceError
from qff_core.molecules import builtin_molecule
from qff_core.reference import CalculationRequest, get_engine
from qff_core.reference.psi4 import MODE_ENV, Psi4Engine, choose_mode, python_api, result_from_output

API_MODULE = Path(__file__).resolve().parents[1] / "qff_core" / "reference" / "psi4_api.py"
SAME_PROGRAM_ENERGY_TOL_EH = 1e-10  # one psi4, two ways in: only SCF convergence noise
SAME_PROGRAM_GRADIENT_TOL = 1e-8  # Eh/bohr
IMPORTABLE = (True, "psi4 1.9.1 (/opt/conda/lib/python3.11/site-packages/psi4)")
MISSING = (False, "ModuleNotFoundError: No module named 'psi4'")


@pytest.mark.parametrize(("requested", "api", "mode"), [
    ("auto", IMPORTABLE, "in-process"),
    ("auto", MISSING, "executable"),
    ("executable", IMPORTABLE, "executable"),
    ("in-process", IMPORTABLE, "in-process"),
])
def test_mode_choice(requested, api, mode):
    assert choose_mode(requested, api) == mode


def test_forced_in_process_without_psi4_says_what_to_do():
    with pytest.raises(ResourceError, match=rf"(?s)import psi4.*No module named 'psi4'.*{MODE_ENV}=executable"):
        choose_mode("in-process", MISSING)
    with pytest.raises(InputError, match="auto, in-process, executable"):
        choose_mode("fast", IMPORTABLE)


def test_mode_comes_from_the_environment_or_the_constructor(monkeypatch):
    importable = python_api()[0]
    assert Psi4Engine().mode == ("in-process" if importable else "executable")  # auto
    assert Psi4Engine(mode="executable").mode == "executable"
    monkeypatch.setenv(MODE_ENV, "executable")
    assert Psi4Engine().mode == "executable"
    assert not Psi4Engine().computes_in_process(None)  # Dask workers may be threads
    monkeypatch.setenv(MODE_ENV, "bogus")
    with pytest.raises(InputError, match=f"bogus.*{MODE_ENV}"):
        Psi4Engine()
    if not importable:  # this venv: forcing in-process fails clearly, before any calculation
        monkeypatch.setenv(MODE_ENV, "in-process")
        ok, why = Psi4Engine().found()
        assert not ok and "`import psi4` fails" in why and f"{MODE_ENV}=executable" in why
        with pytest.raises(ResourceError, match="in-process mode was requested"):
            get_engine("psi4")


def water(method="hf", basis="6-31g", **kw) -> CalculationRequest:
    x = builtin_molecule("h2o").positions_a + np.array([0.1, -0.3, 0.2])
    x[1] += [0.05, -0.02, 0.03]  # no symmetry left, arbitrary frame
    return CalculationRequest.create(("O", "H", "H"), x, method, basis, **kw)


@pytest.mark.psi4
def test_executable_mode_is_reported(monkeypatch):
    monkeypatch.setenv(MODE_ENV, "executable")
    result = get_engine("psi4").compute(water(basis="sto-3g"))
    assert result.provenance["mode"] == "executable" and result.provenance["interface"].startswith("executable --")


def psi4_own_python(cwd: Path) -> tuple[str, str]:
    """(interpreter, PYTHONPATH) under which ``import psi4`` works, from ``psi4 --psiapi-path``."""
    text = subprocess.run([shutil.which("psi4"), "--psiapi-path"], capture_output=True, text=True, cwd=cwd,
                          timeout=60, check=True).stdout
    exports = dict(re.findall(r"export (\w+)=(\S+?):\$\w+", text))
    python = next(p for p in (Path(exports["PATH"]) / n for n in ("python3", "python")) if p.exists())
    return str(python), exports["PYTHONPATH"]


RUN_API = """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("psi4_api", sys.argv[1])
api = importlib.util.module_from_spec(spec)
spec.loader.exec_module(api)
documents = json.load(open(sys.argv[2]))
json.dump([api.run_gradient(d, sys.argv[4]) for d in documents], open(sys.argv[3], "w"))
"""


@pytest.mark.psi4
def test_in_process_code_gives_what_the_executable_gives(tmp_path):
    engine = Psi4Engine(mode="executable")
    # No SCF failure here: after one, psi4 1.3.2 corrupts its heap and aborts at exit (the executable
    # too: status 134 with the error written into the JSON, which is all the executable path reads).
    requests = [water(), water("mp2"), water("b3lyp", "6-31g*", keywords={"dft_radial_points": 75}),
                water("b3lypx")]
    documents = [engine.schema_input(r) for r in requests]
    (tmp_path / "in.json").write_text(json.dumps(documents))
    (tmp_path / "scratch").mkdir()
    python, pythonpath = psi4_own_python(tmp_path)
    proc = subprocess.run(
        [python, "-c", RUN_API, str(API_MODULE), str(tmp_path / "in.json"), str(tmp_path / "out.json"),
         str(tmp_path / "scratch")],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": pythonpath}, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    outputs = json.loads((tmp_path / "out.json").read_text())
    for request, document, out in list(zip(requests, documents, outputs, strict=True))[:3]:
        here = result_from_output(out, request, document, mode="in-process", interface="python API",
                                  wall_time_s=0.0)
        there = engine.compute(request)
        assert here.provenance["mode"] == "in-process" and there.provenance["mode"] == "executable"
        assert here.provenance["version"] == there.provenance["version"]
        assert abs(here.energy_hartree - there.energy_hartree) < SAME_PROGRAM_ENERGY_TOL_EH, request.method
        assert np.abs(here.gradient_hartree_per_bohr - there.gradient_hartree_per_bohr).max() < \
            SAME_PROGRAM_GRADIENT_TOL, request.method
    assert outputs[3]["error"]["error_type"] == "ValidationError"
    with pytest.raises(InputError, match="b3lypx"):
        result_from_output(outputs[3], requests[3], documents[3], mode="in-process", interface="", wall_time_s=0)
