"""Reference-data generation as plain functions: prepare a dataset, compute what is missing, catalog it.

``generate`` is the whole job, three steps: ``prepare_dataset`` validates the request (engine
present, method and basis accepted by a first real calculation), samples geometries
reproducibly and adds them to a Zarr dataset; ``compute_dataset`` fans the pending and failed
samples out in chunks on the configured Dask cluster (``compute_pending`` with a client) and
records each chunk as it returns (the calling process is the only writer); ``catalog_dataset``
writes the record. The Prefect flow (``flows/reference_data.py``) runs the same three steps as
tasks; nothing here imports Prefect.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from qff_core.errors import InputError, Interrupted, QffError
from qff_core.interrupts import raise_if_interrupted
from qff_core.molecules import MoleculeSpec, load_molecule
from qff_core.reference import CalculationRequest, ReferenceEngine, get_engine
from qff_core.reference.base import CalculationResult
from qff_core.sampling import (
    bond_scan,
    masses_amu,
    minimum_normal_modes,
    optimize_geometry,
    rigid_rotations,
    thermal_samples,
)
from qff_core.store.dataset import Dataset, LevelOfTheory, check_writable, dataset_lock

if TYPE_CHECKING:
    from qff_core.distributed import ClusterConfig

ProgressFn = Callable[[int, int, int], None]


class GenerateConfig(BaseModel):
    """What ``qff dataset generate`` computes (YAML or flags)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    molecule: str = Field("h2o", description="built-in or .xyz/.yaml file")
    engine: str = Field("psi4", description="psi4 or pyscf")
    method: str = Field("b3lyp", description="hf, mp2, or a DFT functional (b3lyp, pbe, ...)")
    basis: str = Field("6-31g*", description="basis set, e.g. 6-31g*")
    samples: int = Field(100, ge=1, description="number of geometries in the dataset")
    sampler: Literal["normal_modes", "bond_scan", "rotations", "file"] = Field(
        "normal_modes", description="how geometries are drawn (file: the frames of --geometries, e.g. an MD "
                                    "trajectory, to be labelled)")
    geometries: str | None = Field(None, description="file sampler: .xyz/.extxyz/ASE db whose frames are labelled")
    every: int = Field(1, ge=1, description="file sampler: every N-th frame")
    temperature_k: float = Field(500.0, gt=0, description="normal-mode sampling temperature (K)")
    max_distance_change: float | None = Field(
        0.25, gt=0, description="normal modes: redraw samples that change an interatomic distance by more than this "
                                "fraction of the minimum's (soft modes of clusters); inf (None in a config file) keeps "
                                "every draw")
    scan_range_a: tuple[float, float] = (1.2, 2.6)
    seed: int = Field(2024, ge=0, description="seed of the sampler")
    chunk_size: int = Field(8, ge=1, description="samples per Dask task")
    max_iterations: int = Field(100, ge=1, description="SCF iteration limit")
    timeout_s: float | None = Field(600.0, gt=0, description="seconds per calculation; a timeout fails that sample "
                                                             "only; inf (None in a config file): no limit")
    allow_stretched: bool = Field(False, description="file sampler: skip the check that the positions are not in "
                                                     "Bohr (for geometries far from bonding distances on purpose)")
    keywords: dict = Field(default_factory=dict, description="engine options: psi4 option names (psi4 refuses "
                                                             "unknown ones); pyscf knows only grid: [radial, angular]")
    out: str = Field("data/h2o.zarr", description="Zarr dataset path (created, or resumed when it exists)")

    @field_validator("timeout_s", "max_distance_change")
    @classmethod
    def _infinite_is_no_limit(cls, value: float | None) -> float | None:
        return None if value == math.inf else value  # NaN fails gt=0

    @model_validator(mode="after")
    def _geometries_only_with_the_file_sampler(self) -> GenerateConfig:
        if self.sampler == "file" and self.geometries is None:
            raise ValueError("the file sampler needs --geometries FILE (an .xyz/.extxyz trajectory or ASE database)")
        if self.geometries is not None and self.sampler != "file":
            raise ValueError(f"geometries ({self.geometries}) are read by the file sampler only; add --sampler file, "
                             f"or leave --geometries out to sample with {self.sampler}")
        return self

    def level(self) -> LevelOfTheory:
        """The level of theory recorded in the dataset."""
        return LevelOfTheory(self.engine, self.method, self.basis, self.keywords)

    def request(self, molecule: MoleculeSpec, positions_a: np.ndarray) -> CalculationRequest:
        """One calculation at these settings."""
        return CalculationRequest.create(
            molecule.symbols, positions_a, self.method, self.basis, charge=molecule.charge,
            multiplicity=molecule.multiplicity, max_iterations=self.max_iterations,
            keywords=dict(self.keywords), timeout_s=self.timeout_s,
        )


