"""Datasets in and out: extended XYZ export read by ASE, import back bit for bit, bad frames refused whole,
and MD frames labelled with a real engine through the file sampler."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.io import read

from qff_core.cli import main
from qff_core.interchange import FrameError, import_frames
from qff_core.molecules import builtin_molecule
from qff_core.store.dataset import Dataset


@pytest.fixture(scope="module")
def exported(h2o, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("xyz") / "h2o.extxyz"
    assert main(["dataset", "export", h2o, "--out", str(out)]) == 0
    return out


def test_export_is_read_by_ase_with_energies_and_forces(h2o, exported):
    frames = read(exported, ":")
    data = Dataset.open(h2o)
    x, e, f = data.samples(np.arange(data.n_samples))
    assert len(frames) == data.n_samples
    assert frames[7].get_chemical_symbols() == ["O", "H", "H"]
    assert frames[7].get_potential_energy() == e[7]
    assert np.array_equal(frames[7].get_forces(), f[7]) and np.array_equal(frames[7].positions, x[7])


def test_round_trip_is_bit_for_bit_and_catalogued(h2o, exported, tmp_path, capsys):
    out = tmp_path / "back.zarr"
    assert main(["dataset", "import", str(exported), "--molecule", "h2o", "--out", str(out), "--level-of-theory",
                 "HF/STO-3G (PySCF)", "--catalog", str(tmp_path / "catalog"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    a, b = Dataset.open(h2o), Dataset.open(out)
    for left, right in zip(a.samples(np.arange(a.n_samples)), b.samples(np.arange(b.n_samples)), strict=True):
        assert np.array_equal(left, right)
    record = Path(summary["catalog_record"]).read_text()
    assert "imported" in record and summary["sha256"] in record and "HF/STO-3G (PySCF)" in record
    assert main(["dataset", "import", str(exported), "--molecule", "h2o", "--out", str(out), "--level-of-theory",
                 "HF/STO-3G (PySCF)", "--catalog", str(tmp_path / "catalog")]) == 0
    assert "nothing added" in capsys.readouterr().out and Dataset.open(out).n_samples == a.n_samples


def test_mace_keys_and_atoms_in_another_order(h2o, tmp_path):
    data = Dataset.open(h2o)
    x, e, f = data.samples(np.arange(3))
    frames = []
    for k in range(3):  # H, H, O: mapped onto the molecule's O, H, H
        atoms = Atoms("H2O", positions=x[k][[1, 2, 0]])
        atoms.info["REF_energy"] = e[k]
        atoms.arrays["REF_forces"] = f[k][[1, 2, 0]]
        frames.append(atoms)
    from ase.io import write

    write(tmp_path / "mace.extxyz", frames, format="extxyz")
    out = tmp_path / "mace.zarr"
    import_frames(tmp_path / "mace.extxyz", builtin_molecule("h2o"), out, energy_key="REF_energy",
                  forces_key="REF_forces")
    x2, e2, f2 = Dataset.open(out).samples(np.arange(3))
    assert np.allclose(x2, x, atol=1e-8) and np.array_equal(e2, e) and np.allclose(f2, f, atol=1e-8)


def _frames_with(problem: str, x: np.ndarray, e: np.ndarray, f: np.ndarray) -> list[Atoms]:
    frames = [Atoms("OH2", positions=x[k]) for k in range(3)]
    for k, atoms in enumerate(frames):
        atoms.info["energy"] = e[k]
        atoms.arrays["forces"] = f[k]
    bad = frames[2]
    if problem == "count":
        frames[2] = Atoms("OH", positions=x[2][:2], info={"energy": e[2]})
        frames[2].arrays["forces"] = f[2][:2]
    elif problem == "species":
        frames[2] = Atoms("NH2", positions=x[2], info={"energy": e[2]})
        frames[2].arrays["forces"] = f[2]
    elif problem == "energy":
        del bad.info["energy"]
    elif problem == "forces":
        del bad.arrays["forces"]
    elif problem == "nan":
        bad.arrays["forces"][1, 2] = np.nan
    elif problem == "bohr":
        bad.positions = bad.positions / 0.529177210903
    return frames


@pytest.mark.parametrize(("problem", "message"), [
    ("count", "frame 2 has HO .2 atoms.; the molecule h2o is H2O"),
    ("species", "frame 2 has H2N"),
    ("energy", "frame 2 has no energy"),
    ("forces", "frame 2 has no forces"),
    ("nan", "frame 2 holds NaN"),
    ("bohr", "frame 2: .* look like Bohr"),
])
def test_bad_frames_are_refused_and_nothing_is_written(h2o, tmp_path, problem, message):
    from ase.io import write

    data = Dataset.open(h2o)
    path = tmp_path / "bad.extxyz"
    write(path, _frames_with(problem, *data.samples(np.arange(3))), format="extxyz")
    with pytest.raises(FrameError, match=message):
        import_frames(path, builtin_molecule("h2o"), tmp_path / "bad.zarr")
    assert not (tmp_path / "bad.zarr").exists()


def test_file_sampler_labels_trajectory_frames_with_a_real_engine(exported, tmp_path):
    from qff_core.datagen import GenerateConfig, compute_pending, prepare_dataset

    config = GenerateConfig(molecule="h2o", engine="pyscf", method="hf", basis="sto-3g", sampler="file",
                            geometries=str(exported), every=10, samples=4, out=str(tmp_path / "md.zarr"))
    dataset = prepare_dataset(config)
    assert compute_pending(dataset, config)["n_done"] == 4
    frames = read(exported, ":")
    x, e, _ = dataset.samples(np.arange(4))
    assert np.array_equal(x[1], frames[10].positions)
    assert np.allclose(e, [frames[k].get_potential_energy() for k in (0, 10, 20, 30)], atol=1e-6)  # same engine
