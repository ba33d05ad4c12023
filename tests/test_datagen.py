"""Reference-data generation end to end: CLI, Dask fan-out, resume without duplicates, failures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from qff_core.cli import main
from qff_core.datagen import GenerateConfig, compute_chunk, compute_pending, prepare_dataset
from qff_core.errors import InputError, ResourceError
from qff_core.store.dataset import Dataset

FAST = ["--engine", "pyscf", "--method", "hf", "--basis", "sto-3g", "--chunk-size", "2", "--no-prefect"]


def generate(capsys, out, *extra) -> dict:
    code = main(["dataset", "generate", "--molecule", "h2o", *FAST, "--out", str(out), "--json",
                 "--catalog", str(out.parent / "catalog"), *extra])
    result = json.loads(capsys.readouterr().out)
    result["exit"] = code
    return result


def test_generate_on_dask_then_resume_without_duplicates(tmp_path, capsys):
    out = tmp_path / "h2o.zarr"
    first = generate(capsys, out, "--samples", "6", "--workers", "2")
    assert first["exit"] == 0 and first["n_done"] == 6 and first["computed"] == 6 and first["chunks"] == 3
    positions = Dataset.open(out).positions()
    energies = Dataset.open(out).arrays()["energies"]
    again = generate(capsys, out, "--samples", "6", "--workers", "0")
    assert again["computed"] == 0 and again["n_samples"] == 6  # nothing recomputed, nothing added
    more = generate(capsys, out, "--samples", "8", "--workers", "0")
    assert more["computed"] == 2 and more["n_done"] == 8
    hotter = generate(capsys, out, "--samples", "10", "--workers", "0", "--temperature-k", "3000")
    assert hotter["computed"] == 2
    segments = Dataset.open(out).segments()  # every append recorded with its sampler and index range
    assert [(g["start"], g["stop"], g["temperature_k"]) for g in segments] == [(0, 6, 500.0), (6, 8, 500.0),
                                                                                (8, 10, 3000.0)]
    record = yaml.safe_load((out.parent / "catalog" / "h2o.yaml").read_text())
    assert record["counts"]["n_samples"] == 10 and record["provenance"]["segments"][-1]["temperature_k"] == 3000.0
    assert record["checksum"] == Dataset.open(out).checksum()
    ds = Dataset.open(out)
    assert np.array_equal(ds.positions()[:6], positions)  # old samples untouched
    assert np.array_equal(ds.arrays()["energies"][:6], energies)
    assert main(["dataset", "info", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["n_samples"], info["n_failed"]) == (10, 0)
    assert info["units"] == {"positions": "angstrom", "energies": "eV", "forces": "eV/angstrom", "wall_time_s": "s"}
    assert info["n_samples"] == 10
    assert info["sampler"]["kind"] == "normal_modes" and info["engine_versions"][0].startswith("pyscf")
    minimum = info["sampler"]["minimum"]  # provenance: the optimised geometry and its 3 real H2O modes
    assert np.array(minimum["positions_a"]).shape == (3, 3) and len(minimum["frequencies_cm1"]) == 3
    assert min(minimum["frequencies_cm1"]) > 1000


def test_failed_samples_are_kept_and_recomputed_on_rerun(tmp_path):
    settings = GenerateConfig(molecule="h2o", engine="pyscf", method="hf", basis="sto-3g", samples=4,
                                out=str(tmp_path / "f.zarr"), chunk_size=2)
    ds = prepare_dataset(settings)
    starved = settings.model_copy(update={"max_iterations": 2})  # every SCF stops at 2 iterations
    summary = compute_pending(ds, starved)
    assert (summary["n_failed"], summary["n_done"]) == (4, 0)
    assert all("ConvergenceError" in msg for msg in ds.errors().values())
    summary = compute_pending(ds, settings)
    assert (summary["computed"], summary["n_failed"], summary["n_done"]) == (4, 0, 4)


def test_timed_out_samples_fail_alone_and_are_recomputed_on_rerun(tmp_path):
    settings = GenerateConfig(molecule="h2o", engine="pyscf", method="hf", basis="6-31g*", samples=3,
                                sampler="rotations", chunk_size=3, out=str(tmp_path / "t.zarr"))
    ds = prepare_dataset(settings)
    hurried = settings.model_copy(update={"timeout_s": 0.01})  # an HF/6-31G* gradient takes 0.1-0.3 s
    outcomes = compute_chunk(hurried, [0, 1, 2], ds.positions([0, 1, 2]))
    assert [type(o).__name__ for _, o in outcomes] == ["CalculationTimeoutError"] * 3  # the chunk went on
    ds.record(outcomes)
    assert all("CalculationTimeoutError: PySCF hf/6-31g* did not finish within 0.01 s" in msg
               for msg in ds.errors().values())
    summary = compute_pending(ds, settings)
    assert (summary["computed"], summary["n_failed"], summary["n_done"]) == (3, 0, 3)


def test_bad_requests_fail_before_anything_is_written(tmp_path, monkeypatch):
    out = tmp_path / "bad.zarr"
    with pytest.raises(InputError, match="b3lypx"):
        prepare_dataset(GenerateConfig(engine="pyscf", method="b3lypx", basis="sto-3g", out=str(out)))
    assert not out.exists()
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(InputError, match="cannot write"):
        prepare_dataset(GenerateConfig(engine="pyscf", method="hf", basis="sto-3g", out=str(blocker / "d.zarr")))
    monkeypatch.setenv("PATH", str(tmp_path))  # no psi4 to be found
    monkeypatch.setenv("QFF_PSI4_MODE", "executable")  # nor imported, where it would import
    with pytest.raises(ResourceError, match="psi4"):
        prepare_dataset(GenerateConfig(engine="psi4", method="hf", basis="sto-3g", out=str(out)))
    assert not out.exists()


@pytest.mark.psi4
def test_a_rerun_that_draws_nothing_says_so_and_limits_take_inf(tmp_path, capsys):
    """Seen in review: a rerun at another sampler, temperature and seed said "0 to compute" and nothing else, and
    `--timeout-s inf` ended in a traceback (OverflowError); inf is "no limit" now."""
    out = tmp_path / "d.zarr"
    assert generate(capsys, out, "--samples", "2", "--workers", "0")["n_done"] == 2
    rerun = ["dataset", "generate", "--molecule", "h2o", *FAST, "--out", str(out), "--catalog", str(tmp_path / "c"),
             "--samples", "2", "--workers", "0", "--timeout-s", "inf"]
    assert main([*rerun, "--sampler", "rotations", "--temperature-k", "1000", "--seed", "7"]) == 0
    err = capsys.readouterr().err
    assert "holds 2 samples (2 by kind normal_modes, seed 2024, temperature_k 500.0); --samples 2 adds none, so " \
           "nothing is drawn with kind rotations, seed 7, temperature_k 1000.0" in err, err
    assert main(rerun) == 0 and "adds none" not in capsys.readouterr().err  # the settings it was made with: a resume
    assert GenerateConfig(timeout_s=float("inf"), max_distance_change=float("inf")).timeout_s is None
    with pytest.raises(ValueError, match="timeout_s"):
        GenerateConfig(timeout_s=float("nan"))


def test_a_top_up_is_refused_when_the_engine_no_longer_reproduces_the_data(tmp_path, capsys):
    """An engine upgrade or convention change (PySCF's 6-311G d functions moved energies by 4e-4 Hartree) must not
    put new samples on another surface under the same label: a top-up first recomputes a finished sample. Here the
    stored energy is what moved (by 1e-4 Hartree), which the check cannot tell apart."""
    import zarr

    out = tmp_path / "d.zarr"
    assert generate(capsys, out, "--samples", "2", "--workers", "0")["n_done"] == 2
    assert generate(capsys, out, "--samples", "3", "--workers", "0")["n_done"] == 3  # reproduced: topped up
    energies = zarr.open_array(str(out / "energies"), mode="r+")
    energies[0] = energies[0] + 1e-4 * 27.211386245988
    code = main(["dataset", "generate", "--molecule", "h2o", *FAST, "--out", str(out), "--catalog",
                 str(tmp_path / "c"), "--samples", "4", "--workers", "0"])
    err = capsys.readouterr().err
    assert code == 2 and "pyscf now gives" in err and "stored as" in err and "write them to a new --out" in err, err
    assert Dataset.open(out).n_samples == 3


def test_generate_with_psi4_on_dask(tmp_path, capsys):
    out = tmp_path / "psi4.zarr"
    result = main(["dataset", "generate", "--molecule", "h2o", "--engine", "psi4", "--method", "hf", "--basis",
                   "sto-3g", "--samples", "4", "--chunk-size", "2", "--workers", "2", "--out", str(out), "--json",
                   "--catalog", str(tmp_path / "catalog"), "--no-prefect"])
    summary = json.loads(capsys.readouterr().out)
    assert result == 0 and summary["n_done"] == 4
    info = Dataset.open(out).info()
    assert info["engine_versions"][0].startswith("psi4 1.")
    data = Dataset.open(out).arrays()
    assert np.abs(data["forces"].sum(axis=1)).max() < 1e-5  # no net force, eV/A


def test_catalog_record_follows_the_data(tmp_path, capsys):
    import yaml

    from qff_core.store.catalog import catalog_record

    out = tmp_path / "c.zarr"
    first = generate(capsys, out, "--samples", "2", "--workers", "0")
    record = yaml.safe_load(Path(first["catalog_record"]).read_text())
    assert record["name"] == "c" and record["schema_version"] == 1
    assert record["location"] == "c.zarr"  # relative to the folder holding the catalog: the same from any cwd
    assert record["counts"]["n_done"] == 2 and record["checksum"].startswith("sha256:")
    assert record["provenance"]["level_of_theory"]["method"] == "hf"
    assert record["checksum"] == Dataset.open(out).checksum()
    path = Path(first["catalog_record"])
    path.write_text(yaml.safe_dump({**record, "updated": "2000-01-01T00:00:00+00:00"}, sort_keys=False))
    before = path.read_text()
    generate(capsys, out, "--samples", "2", "--workers", "0")  # nothing to compute: the record stays as it was
    assert path.read_text() == before
    generate(capsys, out, "--samples", "3", "--workers", "0")
    assert catalog_record(Dataset.open(out), path.parent)["checksum"] != record["checksum"]
    # Seen in review: a dataset of the same name elsewhere replaced this record. It gets one of its own now.
    (tmp_path / "elsewhere").mkdir()
    other = generate(capsys, tmp_path / "elsewhere" / "c.zarr", "--samples", "2", "--workers", "0",
                     "--catalog", str(path.parent))
    assert Path(other["catalog_record"]) != path and path.exists()
    assert yaml.safe_load(path.read_text())["location"] == "c.zarr"
    assert yaml.safe_load(Path(other["catalog_record"]).read_text())["location"] == "elsewhere/c.zarr"


def flow_run_logs(flow_run_id) -> list:
    """The logs of one flow run as the Prefect API stores them (after flushing the log handler)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()
    with get_client(sync_client=True) as client:
        return client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))


