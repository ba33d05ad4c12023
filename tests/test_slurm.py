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


def _wait_for_job(job_id: str, timeout_s: float = 600) -> None:
    deadline = time.monotonic() + timeout_s
    while subprocess.run(["squeue", "-h", "-j", job_id], capture_output=True, text=True).stdout.strip():
        assert time.monotonic() < deadline, f"SLURM job {job_id} still queued or running"
        time.sleep(1)


@pytest.mark.slow
def test_a_submitted_pipeline_job_matches_an_in_process_run(tmp_path, monkeypatch, capsys):
    import json

    import yaml

    from qff_core.cli import main

    monkeypatch.chdir(tmp_path)
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({"pipeline": {
        "name": "tiny", "workers": 1,
        "dataset": {"molecule": "lih", "engine": "pyscf", "method": "hf", "basis": "sto-3g", "samples": 12,
                    "chunk_size": 6, "temperature_k": 3000.0},
        "models": {"invariant": {"model": "invariant", "depth": 1}},
        "train": {"steps": 60, "batch_size": 4, "test_size": 3, "val_size": 2, "eval_every": 30,
                  "checkpoint_every": 30}}}))
    cluster = tmp_path / "slurm.yaml"  # the job's Dask worker: one more one-core SLURM job
    cluster.write_text(yaml.safe_dump(_slurm_config(tmp_path).model_copy(update={"jobs": 1}).model_dump()))
    assert main(["submit", "--config", str(config), "--cluster", str(cluster), "--out-dir", str(tmp_path / "job"),
                 "--memory", "2GB", "--json"]) == 0
    submitted = json.loads(capsys.readouterr().out)
    assert main(["pipeline", "--config", str(config), "--out-dir", str(tmp_path / "here"), "--no-prefect"]) == 0
    _wait_for_job(submitted["job_id"])
    log = Path(submitted["log"]).read_text()
    assert f"qff job {submitted['job_id']}" in log, log[-2000:]
    there = json.loads((tmp_path / "job" / "summary.json").read_text())["invariant"]
    here = json.loads((tmp_path / "here" / "summary.json").read_text())["invariant"]
    for part in ("test", "rotated"):
        for key, value in here[part].items():
            assert there[part][key] == pytest.approx(value, rel=1e-9, abs=1e-12), (part, key)


@pytest.mark.slow
def test_aer_training_on_slurm_workers_equals_a_local_cluster(lih, tmp_path):
    """Parameter-shift chunks of `qff train --executor aer` fanned out to SLURM jobs: the same parameters."""
    import yaml

    from qff_core.cli import main
    from qff_core.store.checkpoint import latest_checkpoint, read_checkpoint

    local = tmp_path / "local.yaml"
    local.write_text("kind: local\nlocal: {n_workers: 2, processes: false}\n")
    slurm = tmp_path / "slurm.yaml"
    slurm.write_text(yaml.safe_dump(_slurm_config(tmp_path).model_dump()))
    args = ["train", "--dataset", lih, "--depth", "1", "--steps", "2", "--batch-size", "2", "--test-size", "2",
            "--val-size", "2", "--seed", "3", "--executor", "aer", "--no-prefect"]
    for name, cluster in (("local", local), ("slurm", slurm)):
        assert main([*args, "--cluster", str(cluster), "--run-dir", str(tmp_path / name)]) == 0
    a = read_checkpoint(latest_checkpoint(tmp_path / "local" / "checkpoints")).arrays
    b = read_checkpoint(latest_checkpoint(tmp_path / "slurm" / "checkpoints")).arrays
    assert np.array_equal(a["opt_params"], b["opt_params"]) and np.array_equal(a["history/loss"], b["history/loss"])