def sample_geometries(settings: GenerateConfig, molecule: MoleculeSpec, n: int, offset: int,
                      from_file: int = 0) -> tuple[np.ndarray, dict | None]:
    """``n`` new geometries, seeded by ``seed + offset`` (offset = samples already in the dataset), and
    the minimum they were drawn around (positions in Angstrom, harmonic wavenumbers), None for a scan and a file
    (``from_file``: frames of the file the dataset holds already; the new ones follow them)."""
    seed = settings.seed + offset
    if settings.sampler == "file":
        return _file_geometries(settings, molecule, n, from_file, have=offset), None
    if settings.sampler == "bond_scan":
        r0, r1 = settings.scan_range_a
        return bond_scan(molecule, r0, r1, settings.samples)[offset : offset + n], None
    engine = get_engine(settings.engine)

    def energy_gradient(x: np.ndarray) -> tuple[float, np.ndarray]:
        r = engine.compute(settings.request(molecule, x))
        return r.energy_ev, -r.forces_ev_per_a

    try:
        if settings.sampler == "rotations":
            minimum = optimize_geometry(energy_gradient, molecule.positions_a)
            return rigid_rotations(minimum, n, seed), {"positions_a": minimum.tolist()}
        modes = minimum_normal_modes(energy_gradient, molecule.positions_a, masses_amu(molecule.symbols))
    finally:
        engine.close()
    samples = thermal_samples(modes, settings.temperature_k, n, seed, max_distance_change=settings.max_distance_change)
    return samples, {"positions_a": modes.positions_a.tolist(),
                     "frequencies_cm1": [round(float(f), 2) for f in modes.frequencies_cm1]}


def _file_geometries(settings: GenerateConfig, molecule: MoleculeSpec, n: int, offset: int, have: int) -> np.ndarray:
    """Frames ``offset .. offset + n`` of every ``every``-th frame of ``settings.geometries`` (atoms mapped onto the
    molecule's order); ``have``: the samples of the dataset, for the message when the file has too few."""
    from qff_core.errors import GeometryError
    from qff_core.interchange import check_no_repeats, check_not_bohr, read_frames
    from qff_core.molecules.matching import AtomsMismatchError, match_atoms
    from qff_core.molecules.spec import validate_positions

    frames = read_frames(settings.geometries)[:: settings.every]
    if offset + n > len(frames):
        held = f", {offset} of which the dataset holds already" if offset else ""
        total = f" (the total: the dataset holds {have} samples)" if have else ""
        raise InputError(f"{settings.geometries} has {len(frames)} frames (every {settings.every}-th){held}; ask "
                         f"for at most {have + len(frames) - offset} --samples{total}")
    out = []
    for k, atoms in enumerate(frames[offset: offset + n]):
        where = f"frame {(offset + k) * settings.every} of {settings.geometries}"
        try:
            order = list(match_atoms(molecule, atoms.get_chemical_symbols(), atoms.positions))
            out.append(validate_positions(atoms.positions, molecule.n_atoms)[order])
        except (AtomsMismatchError, GeometryError) as exc:
            raise InputError(f"{where}: {exc}") from None
    if not settings.allow_stretched:
        check_not_bohr(out, list(molecule.symbols), str(settings.geometries))
    check_no_repeats(np.stack(out), str(settings.geometries),
                     (offset + np.arange(len(out))) * settings.every)
    return np.stack(out)


def preflight(settings: GenerateConfig) -> MoleculeSpec:
    """The checks that cost nothing, before any work (and before a workflow starts): the molecule, a writable
    ``out`` (or an existing dataset there), the engine installed, the geometry file readable. Returns the molecule."""
    molecule = load_molecule(settings.molecule)
    path = Path(settings.out)
    if not (path / "zarr.json").exists():
        check_writable(path)
    get_engine(settings.engine)  # ResourceError now, not after sampling
    if settings.sampler == "file":
        from qff_core.interchange import read_frames

        read_frames(settings.geometries)
    return molecule


