"""Reference datasets as Zarr groups: geometries first, results filled in as they arrive.

Layout (schema 1): ``positions`` (n, atoms, 3) Angstrom, ``energies`` (n,) eV, ``forces``
(n, atoms, 3) eV/Angstrom, ``species`` (atoms,) atomic numbers, ``status`` (n,) 0 pending /
1 done / 2 failed, ``wall_time_s`` (n,), ``errors`` (n,) text; chunked along n. Attributes
carry units, the level of theory, engine versions, sampler settings and the schema version.

Geometries are added before any calculation, so a sample has a fixed index for life: a
re-run computes exactly the pending and failed indices, never a duplicate. Every write
holds an exclusive file lock (``<name>.lock`` beside the store, ``dataset_lock``), so several
processes may add or record at once without losing updates (Zarr itself rewrites whole
chunks and resizes without coordination); a process computing samples claims them first
(``<name>.claims`` beside the store), so a second process started at once computes only what
nobody is computing. A new dataset is built under a temporary name and renamed into place, so
a crash during creation leaves nothing half-made.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import zarr

from qff_core.errors import DatasetDamagedError, InputError, QffError
from qff_core.molecules import MoleculeSpec, validate_positions
from qff_core.processes import pid_alive
from qff_core.reference.base import CalculationResult
from qff_core.store.locks import file_lock

SCHEMA_VERSION = 1
ARRAYS = ("positions", "energies", "forces", "status", "wall_time_s", "errors")
REQUIRED_ATTRS = ("molecule", "level_of_theory", "units")
PENDING, DONE, FAILED = 0, 1, 2
UNITS = {"positions": "angstrom", "energies": "eV", "forces": "eV/angstrom", "wall_time_s": "s"}


@contextmanager
def _damage_said(path: Path, what: str):
    """Turn a failure to read stored arrays (a truncated chunk, broken metadata) into DatasetDamagedError."""
    try:
        yield
    except QffError:
        raise
    except Exception as exc:  # zarr and its codecs raise many kinds on damaged files
        raise DatasetDamagedError(f"{path} is damaged: {what} cannot be read ({type(exc).__name__}: {exc}); "
                                  "restore the dataset from a copy, or regenerate it") from None


def _sample_counts(path: Path) -> dict[str, int]:
    counts = {}
    for name in ARRAYS:
        with _damage_said(path, f"the array {name!r}"):
            counts[name] = zarr.open_array(str(path / name), mode="r").shape[0]
    return counts


def _check_intact(path: Path, root: zarr.Group) -> None:
    """DatasetDamagedError unless the attributes and arrays of a dataset are all there, with one sample count."""
    missing = [name for name in REQUIRED_ATTRS if name not in root.attrs]
    if missing:
        raise DatasetDamagedError(f"{path} is damaged: its attributes lack {', '.join(missing)}; restore the "
                                  "dataset from a copy, or regenerate it")
    counts = _sample_counts(path)
    if len(set(counts.values())) > 1:
        # Another process may be adding samples right now: it resizes the arrays one by one under the lock.
        try:
            with dataset_lock(path):
                counts = _sample_counts(path)
        except OSError:  # no lock can be taken (a read-only folder): nobody is writing there either
            pass
    if len(set(counts.values())) > 1:
        raise DatasetDamagedError(f"{path} is damaged: its arrays hold different numbers of samples ({counts}); "
                                  "restore the dataset from a copy, or regenerate it")


@dataclass(frozen=True)
class LevelOfTheory:
    """What the reference energies are: engine, method, basis and engine keywords."""

    engine: str
    method: str
    basis: str
    keywords: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        """Plain form for attributes and comparison."""
        return {"engine": self.engine, "method": self.method.lower(), "basis": self.basis.lower(),
                "keywords": dict(self.keywords)}


class Dataset:
    """A reference dataset on disk; open with ``Dataset.create`` or ``Dataset.open``."""

    def __init__(self, path: Path, group: zarr.Group) -> None:
        self.path = path
        self.group = group

    # ------------------------------------------------------------------ opening

    @classmethod
    def create(cls, path: str | Path, molecule: MoleculeSpec, level: LevelOfTheory, *,
               sampler: dict | None = None, chunk: int = 256) -> Dataset:
        """A new dataset, or the existing one at ``path`` if it has the same molecule and level of theory."""
        path = Path(path)
        if (path / "zarr.json").exists():
            ds = cls.open(path)
            ds._check_compatible(molecule, level)
            return ds
        check_writable(path)
        with dataset_lock(path):
            if (path / "zarr.json").exists():  # created meanwhile by another process
                ds = cls.open(path)
                ds._check_compatible(molecule, level)
                return ds
            # Built beside its final name and renamed when complete: a dataset is never seen half-made.
            staging = path.with_name(f"{path.name}.creating-{os.getpid()}")
            shutil.rmtree(staging, ignore_errors=True)
            root = zarr.open_group(str(staging), mode="w", zarr_format=3)
            n_atoms = molecule.n_atoms
            arrays = {
                "positions": ((0, n_atoms, 3), (chunk, n_atoms, 3), "f8", np.nan),
                "energies": ((0,), (chunk,), "f8", np.nan),
                "forces": ((0, n_atoms, 3), (chunk, n_atoms, 3), "f8", np.nan),
                "status": ((0,), (chunk,), "i1", PENDING),
                "wall_time_s": ((0,), (chunk,), "f8", np.nan),
            }
            for name, (shape, chunks, dtype, fill) in arrays.items():
                a = root.create_array(name, shape=shape, chunks=chunks, dtype=dtype, fill_value=fill,
                                      config={"write_empty_chunks": True})
                if name in UNITS:
                    a.attrs["units"] = UNITS[name]
            root.create_array("errors", shape=(0,), chunks=(chunk,), dtype=str, fill_value="")
            species = root.create_array("species", shape=(n_atoms,), chunks=(n_atoms,), dtype="i4")
            species[:] = np.array(molecule.numbers)
            root.attrs.update({
                "schema_version": SCHEMA_VERSION,
                "kind": "qff-reference-dataset",
                "molecule": {"name": molecule.name, "symbols": list(molecule.symbols),
                             "charge": molecule.charge, "multiplicity": molecule.multiplicity},
                "level_of_theory": level.as_dict(),
                "units": UNITS,
                "sampler": sampler or {},
                "engine_versions": [],
            })
            os.rename(staging, path)
        return cls.open(path)

    @classmethod
    def open(cls, path: str | Path) -> Dataset:
        """An existing dataset; InputError if the path holds none or a newer schema (nothing is created)."""
        path = Path(path)
        if path.is_file():
            raise InputError(f"{path} is a file, not a qff dataset (a Zarr folder made by `qff dataset generate`)")
        try:
            node = json.loads((path / "zarr.json").read_text())
        except (OSError, json.JSONDecodeError):
            raise InputError(f"{path} holds no qff dataset (create one with `qff dataset generate`)") from None
        if node.get("node_type") != "group":
            raise InputError(f"{path} is a Zarr {node.get('node_type', 'store')}, not a qff dataset (a Zarr group "
                             "made by `qff dataset generate`)")
        try:
            root = zarr.open_group(str(path), mode="r+", use_consolidated=False)
        except (FileNotFoundError, zarr.errors.GroupNotFoundError):
            raise InputError(f"{path} holds no qff dataset (create one with `qff dataset generate`)") from None
        version = root.attrs.get("schema_version")
        if root.attrs.get("kind") != "qff-reference-dataset" or version is None:
            raise InputError(f"{path} is a Zarr group but not a qff reference dataset")
        if version > SCHEMA_VERSION:
            raise InputError(f"{path} has schema {version}; this qff reads up to {SCHEMA_VERSION}: upgrade qff")
        _check_intact(path, root)
        return cls(path, root)

    def _check_compatible(self, molecule: MoleculeSpec, level: LevelOfTheory) -> None:
        attrs = self.group.attrs
        if list(attrs["molecule"]["symbols"]) != list(molecule.symbols):
            raise InputError(f"{self.path} holds {attrs['molecule']['symbols']}, not {list(molecule.symbols)}")
        held = {k: attrs["molecule"].get(k) for k in ("charge", "multiplicity")}
        asked = {"charge": molecule.charge, "multiplicity": molecule.multiplicity}
        if held != asked:
            differ = ", ".join(f"{k} {held[k]} (asked: {asked[k]})" for k in held if held[k] != asked[k])
            raise InputError(f"{self.path} holds {attrs['molecule']['name']} with {differ}: another electronic "
                             "state is another energy surface; refusing to mix them (write to a new --out)")
        if attrs["level_of_theory"] != level.as_dict():
            raise InputError(
                f"{self.path} was computed at {attrs['level_of_theory']}; refusing to mix in {level.as_dict()} "
                "(write to a new --out)"
            )

    # ------------------------------------------------------------------ reading

    def _array(self, name: str) -> zarr.Array:
        # Re-open every time: another process may have resized the array meanwhile.
        with _damage_said(self.path, name):
            return zarr.open_array(str(self.path / name), mode="r+")

    @property
    def n_samples(self) -> int:
        """Number of geometries, whatever their status."""
        return int(self._array("status").shape[0])

    def status(self) -> np.ndarray:
        """Per-sample status codes (PENDING, DONE, FAILED)."""
        with _damage_said(self.path, "status"):
            return self._array("status")[:]

    def todo(self) -> np.ndarray:
        """Indices still to compute: pending and failed."""
        return np.flatnonzero(self.status() != DONE)

    # ------------------------------------------------------------------ claims of samples being computed

    @property
    def _claims_path(self) -> Path:
        return self.path.with_name(self.path.name + ".claims")

    def _claims(self) -> dict[str, dict]:
        try:
            return json.loads(self._claims_path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def _write_claims(self, claims: dict[str, dict]) -> None:
        if not claims:
            self._claims_path.unlink(missing_ok=True)
            return
        tmp = self._claims_path.with_name(f"{self._claims_path.name}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps(claims))
        os.replace(tmp, self._claims_path)

    def claim_todo(self) -> tuple[np.ndarray, int]:
        """Claim every pending or failed sample nobody else is computing; returns (claimed indices, number being
        computed by other live processes). Claims of processes that are gone (on this host) are taken over."""
        host, me = socket.gethostname(), os.getpid()
        with dataset_lock(self.path):
            claims = {k: v for k, v in self._claims().items()
                      if v.get("pid") != me and (v.get("host") != host or pid_alive(int(v.get("pid", 0))))}
            todo = [int(i) for i in self.todo() if str(int(i)) not in claims]
            busy = sum(1 for i in self.todo() if str(int(i)) in claims)
            claims.update({str(i): {"pid": me, "host": host} for i in todo})
            self._write_claims(claims)
        return np.asarray(todo, dtype=np.int64), busy

    def release_claims(self) -> None:
        """Drop every claim of this process (its computation ended, finished or not)."""
        host, me = socket.gethostname(), os.getpid()
        with dataset_lock(self.path):
            self._write_claims({k: v for k, v in self._claims().items()
                                if not (v.get("pid") == me and v.get("host") == host)})

    def positions(self, indices: Sequence[int] | slice = slice(None)) -> np.ndarray:
        """Geometries (Angstrom)."""
        return self._array("positions")[indices]

    def samples(self, indices: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Positions (Angstrom), energies (eV) and forces (eV/Angstrom) of the samples ``indices``."""
        idx = np.asarray(indices)
        g = self.group
        with _damage_said(self.path, "positions, energies or forces"):
            return (np.asarray(g["positions"].oindex[idx]), np.asarray(g["energies"].oindex[idx]),
                    np.asarray(g["forces"].oindex[idx]))

    def checksum(self, indices: Sequence[int] | None = None) -> str:
        """``sha256:<hex>`` of the arrays (positions, energies, forces, status), independent of chunking: of every
        sample, or of the samples ``indices`` only (what a training run uses; appending samples keeps it)."""
        import hashlib

        digest = hashlib.sha256()
        for name in ("positions", "energies", "forces", "status"):
            array = self._array(name)[:]
            if indices is not None:
                array = array[np.asarray(indices, dtype=np.int64)]
            digest.update(name.encode())
            digest.update(str(array.shape).encode())
            digest.update(np.ascontiguousarray(array).tobytes())
        return "sha256:" + digest.hexdigest()

    def arrays(self, *, only_done: bool = True) -> dict[str, np.ndarray]:
        """positions, energies, forces (and status) as numpy arrays, by default of finished samples."""
        status = self.status()
        keep = status == DONE if only_done else slice(None)
        return {name: self._array(name)[:][keep] for name in ("positions", "energies", "forces")} | {
            "status": status[keep]
        }

    def damaged(self, indices: Sequence[int] | None = None) -> np.ndarray:
        """Indices of finished samples (among ``indices``, default all) whose positions, energy or forces are not
        finite: what a lost or corrupted chunk leaves (zarr reads a missing chunk as the fill value, NaN)."""
        status = self.status()
        idx = np.arange(status.size) if indices is None else np.asarray(indices, dtype=np.int64)
        done = idx[status[idx] == DONE]
        if done.size == 0:
            return done
        x, e, f = self.samples(done)
        finite = np.isfinite(e) & np.isfinite(f).all(axis=(1, 2)) & np.isfinite(x).all(axis=(1, 2))
        return done[~finite]

    def check_finite(self, indices: Sequence[int]) -> None:
        """DatasetDamagedError naming the samples among ``indices`` that are finished but hold non-finite numbers."""
        bad = self.damaged(indices)
        if bad.size:
            shown = ", ".join(str(int(i)) for i in bad[:10]) + (" ..." if bad.size > 10 else "")
            raise DatasetDamagedError(
                f"{self.path} is damaged: {bad.size} finished samples hold NaN or infinite numbers (samples "
                f"{shown}); a chunk was lost or corrupted. Restore the dataset from a copy, or regenerate it")

    def errors(self) -> dict[int, str]:
        """Error messages of failed samples, by index."""
        failed = np.flatnonzero(self.status() == FAILED)
        if failed.size == 0:
            return {}
        errors = self._array("errors")[:]
        return {int(i): str(errors[i]) for i in failed}

    def info(self) -> dict:
        """Counts, units and provenance (JSON-ready)."""
        status = self.status()
        attrs = self._attrs().asdict()
        return {
            "path": str(self.path),
            "schema_version": attrs["schema_version"],
            "molecule": attrs["molecule"],
            "n_samples": int(status.size),
            "n_done": int((status == DONE).sum()),
            "n_failed": int((status == FAILED).sum()),
            "n_pending": int((status == PENDING).sum()),
            "damaged": [int(i) for i in self.damaged()],
            "units": attrs["units"],
            "level_of_theory": attrs["level_of_theory"],
            "engine_versions": attrs.get("engine_versions", []),
            "sampler": attrs.get("sampler", {}),
            "segments": self.segments(),
            "failures": {str(i): msg for i, msg in list(self.errors().items())[:20]},
        }

    # ------------------------------------------------------------------ writing

    def _attrs(self):
        """The attributes as on disk now (another process may have appended a segment since this one opened it);
        written through this fresh copy, they replace zarr.json without losing that process's changes."""
        return zarr.open_group(str(self.path), mode="r+", use_consolidated=False).attrs

    def segments(self) -> list[dict]:
        """How the samples were drawn, one entry per append: sampler settings and the index range
        ``[start, stop)``. A dataset written before segments existed has one, from its ``sampler``."""
        attrs = self._attrs()
        if "segments" in attrs:
            return [dict(seg) for seg in attrs["segments"]]
        sampler = dict(attrs.get("sampler", {}))
        return [{**sampler, "start": 0, "stop": self.n_samples}] if self.n_samples else []

    def add_geometries(self, positions_a: np.ndarray, segment: dict | None = None) -> np.ndarray:
        """Append geometries (pending); returns their indices. ``segment``: how they were drawn (sampler
        settings), recorded with their index range."""
        n_atoms = len(self.group.attrs["molecule"]["symbols"])
        pos = validate_positions(positions_a, n_atoms)
        pos = pos[None] if pos.ndim == 2 else pos
        with dataset_lock(self.path):
            segments = self.segments()
            start = self.n_samples
            for name in ("positions", "energies", "forces", "status", "wall_time_s", "errors"):
                a = self._array(name)
                a.resize((start + len(pos), *a.shape[1:]))
            self._array("positions")[start:] = pos
            if segment is not None:
                self._attrs()["segments"] = [*segments, {**segment, "start": start, "stop": start + len(pos)}]
        return np.arange(start, start + len(pos))

    def record(self, outcomes: Sequence[tuple[int, CalculationResult | BaseException]]) -> None:
        """Store results and failures of samples, by index, in one locked write."""
        if not outcomes:
            return
        with dataset_lock(self.path):
            energies, forces = self._array("energies"), self._array("forces")
            status, wall, errors = self._array("status"), self._array("wall_time_s"), self._array("errors")
            attrs = self._attrs()
            versions = list(attrs.get("engine_versions", []))
            for index, outcome in sorted(outcomes, key=lambda o: o[0]):
                if not 0 <= index < status.shape[0]:
                    raise InputError(f"sample index {index} is outside the dataset (0..{status.shape[0] - 1})")
                if isinstance(outcome, CalculationResult):
                    energies[index] = outcome.energy_ev
                    forces[index] = outcome.forces_ev_per_a
                    wall[index] = outcome.wall_time_s
                    errors[index] = ""
                    status[index] = DONE
                    version = f"{outcome.provenance.get('engine')} {outcome.provenance.get('version')}"
                    if version not in versions:
                        versions.append(version)
                else:
                    errors[index] = f"{type(outcome).__name__}: {outcome}"[:2000]
                    status[index] = FAILED
            if versions != list(attrs.get("engine_versions", [])):
                attrs["engine_versions"] = versions
            claims = self._claims()
            if claims:
                self._write_claims({k: v for k, v in claims.items() if int(k) not in {i for i, _ in outcomes}})


def check_writable(path: str | Path) -> None:
    """InputError unless a dataset can be written at ``path`` (checked before any work starts): not an existing
    file or a foreign folder, in a folder that can be written."""
    from qff_core.store.paths import check_new_store

    path = Path(path)
    check_new_store(path, "--out", "dataset")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        probe = path.parent / f".qff-probe-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise InputError(f"cannot write the dataset at {path}: {exc.strerror}; choose a writable --out") from None


def dataset_lock(path: str | Path):
    """The dataset's exclusive lock (``<name>.lock`` beside it), re-entrant in one process."""
    path = Path(path)
    return file_lock(path.with_name(path.name + ".lock"))
