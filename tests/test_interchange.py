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
    elif problem == "forces_columns":
        bad.arrays["forces"] = f[2][:, :2].copy()
    elif problem == "energy_text":
        bad.info["energy"] = "abc"
    elif problem == "overlap":
        bad.positions[2] = bad.positions[1]
    elif problem == "periodic":
        bad.cell, bad.pbc = np.eye(3) * 10.0, True
    elif problem == "repeat":  # frame 0 again, moved and with its hydrogens swapped
        bad.positions = (x[0] + 1.5)[[0, 2, 1]]
    return frames


@pytest.mark.parametrize(("problem", "message"), [
    ("count", "frame 2 of bad.extxyz has HO .2 atoms.; the molecule h2o is H2O"),
    ("species", "frame 2 of bad.extxyz has H2N"),
    ("energy", "frame 2 of bad.extxyz has no energy"),
    ("forces", "frame 2 of bad.extxyz has no forces"),
    ("nan", "frame 2 of bad.extxyz holds NaN"),
    ("bohr", "frame 2 of bad.extxyz: .* look like Bohr"),
    ("forces_columns", r"frame 2 of bad.extxyz: the forces .'forces'. have shape \(3, 2\), not \(3, 3\)"),
    ("energy_text", "frame 2 of bad.extxyz: the energy .'energy'. is 'abc', not one number"),
    ("overlap", "frame 2 of bad.extxyz: atoms 1 and 2 are 0.0000 Angstrom apart"),
    ("periodic", "frame 2 of bad.extxyz is periodic"),
    ("repeat", r"frame 2 of bad.extxyz repeats frame 0 \(up to rotation"),  # seen in review: imported twice
])
def test_bad_frames_are_refused_and_nothing_is_written(h2o, tmp_path, problem, message):
    from ase.io import write

    data = Dataset.open(h2o)
    path = tmp_path / "bad.extxyz"
    write(path, _frames_with(problem, *data.samples(np.arange(3))), format="extxyz")
    with pytest.raises(FrameError, match=message):
        import_frames(path, builtin_molecule("h2o"), tmp_path / "bad.zarr")
    assert not (tmp_path / "bad.zarr").exists()


@pytest.mark.parametrize(("unit", "factor"), [("Hartree", 1 / 27.211386245988), ("kcal/mol", 23.060547830619026)])
def test_a_new_dataset_in_another_energy_unit_is_refused(h2o, tmp_path, unit, factor):
    """Seen in review: water at -74.96 "eV" (Hartree) became a dataset; appends were checked, new datasets not.
    Energies relative to a reference (near zero) still import."""
    from ase.io import write

    x, e, f = Dataset.open(h2o).samples(np.arange(4))
    frames = [Atoms("OH2", positions=x[k], info={"energy": e[k] * factor}) for k in range(4)]
    for atoms, forces in zip(frames, f, strict=True):
        atoms.arrays["forces"] = forces
    write(tmp_path / "other.extxyz", frames, format="extxyz")
    with pytest.raises(FrameError, match=f"where H2O's total energy lies in {unit}"):
        import_frames(tmp_path / "other.extxyz", builtin_molecule("h2o"), tmp_path / "other.zarr")
    assert not (tmp_path / "other.zarr").exists()
    for atoms, energy in zip(frames, e - e.min(), strict=True):
        atoms.info["energy"] = energy
    write(tmp_path / "relative.extxyz", frames, format="extxyz")
    assert import_frames(tmp_path / "relative.extxyz", builtin_molecule("h2o"), tmp_path / "rel.zarr")["imported"] == 4


def test_energies_on_another_scale_are_not_appended(h2o, exported, tmp_path):
    """Hartree energies (forces in eV/A) appended to an eV dataset: refused, the dataset untouched."""
    from ase.io import write

    from qff_core.units import HARTREE_EV

    out = tmp_path / "h2o.zarr"
    import_frames(exported, builtin_molecule("h2o"), out)
    frames = read(exported, "0:3")
    for atoms in frames:
        atoms.info["energy"] = atoms.get_potential_energy() / HARTREE_EV
        atoms.arrays["forces"] = atoms.get_forces()
        atoms.calc = None
    write(tmp_path / "hartree.extxyz", frames, format="extxyz")
    before = Dataset.open(out).n_samples
    with pytest.raises(FrameError, match=r"eV from those of .* another unit \(Hartree"):
        import_frames(tmp_path / "hartree.extxyz", builtin_molecule("h2o"), out)
    assert Dataset.open(out).n_samples == before


