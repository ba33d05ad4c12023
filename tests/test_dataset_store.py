"""Zarr reference datasets: layout, resume bookkeeping, locking across processes, bad paths."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time

import numpy as np
import pytest
import zarr

from qff_core.errors import ConvergenceError, DatasetDamagedError, InputError
from qff_core.molecules import builtin_molecule
from qff_core.reference import CalculationRequest, get_engine
from qff_core.reference.base import CalculationResult
from qff_core.store.dataset import DONE, FAILED, PENDING, Dataset, LevelOfTheory, dataset_lock

H2O = builtin_molecule("h2o")
HF = LevelOfTheory("pyscf", "hf", "6-31g")


def synthetic_result(value: float) -> CalculationResult:
    """A result with recognisable numbers (the store's tests need data, not chemistry)."""
    return CalculationResult(
        energy_ev=value, forces_ev_per_a=np.full((3, 3), value), energy_hartree=value,
        gradient_hartree_per_bohr=np.full((3, 3), -value), wall_time_s=0.01,
        provenance={"engine": "synthetic", "version": "0"},
    )


def geometries(n: int, start: float = 0.0) -> np.ndarray:
    """Distinct water geometries: the O-H1 bond is stretched by a per-sample amount (a marker)."""
    out = np.stack([H2O.positions_a.copy() for _ in range(n)])
    out[:, 1, 2] += start + 0.001 * np.arange(n)
    return out


def test_layout_units_and_results_with_a_real_engine(tmp_path):
    ds = Dataset.create(tmp_path / "h2o.zarr", H2O, HF, sampler={"kind": "test", "seed": 1})
    idx = ds.add_geometries(geometries(4))
    engine = get_engine("pyscf")
    results = [(int(i), engine.compute(CalculationRequest.create(H2O.symbols, ds.positions([i])[0], "hf", "6-31g")))
               for i in idx[:2]]
    ds.record([*results, (2, ConvergenceError("SCF not converged in 2 iterations"))])

    again = Dataset.open(tmp_path / "h2o.zarr")
    info = again.info()
    assert (info["n_samples"], info["n_done"], info["n_failed"], info["n_pending"]) == (4, 2, 1, 1)
    assert info["units"]["energies"] == "eV" and info["units"]["forces"] == "eV/angstrom"
    assert info["engine_versions"][0].startswith("pyscf ")
    assert "SCF not converged" in info["failures"]["2"]
    assert list(again.todo()) == [2, 3]
    data = again.arrays()
    assert data["energies"].shape == (2,) and data["forces"].shape == (2, 3, 3)
    assert np.allclose(data["energies"], [r.energy_ev for _, r in results])
    root = zarr.open_group(str(tmp_path / "h2o.zarr"), mode="r")
    assert root["positions"].attrs["units"] == "angstrom"
    assert list(root["species"][:]) == [8, 1, 1]
    assert list(again.status()) == [DONE, DONE, FAILED, PENDING]


def test_reopening_checks_the_level_of_theory(tmp_path):
    path = tmp_path / "d.zarr"
    Dataset.create(path, H2O, HF).add_geometries(geometries(2))
    assert Dataset.create(path, H2O, HF).n_samples == 2  # same settings: resume
    with pytest.raises(InputError, match="refusing to mix"):
        Dataset.create(path, H2O, LevelOfTheory("pyscf", "b3lyp", "6-31g"))
    with pytest.raises(InputError, match="holds"):
        Dataset.create(path, builtin_molecule("nh3"), HF)
    # Seen in review: a triplet top-up was mixed into a singlet dataset, 9-10 eV above it, and exported as one.
    from dataclasses import replace

    with pytest.raises(InputError, match=r"multiplicity 1 \(asked: 3\): another electronic state"):
        Dataset.create(path, replace(H2O, multiplicity=3), HF)
    with pytest.raises(InputError, match=r"charge 0 \(asked: 1\), multiplicity 1 \(asked: 2\)"):
        Dataset.create(path, replace(H2O, charge=1, multiplicity=2), HF)
    assert Dataset.open(path).n_samples == 2


def test_a_writer_keeps_the_segments_another_process_appended(tmp_path):
    """Seen in review: a process that opened the dataset earlier recorded its results through stale attributes and
    erased the segment a concurrent top-up had appended (zarr.json is rewritten whole)."""
    path = tmp_path / "d.zarr"
    first = Dataset.create(path, H2O, HF, sampler={"kind": "test", "temperature_k": 500.0})
    first.add_geometries(geometries(2), segment={"kind": "test", "temperature_k": 500.0})
    other = Dataset.open(path)  # another writer (a separate Zarr group object, as in another process)
    other.add_geometries(geometries(1, start=0.1), segment={"kind": "test", "temperature_k": 300.0})
    first.record([(0, synthetic_result(1.0))])
    first.record([(1, ConvergenceError("not converged"))])
    segments = [(s["temperature_k"], s["start"], s["stop"]) for s in Dataset.open(path).segments()]
    assert segments == [(500.0, 0, 2), (300.0, 2, 3)]
    assert Dataset.open(path).info()["engine_versions"] == ["synthetic 0"]


def test_bad_paths_fail_before_any_work(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(InputError, match="cannot write"):
        Dataset.create(blocker / "d.zarr", H2O, HF)
    with pytest.raises(InputError, match="no qff dataset"):
        Dataset.open(tmp_path / "missing.zarr")
    zarr.open_group(str(tmp_path / "other.zarr"), mode="w")
    with pytest.raises(InputError, match="not a qff reference dataset"):
        Dataset.open(tmp_path / "other.zarr")


def _writer(path: str, worker: int, rounds: int) -> None:
    ds = Dataset.open(path)
    for r in range(rounds):
        idx = ds.add_geometries(geometries(3, start=0.1 * worker + 0.01 * r))
        ds.record([(int(i), synthetic_result(1000 * worker + i)) for i in idx])


def test_concurrent_writers_lose_nothing(tmp_path):
    path = str(tmp_path / "shared.zarr")
    Dataset.create(path, H2O, HF, chunk=4)  # small chunks: writers share chunks often
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, w, 8)) for w in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    ds = Dataset.open(path)
    assert ds.n_samples == 3 * 8 * 3 and (ds.status() == DONE).all()
    data = ds.arrays()
    # Every row holds what its writer put there: energy 1000*worker + index, forces alike.
    workers = np.floor(data["energies"] / 1000).astype(int)
    assert np.array_equal(data["energies"] - 1000 * workers, np.arange(ds.n_samples))
    assert np.allclose(data["forces"][:, 0, 0], data["energies"])
    assert sorted(np.bincount(workers)) == [24, 24, 24]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shared.zarr"]  # no lock or claims file left behind