def test_reference_data_flow_runs_for_real(tmp_path, prefect_server):
    from flows.reference_data import reference_data

    settings = GenerateConfig(molecule="h2o", engine="pyscf", method="hf", basis="sto-3g", samples=4,
                                chunk_size=2, out=str(tmp_path / "flow.zarr")).model_dump()
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text("kind: local\nlocal: {n_workers: 1}\n")
    state = reference_data(settings, workers=2, cluster=str(cluster), catalog_dir=str(tmp_path / "catalog"),
                           return_state=True)  # --workers 2 overrides the file's 1
    assert state.is_completed(), state.message
    summary = state.result()
    again = reference_data(settings, workers=0, catalog_dir=str(tmp_path / "catalog"))
    progress = [log.message for log in flow_run_logs(state.state_details.flow_run_id)
                if log.message.startswith("[reference-data]")]
    assert summary["n_done"] == 4 and summary["chunks"] == 2
    assert again["computed"] == 0 and again["n_done"] == 4
    assert len(progress) == 2 and "4/4 samples (100%), 0 failed" in progress[-1], progress  # one per chunk
    assert (tmp_path / "catalog" / "flow.yaml").exists()


def test_killed_generate_resumes_to_the_same_dataset(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "kill.zarr"
    cmd = [sys.executable, "-m", "qff_core.cli", "dataset", "generate", "--molecule", "h2o", "--engine", "pyscf",
           "--method", "hf", "--basis", "6-31g*", "--samples", "24", "--chunk-size", "1", "--workers", "0",
           "--no-prefect", "--out", str(out), "--catalog", str(tmp_path / "catalog")]
    env = {**os.environ, "QFF_JAX_CACHE_DIR": "off"}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    deadline = time.time() + 120
    while time.time() < deadline:
        if (out / "zarr.json").exists() and Dataset.open(out).info()["n_done"] >= 3:
            break
        assert proc.poll() is None, proc.stderr.read().decode()
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed = Dataset.open(out)
    done_before = np.flatnonzero(killed.status() == 1)
    assert 3 <= done_before.size < 24
    energies_before = killed.arrays()["energies"]
    positions_before = killed.positions()
    assert subprocess.run(cmd, env=env, capture_output=True).returncode == 0
    resumed = Dataset.open(out)
    assert resumed.info()["n_done"] == 24 and resumed.n_samples == 24
    assert np.array_equal(resumed.positions(), positions_before)  # same samples, none added twice
    assert np.array_equal(resumed.arrays()["energies"][done_before], energies_before)  # kept, not recomputed
