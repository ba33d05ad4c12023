"""Shared fixtures and named tolerances.

Compiled simulators are cached per (molecule, config) for the whole session: JAX compilation
dominates the cost of these tests. Tests marked ``psi4`` or ``slurm`` skip when the program is
missing on a laptop but fail under ``CI=true``: CI must prove the real thing runs.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import numpy as np
import pytest

from qff_core.execution.exact import ExactSimulator, compile_exact, enable_compilation_cache
from qff_core.models import ModelConfig, build_model
from qff_core.molecules import builtin_molecule

# Named tolerances (float64): relative invariance of energies, equivariance of forces,
# forces against central finite differences (eV/Angstrom).
ENERGY_INVARIANCE_TOL = 1e-10
FORCE_EQUIVARIANCE_TOL = 1e-9
FINITE_DIFFERENCE_TOL = 1e-6

TEST_DEPTH = 2  # enough layers to exercise the scan; keeps compilation short
TEST_BATCH = 40  # padded to the 64 bucket: most tests share one compilation per model


def pytest_configure(config):
    # Prefect: an isolated home (database, results) per run, no telemetry.
    os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="qff-prefect-"))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # Compiled programs are cached in the checkout (ignored by git): a fresh clone compiles
    # everything once, later runs of the suite skip XLA compilation.
    os.environ.setdefault("QFF_JAX_CACHE_DIR", str(config.rootpath / ".jax_cache"))
    enable_compilation_cache(os.environ["QFF_JAX_CACHE_DIR"])


# pytest mark -> the command whose absence skips the test (outside CI)
REQUIRED_COMMANDS = {"psi4": "psi4", "slurm": "sinfo"}


def _slurm_controller_answers() -> bool:
    """sinfo installed and its controller reachable (installed but stopped daemons count as missing)."""
    import subprocess

    try:
        return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def pytest_collection_modifyitems(config, items):
    in_ci = os.environ.get("CI", "").lower() in ("1", "true", "yes")
    if in_ci:
        return
    available: dict[str, bool] = {}
    for item in items:
        for mark, command in REQUIRED_COMMANDS.items():
            if mark not in item.keywords:
                continue
            if mark not in available:
                available[mark] = shutil.which(command) is not None and (mark != "slurm" or _slurm_controller_answers())
            if not available[mark]:
                item.add_marker(pytest.mark.skip(reason=f"{command} not installed or its service not running "
                                                        "(required under CI=true)"))


_CACHE: dict[tuple, ExactSimulator] = {}


def simulator_for(molecule: str, **config) -> ExactSimulator:
    """A compiled simulator of a built-in molecule, cached for the session."""
    cfg = ModelConfig.model_validate({"depth": TEST_DEPTH, **config})
    key = (molecule, tuple(sorted(cfg.model_dump().items())))
    if key not in _CACHE:
        _CACHE[key] = compile_exact(build_model(builtin_molecule(molecule), cfg))
    return _CACHE[key]


@pytest.fixture(scope="session")
def lih(tmp_path_factory) -> str:
    """10 LiH geometries, HF/STO-3G (PySCF): a 2-qubit model at depth 1, seconds to make."""
    from qff_core.datagen import GenerateSettings, compute_pending, prepare_dataset

    path = tmp_path_factory.mktemp("data") / "lih.zarr"
    settings = GenerateSettings(molecule="lih", engine="pyscf", method="hf", basis="sto-3g", samples=10,
                                temperature_k=1000.0, seed=2, out=str(path))
    assert compute_pending(prepare_dataset(settings), settings)["n_done"] == 10
    return str(path)


@pytest.fixture(scope="session")
def prefect_server():
    """One temporary Prefect API server (subprocess, SQLite) for every flow test of the session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20261125)