def prepare_dataset(settings: GenerateConfig) -> Dataset:
    """Open or create the dataset and top it up to ``settings.samples`` geometries.

    Everything that can be wrong with the request fails before the dataset is written: an
    unwritable path (or one naming a file), a missing engine, a dataset at another level of
    theory, and (through the first real calculation: the geometry optimisation, or for a file or
    scan the first geometry, whose result is kept) an unknown method or basis. The number of
    samples is decided and the new ones appended under the dataset's lock: two runs started at
    once on one ``--out`` add the geometries once.
    """
    molecule = preflight(settings)
    path = Path(settings.out)
    with dataset_lock(path):
        exists = (path / "zarr.json").exists()
        have = Dataset.create(path, molecule, settings.level()).n_samples if exists else 0  # checks compatibility
        missing = settings.samples - have
        if missing > 0 and settings.sampler == "bond_scan" and have:
            raise InputError("a bond scan is fixed by its range and count; write a new --out to change it")
        from_file = _frames_held(Dataset.open(path), settings) if exists and settings.sampler == "file" else 0
        new, minimum = sample_geometries(settings, molecule, missing, have, from_file) if missing > 0 else (None, None)
        if new is not None and exists and settings.sampler == "file":
            from qff_core.interchange import check_not_duplicates

            check_not_duplicates(Dataset.open(path), new, str(settings.geometries))
        # normal_modes and rotations have run real calculations (the minimum); a file or scan has not: its first
        # geometry is computed now, so an unknown method, basis or charge fails before anything is written
        first = _first_calculation(settings, molecule, new[0]) if new is not None and not exists and \
            minimum is None else None
        sampler = {"kind": settings.sampler, "seed": settings.seed, "temperature_k": settings.temperature_k,
                   "max_distance_change": settings.max_distance_change,
                   "scan_range_a": list(settings.scan_range_a), **({"minimum": minimum} if minimum else {}),
                   **({"geometries": settings.geometries, "every": settings.every,
                       "sha256": _sha256(settings.geometries)} if settings.sampler == "file" else {})}
        # ``sampler`` describes how the dataset was created; every append (the first too) is a segment of its own
        # with its settings and index range, so a top-up at another temperature is recorded as such.
        dataset = Dataset.create(path, molecule, settings.level(), sampler=sampler)
        if exists and (new is not None or len(dataset.todo())):
            check_engine_reproduces(dataset, settings, molecule)
        if new is not None:
            indices = dataset.add_geometries(new, segment=sampler)
            if first is not None:
                dataset.record([(int(indices[0]), first)])
    return dataset


REPRODUCE_TOL_HARTREE = 1e-6
"""A finished sample recomputed before a top-up or resume must come out within this of its stored energy."""


def check_engine_reproduces(dataset: Dataset, settings: GenerateConfig, molecule: MoleculeSpec) -> None:
    """InputError unless the engine, as installed now, recomputes the dataset's first finished sample: another
    program version, default or basis convention would put the new samples on another surface under the same
    level-of-theory label (PySCF's d functions for 6-311G changed once, 4e-4 Hartree)."""
    from qff_core.store.dataset import DONE
    from qff_core.units import HARTREE_EV

    done = np.flatnonzero(dataset.status() == DONE)
    if done.size == 0:
        return
    index = int(done[0])
    positions, energies, _ = dataset.samples([index])
    engine = get_engine(settings.engine)
    try:
        now = engine.compute(settings.request(molecule, positions[0])).energy_ev
    except InputError:
        raise
    except QffError as exc:
        raise InputError(f"{settings.engine} could not recompute sample {index} of {dataset.path} ({exc}), which "
                         "it computed before; check the engine before adding samples to this dataset") from None
    finally:
        engine.close()
    stored = float(energies[0])
    if abs(now - stored) > REPRODUCE_TOL_HARTREE * HARTREE_EV:
        versions = ", ".join(dataset.info()["engine_versions"]) or "none recorded"
        raise InputError(f"{settings.engine} now gives {now:.6f} eV for sample {index} of {dataset.path}, stored as "
                         f"{stored:.6f} eV ({abs(now - stored):.2e} eV apart; a sample is reproduced to "
                         f"{REPRODUCE_TOL_HARTREE:g} Hartree): the engine changed since the dataset was made (made "
                         f"with {versions}), and new samples would lie on another surface; write them to a new --out")


