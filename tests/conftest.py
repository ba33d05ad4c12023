"""Shared fixtures and named tolerances.

Compiled simulators are cached per (molecule, config) for the whole session: JAX compilation
dominates the cost of these tests, so they also compile with XLA's backend (LLVM) optimisation off
(``XLA_OPT``): the same programs and numbers to rounding, about a quarter less suite time. Set
``--xla_backend_optimization_level`` in ``XLA_FLAGS`` yourself to test the optimised build (``make bench`` and
``make demo`` run it). Tests marked ``psi4`` or ``slurm`` skip when the program is
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

# Named tolerances (float64).
ENERGY_INVARIANCE_TOL = 1e-10  # relative change of energies under rotations, translations, permutations
FORCE_EQUIVARIANCE_TOL = 1e-9  # forces of a transformed geometry against the transformed forces
FINITE_DIFFERENCE_TOL = 1e-6  # eV/Angstrom: forces against central finite differences of the energy
GATE_TOL = 1e-13  # a closed-form gate or shift rule against its definition (matrix exponential, derivative)
FLOAT64_TOL = 1e-12  # one quantity computed two exact ways (strategies, batched vs single, by hand), O(1) values
METRIC_INVARIANCE_TOL = 1e-8  # relative change of a test metric of an invariant model on a transformed test set
BROKEN_SYMMETRY = 1e-6  # a model without a symmetry changes at least this much under it (relative)

TEST_DEPTH = 2  # enough layers to exercise the scan; keeps compilation short
TEST_BATCH = 40  # padded to the 64 bucket: most tests share one compilation per model
XLA_OPT = "--xla_backend_optimization_level=0"  # compile time, not run time, is what these tests wait for


def pytest_configure(config):
    # Before JAX starts its backend (at the first computation, after this), and inherited by the commands,
    # Dask workers and SLURM jobs that tests start.
    if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {XLA_OPT}".strip()
    # Prefect: an isolated home (database, results) per run and per xdist worker, no telemetry.
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker or "PREFECT_HOME" not in os.environ:
        os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix=f"qff-prefect-{worker or 'main'}-")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # A command run without --catalog records into a temporary catalog, never into the checkout's data_catalog/
    # (two test datasets once landed there, pointing into /tmp).
    os.environ["QFF_CATALOG"] = tempfile.mkdtemp(prefix=f"qff-catalog-{worker or 'main'}-")
    # Compiled programs are cached in the checkout (ignored by git): a fresh clone compiles
    # everything once, later runs of the suite skip XLA compilation.
    os.environ.setdefault("QFF_JAX_CACHE_DIR", str(config.rootpath / ".jax_cache"))
    enable_compilation_cache(os.environ["QFF_JAX_CACHE_DIR"])
    # Prefect's console log handler keeps the stderr it finds when logging is set up. Set it up now,
    # under the session's capture: set up inside a test with capsys, it would later write to a closed
    # stream (and a flow in the next test would fail).
    import prefect  # noqa: F401


# pytest mark -> the command whose absence skips the test (outside CI)
REQUIRED_COMMANDS = {"psi4": "psi4", "slurm": "sinfo"}


def _slurm_controller_answers() -> bool:
    """sinfo installed and its controller reachable (installed but stopped daemons count as missing)."""
    import subprocess

    try:
        return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


# The longest test files (seconds of one process on 2026-12-04: 264, 241, 132, 113, 109, 94, 78, 71); they run first
# so that `make test`'s workers, which take whole files in collection order, finish at about the same time.
LONGEST_FILES = ("test_exact_simulator.py", "test_qiskit_execution.py", "test_pipeline.py", "test_training.py",
                 "test_datagen.py", "test_reliability.py", "test_active.py", "test_operations.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: file order and test order kept
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


def _pyscf_dataset(tmp_path_factory, name: str, **settings) -> str:
    """A dataset computed for real with PySCF HF/STO-3G (seconds), once per session."""
    from qff_core.datagen import GenerateConfig, compute_pending, prepare_dataset

    path = tmp_path_factory.mktemp("data") / f"{name}.zarr"
    config = GenerateConfig(engine="pyscf", method="hf", basis="sto-3g", out=str(path), **settings)
    assert compute_pending(prepare_dataset(config), config)["n_done"] == config.samples
    return str(path)


@pytest.fixture(scope="session")
def lih(tmp_path_factory) -> str:
    """10 LiH geometries, HF/STO-3G (PySCF): a 2-qubit model at depth 1, seconds to make."""
    return _pyscf_dataset(tmp_path_factory, "lih", molecule="lih", samples=10, temperature_k=1000.0, seed=2)


@pytest.fixture(scope="session")
def h2o(tmp_path_factory) -> str:
    """40 H2O geometries at 800 K, HF/STO-3G (PySCF): seconds to make, real physics."""
    return _pyscf_dataset(tmp_path_factory, "h2o", molecule="h2o", samples=40, temperature_k=800.0, seed=3)


@pytest.fixture(scope="session")
def dimer_data(tmp_path_factory) -> str:
    """8 water-dimer geometries (the S22 dimer, 0.04 A Gaussian displacements), HF/STO-3G by PySCF."""
    from qff_core.datagen import GenerateConfig, compute_pending
    from qff_core.store.dataset import Dataset

    path = tmp_path_factory.mktemp("data") / "dimer.zarr"
    settings = GenerateConfig(molecule="h2o_dimer", engine="pyscf", method="hf", basis="sto-3g", samples=8,
                              out=str(path))
    molecule = builtin_molecule("h2o_dimer")
    dataset = Dataset.create(path, molecule, settings.level(), sampler={"kind": "gaussian", "sigma_a": 0.04})
    noise = np.random.default_rng(8).normal(0.0, 0.04, (8, molecule.n_atoms, 3))
    dataset.add_geometries(molecule.positions_a + noise)
    assert compute_pending(dataset, settings)["n_done"] == 8
    return str(path)


TRAINED_STEPS = 600  # a bound surface near the minimum (MD, vibrations) on every machine tried; 150 was not
TRAINED_EVERY = 200  # validation and checkpoints: the run keeps steps 200, 400 and 600


@pytest.fixture(scope="session")
def trained_h2o(tmp_path_factory, h2o) -> str:
    """An invariant H2O model (depth 2) trained for real on the ``h2o`` fixture, once per session."""
    from qff_core.run import TrainConfig
    from qff_core.training import train

    run_dir = tmp_path_factory.mktemp("runs") / "h2o_invariant"
    config = TrainConfig(dataset=h2o, model={"depth": TEST_DEPTH}, steps=TRAINED_STEPS, batch_size=16, test_size=8,
                         val_size=4, eval_every=TRAINED_EVERY, checkpoint_every=TRAINED_EVERY, learning_rate=2e-2,
                         final_learning_rate=2e-3)
    train(run_dir, config)
    return str(run_dir)


@pytest.fixture(scope="session")
def prefect_server():
    """One temporary Prefect API server (subprocess, SQLite) for every flow test of the session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20261125)
