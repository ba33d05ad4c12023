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
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qff_core.errors import InputError
from qff_core.molecules import BUILTIN_NAMES, MoleculeSpec
from qff_core.molecules.matching import AtomsMismatchError, formula, match_atoms, repeated_geometries
from qff_core.reference.base import CalculationResult
from qff_core.store.dataset import DONE, Dataset, LevelOfTheory, check_writable, dataset_lock
from qff_core.units import BOHR_ANGSTROM, EV_KCAL_PER_MOL, HARTREE_EV

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


RESERVED_KEYS = frozenset({"species", "pos", "properties", "lattice", "pbc", "qff_index", "level_of_theory", "time",
                           "numbers", "positions", "mass", "masses", "momenta", "charges", "magmoms"})
"""Names extended XYZ or the exported frames already use for something else."""


def check_keys(energy_key: str, forces_key: str) -> None:
    """InputError unless both keys are plain names that extended XYZ round-trips and that mean nothing else."""
    for flag, key in (("--energy-key", energy_key), ("--forces-key", forces_key)):
        if not key.isidentifier():
            raise InputError(f"{flag} {key!r} is not a plain name (letters, digits, _; no spaces, quotes, ':' "
                             "or '='): extended XYZ could not read it back")
        if key.lower() in RESERVED_KEYS:
            raise InputError(f"{flag} {key!r} is a name extended XYZ or the exported frames already use; choose "
                             "another (energy/forces, or MACE's REF_energy/REF_forces)")
    if energy_key == forces_key:
        raise InputError(f"--energy-key and --forces-key are both {energy_key!r}; give them different names")


def export_extxyz(dataset: Dataset, out: str | Path, *, energy_key: str = "energy",
                  forces_key: str = "forces") -> dict:
    """Write the finished samples of ``dataset`` to ``out`` (extended XYZ, all or nothing); returns counts and
    the path."""
    check_keys(energy_key, forces_key)
    status = dataset.status()
    done = np.flatnonzero(status == DONE)
    if done.size == 0:
        raise InputError(f"{dataset.path} has no finished samples to export")
    dataset.check_finite(done)
    positions, energies, forces = dataset.samples(done)
    symbols = dataset.group.attrs["molecule"]["symbols"]
    level = dataset.group.attrs["level_of_theory"]
    lot = f"{level['engine']} {level['method']}/{level['basis']}"
    out = Path(out)
    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    try:
        if out.is_dir():
            raise IsADirectoryError(f"{out} is a directory")
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "w") as fh:
            for k, index in enumerate(done):
                write_frame(fh, symbols, positions[k], energies[k], forces[k], energy_key=energy_key,
                            forces_key=forces_key, info={"qff_index": int(index), "level_of_theory": lot})
        tmp.replace(out)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise InputError(f"cannot write {out}: {exc.strerror or exc}; choose another --out") from None
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
    except KeyError as exc:  # ase.Atoms on a symbol that is no element
        raise InputError(f"{path} holds an unknown element symbol {exc.args[0]!r}") from None
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


def _calc_results(atoms) -> dict:
    """What ASE's readers put in a single-point calculator (extxyz moves ``energy``, ``free_energy``, ``forces``...
    out of the frame's info and arrays into it)."""
    return getattr(atoms.calc, "results", {}) if atoms.calc is not None else {}


def _energy(atoms, key: str, where: str) -> float | None:
    value = atoms.info.get(key, _calc_results(atoms).get(key))
    if value is None:
        return None
    try:
        return float(np.asarray(value, dtype=np.float64).item())
    except (TypeError, ValueError):
        raise FrameError(f"{where}: the energy ('{key}') is {value!r}, not one number; check --energy-key") from None


def _forces(atoms, key: str, where: str) -> np.ndarray | None:
    value = atoms.arrays.get(key, _calc_results(atoms).get(key) if key == "forces" else None)
    if value is None:
        return None
    try:
        f = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise FrameError(f"{where}: the forces ('{key}') are not numbers; check --forces-key") from None
    if f.shape != (len(atoms), 3):
        raise FrameError(f"{where}: the forces ('{key}') have shape {f.shape}, not ({len(atoms)}, 3) "
                         "(atoms, x y z); check --forces-key")
    return f


