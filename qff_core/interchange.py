"""Datasets to and from the formats other force-field tools read: extended XYZ (MACE, NequIP, sGDML,
ASE) and ASE databases.

``export_extxyz`` writes every finished sample as a frame: species and positions (Angstrom),
the energy (eV) in the frame's info and the forces (eV/Angstrom) as a per-atom array, under
keys of your choice (``energy``/``forces`` by default; MACE's ``REF_energy``/``REF_forces``).
Floats are written with 17 significant digits, so exporting and importing back gives the same
arrays bit for bit. ``import_frames`` checks every frame first (species against the molecule,
energies and forces present and finite, positions in Angstrom rather than Bohr) and writes
nothing unless all pass; atoms in another order are mapped onto the molecule's order.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qff_core.errors import InputError
from qff_core.molecules import MoleculeSpec
from qff_core.molecules.matching import AtomsMismatchError, formula, match_atoms
from qff_core.reference.base import CalculationResult
from qff_core.store.dataset import DONE, Dataset, LevelOfTheory, check_writable
from qff_core.units import BOHR_ANGSTROM, HARTREE_EV

BOHR_SUSPECT_RATIO = 1.5
"""Every atom's nearest neighbour farther than this multiple of the covalent-radius sum: the
positions are probably in Bohr."""


class FrameError(InputError):
    """A frame of an imported file cannot become a sample (the message names the frame)."""


def _fmt(x: float) -> str:
    return repr(float(x))


def write_frame(fh, symbols, positions_a: np.ndarray, energy_ev: float, forces_ev_per_a: np.ndarray, *,
                energy_key: str = "energy", forces_key: str = "forces", info: dict | None = None) -> None:
    """One extended-XYZ frame, every float with 17 significant digits (read back bit for bit)."""
    extra = "".join(f' {k}="{v}"' if isinstance(v, str) else f" {k}={_fmt(v) if isinstance(v, float) else v}"
                    for k, v in (info or {}).items())
    fh.write(f"{len(symbols)}\n")
    fh.write(f'Properties=species:S:1:pos:R:3:{forces_key}:R:3 {energy_key}={_fmt(energy_ev)}{extra} pbc="F F F"\n')
    for s, p, f in zip(symbols, positions_a, forces_ev_per_a, strict=True):
        fh.write(f"{s} {' '.join(map(_fmt, p))} {' '.join(map(_fmt, f))}\n")


def export_extxyz(dataset: Dataset, out: str | Path, *, energy_key: str = "energy",
                  forces_key: str = "forces") -> dict:
    """Write the finished samples of ``dataset`` to ``out`` (extended XYZ); returns counts and the path."""
    status = dataset.status()
    done = np.flatnonzero(status == DONE)
    if done.size == 0:
        raise InputError(f"{dataset.path} has no finished samples to export")
    positions, energies, forces = dataset.samples(done)
    symbols = dataset.group.attrs["molecule"]["symbols"]
    level = dataset.group.attrs["level_of_theory"]
    lot = f"{level['engine']} {level['method']}/{level['basis']}"
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "w") as fh:
        for k, index in enumerate(done):
            write_frame(fh, symbols, positions[k], energies[k], forces[k], energy_key=energy_key,
                        forces_key=forces_key, info={"qff_index": int(index), "level_of_theory": lot})
    tmp.replace(out)
    return {"path": str(out), "n_frames": int(done.size), "n_skipped": int(status.size - done.size),
            "energy_key": energy_key, "forces_key": forces_key, "units": {"energy": "eV", "forces": "eV/angstrom",
                                                                          "positions": "angstrom"}}


def read_frames(path: str | Path) -> list:
    """Every frame of an .xyz/.extxyz file or an ASE database (``.db``/``.json``) as ASE ``Atoms``."""
    from ase.io import read

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path} does not exist or is not a file")
    try:
        if path.suffix.lower() in (".db", ".json"):
            from ase.db import connect

            return [row.toatoms(add_additional_information=True) for row in connect(str(path)).select()]
        frames = read(str(path), index=":", format="extxyz" if path.suffix.lower() in (".xyz", ".extxyz") else None)
    except InputError:
        raise
    except Exception as exc:  # ASE raises many kinds on a malformed file
        raise InputError(f"{path} is not a readable .xyz/.extxyz or ASE database: {type(exc).__name__}: {exc}"
                         ) from None
    if not frames:
        raise InputError(f"{path} holds no frames")
    return frames


@dataclass(frozen=True)
class Frames:
    """Validated frames in the molecule's atom order: positions (Angstrom), energies (eV), forces (eV/Angstrom)."""

    positions_a: np.ndarray
    energies_ev: np.ndarray
    forces_ev_per_a: np.ndarray


def _energy(atoms, key: str) -> float | None:
    if key in atoms.info:
        return float(atoms.info[key])
    results = getattr(atoms.calc, "results", {}) if atoms.calc is not None else {}
    return float(results["energy"]) if "energy" in results and key == "energy" else None