def _half_resized(path: str, resized) -> None:
    """Add a sample as ``add_geometries`` does, stopping for a second when one array is resized and the others not."""
    with dataset_lock(path):
        a = zarr.open_array(f"{path}/positions", mode="r+")
        a.resize((a.shape[0] + 1, *a.shape[1:]))
        resized.set()
        time.sleep(1.0)
        for name in ("energies", "forces", "status", "wall_time_s", "errors"):
            b = zarr.open_array(f"{path}/{name}", mode="r+")
            b.resize((b.shape[0] + 1, *b.shape[1:]))


def test_opening_while_another_process_adds_samples_is_not_damage(tmp_path):
    """Seen in CI: a process opened the dataset while another was part way through resizing its arrays, and was
    told the dataset was damaged. Unequal counts are judged again under the lock, where writers finish first."""
    path = str(tmp_path / "shared.zarr")
    Dataset.create(path, H2O, HF).add_geometries(geometries(2))
    ctx = mp.get_context("spawn")
    resized = ctx.Event()
    proc = ctx.Process(target=_half_resized, args=(path, resized))
    proc.start()
    assert resized.wait(60)
    assert Dataset.open(path).n_samples == 3  # waited for the writer
    proc.join(60)
    zarr.open_array(f"{path}/forces", mode="r+").resize((2, 3, 3))  # unequal with nobody writing: damage
    with pytest.raises(DatasetDamagedError, match="different numbers of samples"):
        Dataset.open(path)