def test_a_diatomic_bond_scan_is_not_mistaken_for_bohr(tmp_path):
    """One LiH distance per frame: a scan's stretched end is fine, a file that is stretched throughout is not."""
    from ase.io import write

    def scan(distances):
        frames = []
        for d in distances:
            atoms = Atoms("LiH", positions=[[0, 0, 0], [0, 0, d]])
            atoms.info["energy"], atoms.arrays["forces"] = -217.0 + d, np.zeros((2, 3))
            frames.append(atoms)
        return frames

    write(tmp_path / "scan.extxyz", scan(np.linspace(1.2, 3.0, 10)), format="extxyz")  # 4 of 10 past 1.5x
    assert import_frames(tmp_path / "scan.extxyz", builtin_molecule("lih"), tmp_path / "scan.zarr")["imported"] == 10
    bohr = scan(np.linspace(1.2, 3.0, 10) / 0.529177210903)  # its first, 2.27, is not past 1.5x
    write(tmp_path / "bohr.extxyz", bohr, format="extxyz")
    with pytest.raises(FrameError, match=r"frame 1 \(and 8 more frames\) of bohr.extxyz: .* look like Bohr"):
        import_frames(tmp_path / "bohr.extxyz", builtin_molecule("lih"), tmp_path / "bohr.zarr")
    assert not (tmp_path / "bohr.zarr").exists()
    out = tmp_path / "allowed.zarr"  # the user says they are right
    assert import_frames(tmp_path / "bohr.extxyz", builtin_molecule("lih"), out, allow_stretched=True)["imported"] == 10


@pytest.mark.parametrize(("args", "message"), [
    (["--energy-key", "my energy"], "not a plain name"),
    (["--forces-key", "pos"], "already use"),
    (["--energy-key", "qff_index"], "already use"),
    (["--energy-key", "x", "--forces-key", "x"], "different names"),
])
def test_export_refuses_keys_it_could_not_read_back(h2o, tmp_path, capsys, args, message):
    assert main(["dataset", "export", h2o, "--out", str(tmp_path / "x.extxyz"), *args]) == 2
    assert message in capsys.readouterr().err and not list(tmp_path.iterdir())


def test_export_to_a_directory_says_so_and_leaves_nothing(h2o, tmp_path, capsys):
    assert main(["dataset", "export", h2o, "--out", str(tmp_path)]) == 2
    assert "cannot write" in capsys.readouterr().err and not list(tmp_path.iterdir())


def test_a_dataset_with_lost_energies_is_not_exported(h2o, tmp_path, capsys):
    import shutil

    damaged = tmp_path / "damaged.zarr"
    shutil.copytree(h2o, damaged)
    shutil.rmtree(damaged / "energies" / "c")  # the energy chunks are gone: zarr reads its fill value, NaN
    assert main(["dataset", "export", str(damaged), "--out", str(tmp_path / "x.extxyz")]) == 2
    assert "is damaged" in capsys.readouterr().err and not (tmp_path / "x.extxyz").exists()


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


def test_file_sampler_takes_stretched_geometries_when_told_and_refuses_repeats(exported, tmp_path):
    """Seen in review: the Bohr check told `generate` users to pass --allow-stretched, which generate did not have,
    so a dissociation curve could not be labelled; and a file holding a frame twice computed it twice."""
    from ase.io import write

    from qff_core.datagen import GenerateConfig, prepare_dataset
    from qff_core.errors import InputError

    frames = read(exported, "0:2")
    for atoms in frames:
        atoms.positions = atoms.positions / 0.529177210903  # every bond 1.9x: Bohr, or a stretch on purpose
    write(tmp_path / "far.extxyz", frames, format="extxyz")
    settings = {"molecule": "h2o", "engine": "pyscf", "method": "hf", "basis": "sto-3g", "sampler": "file",
                "samples": 2}
    with pytest.raises(InputError, match=r"look like Bohr.*--allow-stretched"):
        prepare_dataset(GenerateConfig(**settings, geometries=str(tmp_path / "far.extxyz"),
                                       out=str(tmp_path / "a.zarr")))
    dataset = prepare_dataset(GenerateConfig(**settings, geometries=str(tmp_path / "far.extxyz"),
                                             out=str(tmp_path / "b.zarr"), allow_stretched=True))
    assert dataset.n_samples == 2
    write(tmp_path / "twice.extxyz", [frames[0], frames[1], frames[0]], format="extxyz")
    with pytest.raises(InputError, match=r"frame 2 of .*twice.extxyz repeats frame 0"):
        prepare_dataset(GenerateConfig(**{**settings, "samples": 3}, geometries=str(tmp_path / "twice.extxyz"),
                                       out=str(tmp_path / "c.zarr"), allow_stretched=True))
    assert not (tmp_path / "c.zarr").exists()