def _sha256(path: str | Path) -> str:
    return "sha256:" + hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _frames_held(dataset: Dataset, settings: GenerateConfig) -> int:
    """How many frames of the file sampler's file (every ``every``-th) the dataset holds: its segments drawn from
    the same file (by content, else by name) with the same ``every``."""
    sha = _sha256(settings.geometries)
    held = 0
    for seg in dataset.segments():
        same = seg.get("sha256") == sha if "sha256" in seg else seg.get("geometries") == settings.geometries
        if seg.get("kind") == "file" and same and seg.get("every") == settings.every:
            held += int(seg["stop"]) - int(seg["start"])
    return held


def _first_calculation(settings: GenerateConfig, molecule: MoleculeSpec,
                       positions_a: np.ndarray) -> CalculationResult | QffError:
    """The first sample's result, or its failure when the request is fine and the geometry is not (no SCF
    convergence, a timeout: that sample fails, as any other would); an InputError (unknown method or basis,
    impossible charge) is raised."""
    engine = get_engine(settings.engine)
    try:
        return engine.compute(settings.request(molecule, positions_a))
    except InputError:
        raise
    except QffError as exc:
        return exc
    finally:
        engine.close()


Outcome = tuple[int, CalculationResult | QffError]


def compute_chunk(settings: GenerateConfig, indices: Sequence[int], positions: np.ndarray, *,
                  engine: ReferenceEngine | None = None) -> list[Outcome]:
    """Compute one chunk of samples; a failure (a timeout too) is that sample's outcome, never the
    chunk's. ``engine``: one to reuse (the caller closes it); else one is made and closed here."""
    molecule = load_molecule(settings.molecule)
    own = engine is None
    engine = get_engine(settings.engine) if own else engine
    out: list[Outcome] = []
    try:
        for index, x in zip(indices, positions, strict=True):
            try:
                out.append((int(index), engine.compute(settings.request(molecule, x))))
            except QffError as exc:
                out.append((int(index), exc))
            except Exception as exc:  # an engine bug must not take the other samples down
                out.append((int(index), QffError(f"{type(exc).__name__}: {exc}")))
    finally:
        if own:
            engine.close()
    return out


def compute_pending(dataset: Dataset, settings: GenerateConfig, *, client=None,
                    progress: ProgressFn | None = None) -> dict:
    """Compute every pending or failed sample nobody else is computing; returns counts (``computed``,
    ``failed``: this run's; ``busy_elsewhere``: samples another live process has claimed; the dataset's totals).

    ``client``: a dask.distributed Client (else this process computes). ``progress(done, total,
    failed)`` is called after each recorded chunk, with counts of this run's samples. Interrupted
    (Ctrl-C), it stops with ``Interrupted`` saying how much was kept: every recorded chunk.
    """
    todo, busy = dataset.claim_todo()
    chunks = [todo[i : i + settings.chunk_size] for i in range(0, len(todo), settings.chunk_size)]
    done = failed = 0

    def record(outcomes: list[Outcome]) -> None:
        nonlocal done, failed
        dataset.record(outcomes)
        done += len(outcomes)
        failed += sum(not isinstance(result, CalculationResult) for _, result in outcomes)
        if progress:
            progress(done, len(todo), failed)
        raise_if_interrupted()  # recorded first: a chunk that finished is never lost

    try:
        if client is None:
            engine = get_engine(settings.engine)  # one for all chunks: a PySCF child process starts once
            try:
                for chunk in chunks:
                    record(compute_chunk(settings, chunk, dataset.positions(chunk), engine=engine))
            finally:
                engine.close()
        else:
            from distributed import as_completed

            futures = [client.submit(compute_chunk, settings, chunk, dataset.positions(chunk), pure=False)
                       for chunk in chunks]
            for future in as_completed(futures):
                record(future.result())
    except KeyboardInterrupt:
        info = dataset.info()
        raise Interrupted(f"kept the {done} of its {len(todo)} samples this run had finished ({info['n_done']} of "
                          f"{info['n_samples']} done in {dataset.path}); run the same command again to continue"
                          ) from None
    finally:
        dataset.release_claims()
    info = dataset.info()
    return {"computed": done, "failed": failed, "busy_elsewhere": busy, "chunks": len(chunks),
            **{k: info[k] for k in ("n_samples", "n_done", "n_failed", "n_pending")}}


