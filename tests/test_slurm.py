"""dask-jobqueue on a real SLURM cluster (``sudo scripts/slurm-local.sh start`` makes one here).

Skipped when ``sinfo`` is missing, except under ``CI=true``, where ``.ci/run`` starts the cluster.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from qff_core.datagen import GenerateConfig, compute_pending, prepare_dataset
from qff_core.distributed import ClusterConfig, JobQueueConfig, dask_client
from qff_core.store.dataset import Dataset

SLURM_WORKER_TIMEOUT_S = 120  # 2 one-core jobs connect in 2-5 s on an idle node

pytestmark = pytest.mark.slurm


def _slurm_config(tmp_path: Path) -> ClusterConfig:
    """Two one-core SLURM jobs, one worker each; scheduler and workers on the loopback interface."""
    return ClusterConfig(kind="slurm", jobs=2, worker_timeout_s=SLURM_WORKER_TIMEOUT_S, jobqueue=JobQueueConfig(
        cores=1, processes=1, memory="1GB", walltime="00:10:00", interface="lo",
        log_directory=str(tmp_path / "logs"), local_directory=str(tmp_path / "scratch")))


def test_reference_data_on_slurm_matches_an_in_process_run(tmp_path):
    settings = GenerateConfig(molecule="h2o", engine="pyscf", method="hf", basis="sto-3g", samples=4,
                                sampler="rotations", chunk_size=1, timeout_s=None, out=str(tmp_path / "here.zarr"))
    here = prepare_dataset(settings)
    shutil.copytree(here.path, tmp_path / "slurm.zarr")
    there = Dataset.open(tmp_path / "slurm.zarr")
    compute_pending(here, settings)
    t0 = time.perf_counter()
    with dask_client(_slurm_config(tmp_path)) as client:
        t_up = time.perf_counter() - t0
        job_ids = client.run(lambda: os.environ.get("SLURM_JOB_ID"))  # every worker runs in its own SLURM job
        assert len(job_ids) == 2 and len(set(job_ids.values())) == 2 and all(job_ids.values()), job_ids
        summary = compute_pending(there, settings, client=client)
    t_total = time.perf_counter() - t0
    print(f"SLURM: 2 workers up in {t_up:.1f} s, 4 samples computed and cluster closed in {t_total:.1f} s")
    assert (summary["n_done"], summary["n_failed"]) == (4, 0)
    a, b = here.arrays(), there.arrays()
    assert np.array_equal(here.positions(), there.positions())
    assert np.abs(a["energies"] - b["energies"]).max() < 1e-9  # eV; same code, same numbers
    assert np.abs(a["forces"] - b["forces"]).max() < 1e-8  # eV/Angstrom
    deadline = time.monotonic() + 30  # closing the cluster cancelled its jobs
    while "qff-dask" in _squeue_names():
        assert time.monotonic() < deadline, _squeue_names()
        time.sleep(0.2)


def _squeue_names() -> list[str]:
    return subprocess.run(["squeue", "-h", "-o", "%j"], capture_output=True, text=True, check=True).stdout.split()