def test_file_sampler_refuses_an_unknown_method_before_writing(exported, tmp_path):
    from qff_core.datagen import GenerateConfig, prepare_dataset
    from qff_core.errors import InputError

    config = GenerateConfig(molecule="h2o", engine="pyscf", method="nonsense", basis="sto-3g", sampler="file",
                            geometries=str(exported), samples=2, out=str(tmp_path / "md.zarr"), timeout_s=None)
    with pytest.raises(InputError, match="unknown method 'nonsense'"):
        prepare_dataset(config)
    assert not (tmp_path / "md.zarr").exists()


def test_frames_the_dataset_already_holds_are_not_imported_again(exported, tmp_path):
    """A rotated, translated, re-ordered copy of a sample is the same geometry: appending it is refused."""
    from ase.io import write
    from scipy.spatial.transform import Rotation

    out = tmp_path / "h2o.zarr"
    import_frames(exported, builtin_molecule("h2o"), out)
    frames = read(exported, "0:2")
    copy = frames[1].copy()
    copy.positions = copy.positions @ Rotation.random(random_state=3).as_matrix().T + 2.0
    copy = copy[[0, 2, 1]]
    for atoms, source in ((frames[0], frames[0]), (copy, frames[1])):
        atoms.info["energy"], atoms.arrays["forces"] = source.get_potential_energy(), source.get_forces()[:3]
        atoms.calc = None
    nudged = frames[0].copy()
    nudged.positions[1] += 0.01  # a new geometry
    nudged.info["energy"], nudged.arrays["forces"] = frames[0].info["energy"], frames[0].arrays["forces"]
    write(tmp_path / "again.extxyz", [nudged, copy], format="extxyz")
    before = Dataset.open(out).n_samples
    with pytest.raises(FrameError, match=r"1 frames of again.extxyz are samples .* \(frame 1 is sample 1,"):
        import_frames(tmp_path / "again.extxyz", builtin_molecule("h2o"), out)
    assert Dataset.open(out).n_samples == before


def _import(path: str, out: str, start) -> None:
    start.wait()
    import_frames(path, builtin_molecule("h2o"), out)


def test_two_imports_of_one_file_at_once_add_it_once(exported, tmp_path):
    """Seen in review (1 in 5 tries): both processes passed the "already imported" check before either appended."""
    import multiprocessing as mp

    from ase.io import write

    frames = read(exported, ":")
    write(tmp_path / "first.extxyz", frames[:8], format="extxyz")
    write(tmp_path / "second.extxyz", frames[8:16], format="extxyz")
    out = tmp_path / "both.zarr"
    import_frames(tmp_path / "first.extxyz", builtin_molecule("h2o"), out)
    ctx = mp.get_context("spawn")
    start = ctx.Event()
    procs = [ctx.Process(target=_import, args=(str(tmp_path / "second.extxyz"), str(out), start)) for _ in range(3)]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    dataset = Dataset.open(out)
    assert dataset.n_samples == 16 and [s["file"] for s in dataset.segments()] == ["first.extxyz", "second.extxyz"]


def test_frames_for_a_computed_dataset_are_computed_at_its_level_by_the_command_it_is_told(h2o, exported, tmp_path,
                                                                                           capsys):
    """Imported energies never join a dataset qff computed; the error gives the command that computes the frames at
    the dataset's level of theory instead, and that command appends them after samples of another sampler."""
    import shlex
    import shutil

    from ase.io import write

    data = tmp_path / "h2o.zarr"
    shutil.copytree(h2o, data)
    frames = read(exported, "0:3")
    for atoms in frames:
        atoms.positions[1] += 0.02  # new geometries
    write(tmp_path / "new.extxyz", frames, format="extxyz")
    assert main(["dataset", "import", str(tmp_path / "new.extxyz"), "--molecule", "h2o", "--out", str(data)]) == 2
    err = capsys.readouterr().err
    assert "was computed by qff (pyscf hf/sto-3g)" in err, err
    command = shlex.split(err[err.index("`") + 1: err.rindex("`")])
    assert command[:3] == ["qff", "dataset", "generate"] and "--samples" in command and "43" in command, command
    assert main([*command[1:], "--no-prefect"]) == 0
    capsys.readouterr()
    dataset = Dataset.open(data)
    x, e, _ = dataset.samples(np.arange(40, 43))
    assert dataset.n_samples == 43 and (dataset.status() == 1).all() and np.isfinite(e).all()
    assert np.array_equal(x, np.stack([a.positions for a in read(tmp_path / "new.extxyz", ":")]))  # in order
    assert dataset.segments()[-1]["kind"] == "file" and dataset.segments()[-1]["start"] == 40
    more = [*command[1:], "--no-prefect"]
    more[more.index("--samples") + 1] = "44"
    assert main(more) == 2
    assert "3 of which the dataset holds already; ask for at most 43 --samples" in capsys.readouterr().err