def _looks_like_bohr(symbols, positions_a: np.ndarray) -> bool:
    """Every atom's nearest neighbour farther than ``BOHR_SUSPECT_RATIO`` times their covalent-radius sum."""
    from ase.data import atomic_numbers, covalent_radii

    if len(symbols) < 2:
        return False
    radii = np.array([covalent_radii[atomic_numbers[s]] for s in symbols])
    d = np.linalg.norm(positions_a[:, None] - positions_a[None], axis=-1)
    np.fill_diagonal(d, np.inf)
    ratio = d / (radii[:, None] + radii[None, :])
    return bool(np.all(ratio.min(axis=1) > BOHR_SUSPECT_RATIO))


def check_not_bohr(frames_positions_a: list[np.ndarray], symbols, source: str, *, first_frame: int = 0,
                   override: str | None = "--allow-stretched") -> None:
    """FrameError when positions look like Bohr. With three or more atoms one frame tells (a stretched geometry
    rarely moves every atom away from every neighbour); a diatomic's frame has one distance, and a bond scan
    legitimately stretches it, so there the file is judged as a whole: refused when most frames look stretched.
    ``first_frame``: the file's number of the first frame given; ``override``: the flag that skips the check."""
    stretched = [k for k, x in enumerate(frames_positions_a) if _looks_like_bohr(symbols, x)]
    if not stretched or (len(symbols) == 2 and 2 * len(stretched) <= len(frames_positions_a)):
        return
    many = f" (and {len(stretched) - 1} more frames)" if len(stretched) > 1 else ""
    escape = f", or pass {override} if they are right" if override else ""
    raise FrameError(f"frame {first_frame + stretched[0]}{many} of {source}: every atom is over {BOHR_SUSPECT_RATIO}x "
                     f"its bonding distance from its nearest neighbour; the positions look like Bohr (or a molecule "
                     f"split across a periodic cell). Convert them to Angstrom (multiply by {BOHR_ANGSTROM}){escape}")


def validate_frames(frames: list, molecule: MoleculeSpec, *, energy_key: str = "energy",
                    forces_key: str = "forces", source: str = "the file", allow_stretched: bool = False) -> Frames:
    """Check every frame and put its atoms in the molecule's order; FrameError naming the first bad frame.
    ``allow_stretched``: skip the Bohr check (for geometries far from any bonding distance on purpose)."""
    from qff_core.errors import GeometryError
    from qff_core.molecules.spec import validate_positions

    pos, ens, fos = [], [], []
    for k, atoms in enumerate(frames):
        where = f"frame {k} of {source}"
        symbols = atoms.get_chemical_symbols()
        if np.any(atoms.pbc):
            raise FrameError(f"{where} is periodic (pbc {atoms.pbc.tolist()}): qff models isolated molecules; "
                             "write the frames without a cell")
        try:
            order = list(match_atoms(molecule, symbols, atoms.positions))
        except AtomsMismatchError:
            raise FrameError(f"{where} has {formula(symbols)} ({len(symbols)} atoms); the molecule "
                             f"{molecule.name} is {formula(molecule.symbols)} ({molecule.n_atoms} atoms)") from None
        e, f = _energy(atoms, energy_key, where), _forces(atoms, forces_key, where)
        if e is None:
            raise FrameError(f"{where} has no energy (info key '{energy_key}'; set --energy-key)")
        if f is None:
            raise FrameError(f"{where} has no forces (per-atom array '{forces_key}'; set --forces-key)")
        x = np.asarray(atoms.positions, dtype=np.float64)
        if not (np.isfinite(e) and np.all(np.isfinite(f)) and np.all(np.isfinite(x))):
            raise FrameError(f"{where} holds NaN or infinite values (energy, forces or positions)")
        try:
            validate_positions(x, molecule.n_atoms)
        except GeometryError as exc:
            raise FrameError(f"{where}: {exc}") from None
        pos.append(x[order])
        ens.append(e)
        fos.append(f[order])
    if not allow_stretched:
        check_not_bohr(pos, list(molecule.symbols), source)
    check_no_repeats(np.stack(pos), source)
    return Frames(np.stack(pos), np.asarray(ens, dtype=np.float64), np.stack(fos))