def _slow_recorder(path: str) -> None:
    ds = Dataset.open(path)
    for i in ds.todo():
        ds.record([(int(i), synthetic_result(float(i)))])
        time.sleep(0.05)


def test_killed_writer_keeps_every_finished_sample(tmp_path):
    path = str(tmp_path / "killed.zarr")
    Dataset.create(path, H2O, HF, chunk=8).add_geometries(geometries(200))
    ctx = mp.get_context("spawn")
    proc = ctx.Process(target=_slow_recorder, args=(path,))
    proc.start()
    deadline = time.time() + 60
    while Dataset.open(path).info()["n_done"] < 10 and time.time() < deadline:
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.join()
    ds = Dataset.open(path)
    done = np.flatnonzero(ds.status() == DONE)
    assert 10 <= done.size < 200
    assert np.array_equal(ds.arrays()["energies"], done.astype(float))  # intact, in place
    assert np.array_equal(ds.todo(), np.setdiff1d(np.arange(200), done))
    rest = ds.todo()
    ds.record([(int(i), synthetic_result(float(i))) for i in rest])  # the resumed run
    assert (Dataset.open(path).status() == DONE).all()
    assert np.array_equal(Dataset.open(path).arrays()["energies"], np.arange(200.0))


def test_a_lost_chunk_is_reported_and_refused_not_read_as_data(h2o, tmp_path, capsys):
    """Deleting the energy chunks leaves `done` samples that zarr reads as NaN: info says DAMAGED (exit 1),
    training refuses the dataset before any step instead of diverging on NaN labels."""
    import shutil

    from qff_core.cli import main
    from qff_core.errors import DatasetDamagedError
    from qff_core.run.directory import TrainingData

    damaged = tmp_path / "damaged.zarr"
    shutil.copytree(h2o, damaged)
    data = Dataset.open(damaged)
    assert data.damaged().size == 0
    shutil.rmtree(damaged / "energies" / "c")
    assert np.array_equal(data.damaged(), np.flatnonzero(data.status() == DONE))
    assert main(["dataset", "info", str(damaged)]) == 1
    assert "DAMAGED: " in capsys.readouterr().out
    with pytest.raises(DatasetDamagedError, match=r"is damaged: 2 finished samples .* 3, 5"):
        TrainingData.take(data, np.array([3, 5]))
    assert main(["train", "--dataset", str(damaged), "--steps", "1", "--run-dir", str(tmp_path / "run"),
                 "--no-prefect"]) == 2
    assert "is damaged" in capsys.readouterr().err


def _truncate_first_chunk(path):
    chunk = sorted((path / "positions" / "c").rglob("*"))[-1]
    chunk.write_bytes(chunk.read_bytes()[:100])


def _drop_molecule(path):
    import json

    node = json.loads((path / "zarr.json").read_text())
    del node["attributes"]["molecule"]
    (path / "zarr.json").write_text(json.dumps(node))


@pytest.mark.parametrize(("damage", "message"), [
    (_truncate_first_chunk, "positions, energies or forces cannot be read"),
    (lambda path: __import__("shutil").rmtree(path / "forces"), "the array 'forces' cannot be read"),
    (lambda path: (path / "energies" / "zarr.json").write_text("{"), "the array 'energies' cannot be read"),
    (_drop_molecule, "its attributes lack molecule"),
])
def test_damaged_files_give_one_clear_error(h2o, tmp_path, capsys, damage, message):
    import shutil

    from qff_core.cli import main

    damaged = tmp_path / "damaged.zarr"
    shutil.copytree(h2o, damaged)
    damage(damaged)
    assert main(["dataset", "info", str(damaged)]) == 2
    assert main(["dataset", "export", str(damaged), "--out", str(tmp_path / "x.extxyz")]) == 2
    err = capsys.readouterr().err
    assert f"{damaged} is damaged: " in err and message in err and "Traceback" not in err
    assert not (tmp_path / "x.extxyz").exists()