def _forces(atoms, key: str) -> np.ndarray | None:
    if key in atoms.arrays:
        return np.asarray(atoms.arrays[key], dtype=np.float64)
    results = getattr(atoms.calc, "results", {}) if atoms.calc is not None else {}
    return np.asarray(results["forces"], dtype=np.float64) if "forces" in results and key == "forces" else None


def _looks_like_bohr(symbols, positions_a: np.ndarray) -> bool:
    from ase.data import atomic_numbers, covalent_radii

    if len(symbols) < 2:
        return False
    radii = np.array([covalent_radii[atomic_numbers[s]] for s in symbols])
    d = np.linalg.norm(positions_a[:, None] - positions_a[None], axis=-1)
    np.fill_diagonal(d, np.inf)
    ratio = d / (radii[:, None] + radii[None, :])
    return bool(np.all(ratio.min(axis=1) > BOHR_SUSPECT_RATIO))


def validate_frames(frames: list, molecule: MoleculeSpec, *, energy_key: str = "energy",
                    forces_key: str = "forces") -> Frames:
    """Check every frame and put its atoms in the molecule's order; FrameError naming the first bad frame."""
    pos, ens, fos = [], [], []
    for k, atoms in enumerate(frames):
        where = f"frame {k}"
        symbols = atoms.get_chemical_symbols()
        try:
            order = list(match_atoms(molecule, symbols, atoms.positions))
        except AtomsMismatchError:
            raise FrameError(f"{where} has {formula(symbols)} ({len(symbols)} atoms); the molecule "
                             f"{molecule.name} is {formula(molecule.symbols)} ({molecule.n_atoms} atoms)") from None
        e, f = _energy(atoms, energy_key), _forces(atoms, forces_key)
        if e is None:
            raise FrameError(f"{where} has no energy (info key '{energy_key}'; set --energy-key)")
        if f is None:
            raise FrameError(f"{where} has no forces (per-atom array '{forces_key}'; set --forces-key)")
        x = np.asarray(atoms.positions, dtype=np.float64)
        if not (np.isfinite(e) and np.all(np.isfinite(f)) and np.all(np.isfinite(x))):
            raise FrameError(f"{where} holds NaN or infinite values (energy, forces or positions)")
        if _looks_like_bohr(symbols, x):
            raise FrameError(f"{where}: every atom is over {BOHR_SUSPECT_RATIO}x its bonding distance from its "
                             f"nearest neighbour; the positions look like Bohr. Convert them to Angstrom (multiply "
                             f"by {BOHR_ANGSTROM})")
        pos.append(x[order])
        ens.append(e)
        fos.append(f[order])
    return Frames(np.stack(pos), np.asarray(ens, dtype=np.float64), np.stack(fos))


def _level(text: str | None) -> LevelOfTheory:
    """``"B3LYP/6-31G*"`` (anything else: the whole text as the method) as an imported level of theory."""
    text = (text or "unknown").strip()
    method, _, basis = text.partition("/")
    return LevelOfTheory("imported", method.strip() or "unknown", basis.strip() or "unknown",
                         {"description": text})


def import_frames(path: str | Path, molecule: MoleculeSpec, out: str | Path, *, level_of_theory: str | None = None,
                  energy_key: str = "energy", forces_key: str = "forces") -> dict:
    """A dataset at ``out`` holding the frames of ``path`` (created, or appended to when it exists at the same
    level of theory); nothing is written unless every frame is valid. A file already imported is not added twice."""
    path = Path(path)
    frames = validate_frames(read_frames(path), molecule, energy_key=energy_key, forces_key=forces_key)
    sha = "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    out = Path(out)
    if not (out / "zarr.json").exists():
        check_writable(out)
    segment = {"kind": "imported", "file": path.name, "sha256": sha, "level_of_theory": level_of_theory or "unknown",
               "energy_key": energy_key, "forces_key": forces_key}
    dataset = Dataset.create(out, molecule, _level(level_of_theory), sampler=segment)
    if any(seg.get("sha256") == sha for seg in dataset.segments()):
        return {"path": str(out), "imported": 0, "already_imported": True, "sha256": sha, **_counts(dataset)}
    indices = dataset.add_geometries(frames.positions_a, segment=segment)
    provenance = {"engine": "imported", "version": sha[7:19], "file": path.name}
    dataset.record([
        (int(i), CalculationResult(energy_ev=float(e), forces_ev_per_a=f, energy_hartree=float(e) / HARTREE_EV,
                                   gradient_hartree_per_bohr=-f * BOHR_ANGSTROM / HARTREE_EV, wall_time_s=0.0,
                                   provenance=provenance))
        for i, e, f in zip(indices, frames.energies_ev, frames.forces_ev_per_a, strict=True)
    ])
    return {"path": str(out), "imported": len(indices), "already_imported": False, "sha256": sha,
            **_counts(dataset)}


def _counts(dataset: Dataset) -> dict:
    info = dataset.info()
    return {k: info[k] for k in ("n_samples", "n_done", "n_failed", "n_pending")}


__all__ = ["BOHR_SUSPECT_RATIO", "FrameError", "Frames", "export_extxyz", "import_frames", "read_frames",
           "validate_frames", "write_frame"]