def check_no_repeats(positions_a: np.ndarray, source: str, frame_numbers: np.ndarray | None = None) -> None:
    """FrameError when a file's frames repeat one another (up to rotation, translation and permutation): a copy
    adds no information and can land on both sides of a train/test split. ``frame_numbers``: the file's number of
    each frame given (default 0, 1, ...)."""
    repeats = repeated_geometries(positions_a)
    if repeats:
        number = np.arange(len(positions_a)) if frame_numbers is None else np.asarray(frame_numbers)
        k = min(repeats)
        raise FrameError(f"frame {number[k]} of {source} repeats frame {number[repeats[k]]} (up to rotation, "
                         f"translation and permutation; {len(repeats)} repeated frames in all): a copy adds no "
                         "information and can land on both sides of a train/test split; leave the copies out")


def check_not_duplicates(dataset: Dataset, positions_a: np.ndarray, source: str) -> None:
    """FrameError when frames are geometries the dataset already holds (up to rotation, translation and
    permutation): a copy adds no information, and a copy of a test sample in training would flatter the model."""
    from qff_core.molecules.matching import same_geometries

    if dataset.n_samples == 0:
        return
    copies = same_geometries(dataset.positions(), positions_a)
    if copies:
        first = min(copies)
        raise FrameError(f"{len(copies)} frames of {source} are samples the dataset {dataset.path} already holds "
                         f"(frame {first} is sample {copies[first]}, up to rotation, translation and permutation); "
                         "leave them out of the file")


ENERGY_OFFSET_LIMIT_EV = 10.0
"""Imported energies whose median lies farther than this from the median of the samples they join are refused:
one molecule at one level of theory spans a few eV, another unit (Hartree, kcal/mol) or reference does not."""


def check_energies_join(dataset: Dataset, energies_ev: np.ndarray, source: str) -> None:
    """FrameError when energies appended to ``dataset`` sit on another scale than its finished samples."""
    done = np.flatnonzero(dataset.status() == DONE)
    if done.size == 0:
        return
    have = float(np.median(dataset.samples(done)[1]))
    new = float(np.median(energies_ev))
    if abs(new - have) > ENERGY_OFFSET_LIMIT_EV:
        raise FrameError(f"the energies of {source} (median {new:.4f}) are {abs(new - have):.1f} eV from those of "
                         f"{dataset.path} (median {have:.4f} eV): another unit (Hartree: x {HARTREE_EV:.4f}; "
                         "kcal/mol) or another reference energy; import them in eV at the dataset's level of theory "
                         "or into a new dataset")


ATOM_ENERGY_HARTREE = {"H": -0.5, "He": -2.862, "Li": -7.433, "Be": -14.573, "B": -24.529, "C": -37.689,
                       "N": -54.401, "O": -74.809, "F": -99.409, "Ne": -128.547, "Na": -161.859, "Mg": -199.615,
                       "Al": -241.877, "Si": -288.854, "P": -340.719, "S": -397.505, "Cl": -459.482}
"""Hartree-Fock energies of the free atoms: a molecule's total energy lies within a few % of their sum."""
OTHER_UNITS = {"Hartree": 1.0 / HARTREE_EV, "kcal/mol": EV_KCAL_PER_MOL, "kJ/mol": EV_KCAL_PER_MOL * 4.184}
"""Energy units mistaken for eV, as the factor from eV to them."""