def compute_dataset(dataset: Dataset, settings: GenerateConfig, cluster: ClusterConfig | None = None, *,
                    progress: ProgressFn | None = None) -> dict:
    """``compute_pending`` on the Dask cluster ``cluster`` describes (in this process when None), with workers
    of the kind the engine needs (processes for an engine that holds the GIL)."""
    if cluster is None:
        return compute_pending(dataset, settings, progress=progress)
    from qff_core.distributed import dask_client

    with dask_client(cluster.for_engine(settings.engine, settings.timeout_s)) as client:
        return compute_pending(dataset, settings, client=client, progress=progress)


def catalog_dataset(dataset: Dataset, catalog_dir: str | Path) -> Path:
    """Write (or replace) the dataset's record in the data catalog; returns the record's path."""
    from qff_core.store.catalog import catalog_record, write_record

    return write_record(catalog_record(dataset, catalog_dir), catalog_dir)


def _sampler_settings(settings: GenerateConfig) -> dict:
    """The settings that decide which geometries a segment holds."""
    asked = {"kind": settings.sampler, "seed": settings.seed}
    if settings.sampler in ("normal_modes", "rotations"):
        asked |= {"temperature_k": settings.temperature_k}
    if settings.sampler == "normal_modes":
        asked |= {"max_distance_change": settings.max_distance_change}
    if settings.sampler == "bond_scan":
        asked |= {"scan_range_a": list(settings.scan_range_a)}
    if settings.sampler == "file":
        asked = {"kind": "file", "sha256": _sha256(settings.geometries), "every": settings.every}
    return asked


def settings_not_drawn(settings: GenerateConfig) -> str | None:
    """A note when ``settings`` add no sample to the dataset at ``out`` and none of its samples was drawn with
    these sampler settings: a rerun at another temperature or seed would otherwise say nothing and change nothing."""
    path = Path(settings.out)
    if not (path / "zarr.json").exists():
        return None
    dataset = Dataset.open(path)
    if settings.samples > dataset.n_samples:
        return None
    asked = _sampler_settings(settings)
    segments = dataset.segments()
    if any(all(seg.get(k) == v for k, v in asked.items()) for seg in segments):
        return None
    shown = [k for k in asked if k != "sha256"]
    held = "; ".join(f"{seg['stop'] - seg['start']} by " + ", ".join(f"{k} {seg.get(k)}" for k in shown)
                     for seg in segments)
    wanted = ", ".join(f"{k} {asked[k]}" for k in shown)
    return (f"{path} holds {dataset.n_samples} samples ({held}); --samples {settings.samples} adds none, so nothing "
            f"is drawn with {wanted}: --samples counts the dataset's total (raise it to add samples drawn this way, "
            "or write to a new --out)")


def generate(settings: GenerateConfig, *, cluster: ClusterConfig | None = None,
             catalog_dir: str | Path = "data_catalog", progress: ProgressFn | None = None,
             log: Callable[[str], None] | None = None) -> dict:
    """Create or resume a reference dataset: prepare, compute every pending sample, catalog; returns counts,
    ``path`` and ``catalog_record``. A missing ``sbatch``/``qsub`` of the cluster or an unwritable catalog folder
    fails before any work."""
    from qff_core.store.paths import check_writable_dir

    check_writable_dir(catalog_dir, "--catalog")
    if cluster is not None:
        from qff_core.distributed import check_submit_command

        check_submit_command(cluster)
    dataset = prepare_dataset(settings)
    if log is not None:
        log(f"dataset {dataset.path}: {dataset.n_samples} geometries, {len(dataset.todo())} to compute "
            f"({settings.engine} {settings.method}/{settings.basis})")
    summary = compute_dataset(dataset, settings, cluster, progress=progress)
    summary["path"] = str(dataset.path)
    summary["catalog_record"] = str(catalog_dataset(dataset, catalog_dir))
    return summary
