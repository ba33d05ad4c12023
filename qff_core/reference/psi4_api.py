"""Psi4 through its Python API, in this process: the same QCSchema input document and output
fields as the ``psi4 --json`` executable, so one parser reads both.

This module imports nothing from qff (only numpy, and psi4 when called), so it also runs under
the Python that a psi4 installation brings (Debian: ``/usr/bin/python3`` with
``PYTHONPATH=/usr/lib/x86_64-linux-gnu``; see ``psi4 --psiapi-path``). Written against the API
that psi4 1.3 to 1.9 share: ``core.Molecule.from_arrays``, ``set_options``, ``set_memory``,
``set_num_threads``, ``gradient``, ``Matrix.to_array``, ``core.variable``, ``core.clean*``.

Known: after an SCF convergence failure psi4 1.3.2 corrupts its heap and aborts when the
process exits (the executable too, with exit status 134 after writing its JSON). In-process,
that process is the Dask worker; with psi4 1.3 prefer ``QFF_PSI4_MODE=executable``.
"""

from __future__ import annotations

import os
import traceback

import numpy as np


def run_gradient(document: dict, scratch: str) -> dict:
    """Run a ``qcschema_input`` gradient document with psi4's Python API.

    Returns the fields of a QCSchema output that ``psi4 --json`` writes: ``success``,
    ``return_result`` (flat gradient, Eh/bohr), ``properties`` (``return_energy`` in Eh,
    ``scf_iterations``), ``provenance``; on failure ``error`` with ``error_type`` and
    ``error_message``. ``scratch``: a directory for psi4's scratch and output files. psi4 keeps
    global state (options, variables), so calls must not overlap within one process.
    """
    import psi4

    out: dict = {"success": False, "provenance": {"creator": "Psi4", "version": psi4.__version__,
                                                  "routine": "qff_core.reference.psi4_api.run_gradient"}}
    try:
        psi4.core.IOManager.shared_object().set_default_path(scratch)
        psi4.core.set_output_file(os.path.join(scratch, "output.dat"), False)
        psi4.core.clean()
        psi4.core.clean_options()
        psi4.core.clean_variables()
        psi4.set_memory(int(document["memory"]))
        psi4.set_num_threads(int(document["nthreads"]), quiet=True)
        spec = document["molecule"]
        molecule = psi4.core.Molecule.from_arrays(
            elem=list(spec["symbols"]), geom=np.reshape(spec["geometry"], (-1, 3)), units="Bohr",
            molecular_charge=spec["molecular_charge"], molecular_multiplicity=spec["molecular_multiplicity"],
            fix_com=spec["fix_com"], fix_orientation=spec["fix_orientation"],
        )
        psi4.set_options({"basis": document["model"]["basis"], **document["keywords"]})
        gradient = psi4.gradient(document["model"]["method"], molecule=molecule)
        properties = {"return_energy": float(psi4.core.variable("CURRENT ENERGY"))}
        if psi4.core.has_variable("SCF ITERATIONS"):
            properties["scf_iterations"] = int(psi4.core.variable("SCF ITERATIONS"))
        out.update(success=True, return_result=np.asarray(gradient.to_array(), dtype=float).ravel().tolist(),
                   properties=properties)
    except Exception as exc:  # reported like the executable reports it; the caller maps the type
        out["error"] = {"error_type": type(exc).__name__, "error_message": traceback.format_exc() or str(exc)}
    finally:
        psi4.core.clean()
    return out