def check_energy_unit(energies_ev: np.ndarray, symbols: list[str], source: str) -> None:
    """FrameError when total energies sit where the molecule's total energy would in another unit (new datasets:
    an appended file is held against the data it joins). Relative energies (near zero) pass."""
    if not all(s in ATOM_ENERGY_HARTREE for s in symbols):
        return
    atoms_ev = sum(ATOM_ENERGY_HARTREE[s] for s in symbols) * HARTREE_EV
    median = float(np.median(energies_ev))
    for unit, factor in OTHER_UNITS.items():
        if 0.8 < median / (atoms_ev * factor) < 1.25:
            raise FrameError(f"the energies of {source} (median {median:.4f}) are where {formula(symbols)}'s total "
                             f"energy lies in {unit} ({atoms_ev * factor:.1f} for its free atoms), not in eV "
                             f"({atoms_ev:.1f}); convert them to eV (and the forces to eV/Angstrom)")


def _level(text: str | None) -> LevelOfTheory:
    """``"B3LYP/6-31G*"`` (anything else: the whole text as the method) as an imported level of theory."""
    text = (text or "unknown").strip()
    method, _, basis = text.partition("/")
    return LevelOfTheory("imported", method.strip() or "unknown", basis.strip() or "unknown",
                         {"description": text})


def import_frames(path: str | Path, molecule: MoleculeSpec, out: str | Path, *, level_of_theory: str | None = None,
                  energy_key: str = "energy", forces_key: str = "forces", allow_stretched: bool = False) -> dict:
    """A dataset at ``out`` holding the frames of ``path`` (created, or appended to when it exists at the same
    level of theory); nothing is written unless every frame is valid (and, appended, on the dataset's energy
    scale). A file already imported is not added twice. Without ``level_of_theory``, frames that all state one
    (as qff's export writes it) give theirs."""
    check_keys(energy_key, forces_key)
    path = Path(path)
    raw = read_frames(path)
    if level_of_theory is None:  # frames qff exported say theirs: one text for all of them
        said = {str(atoms.info.get("level_of_theory")) for atoms in raw}
        level_of_theory = said.pop() if len(said) == 1 and "None" not in said else None
    frames = validate_frames(raw, molecule, energy_key=energy_key, forces_key=forces_key,
                             source=path.name, allow_stretched=allow_stretched)
    sha = "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    out = Path(out)
    if not (out / "zarr.json").exists():
        check_writable(out)
    with dataset_lock(out):  # checked and appended under the lock: two imports of one file add it once
        return _import_locked(path, frames, sha, molecule, out, level_of_theory, energy_key, forces_key)


def _import_locked(path: Path, frames: Frames, sha: str, molecule: MoleculeSpec, out: Path,
                   level_of_theory: str | None, energy_key: str, forces_key: str) -> dict:
    if not (out / "zarr.json").exists():
        check_energy_unit(frames.energies_ev, list(molecule.symbols), path.name)
    else:
        existing = Dataset.open(out)
        computed = dict(existing.group.attrs["level_of_theory"])
        if computed.get("engine") != "imported":
            engine, method, basis = (computed.get(k) for k in ("engine", "method", "basis"))
            spec = molecule.name if molecule.name in BUILTIN_NAMES else "<the molecule file>"
            raise InputError(
                f"{out} was computed by qff ({engine} {method}/{basis}); imported energies go only into a dataset of "
                f"imported data (write to a new --out). To add these geometries to {out} at its own level of "
                f"theory, compute them: `qff dataset generate --sampler file --geometries {path} --samples "
                f"{existing.n_samples + len(frames.energies_ev)} --engine {engine} --method {method} --basis {basis} "
                f"--molecule {spec} --out {out}` (and the keywords it was made with, if any)")
        if not any(seg.get("sha256") == sha for seg in existing.segments()):
            check_energies_join(existing, frames.energies_ev, path.name)
            check_not_duplicates(existing, frames.positions_a, path.name)
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


__all__ = ["BOHR_SUSPECT_RATIO", "ENERGY_OFFSET_LIMIT_EV", "RESERVED_KEYS", "FrameError", "Frames",
           "check_energies_join", "check_keys", "check_no_repeats", "check_not_bohr", "check_not_duplicates",
           "export_extxyz", "import_frames", "read_frames", "validate_frames", "write_frame"]
