"""A training run's directory: ``run.json`` (configuration, model, data, normalisation) and
``split.zarr`` (dataset indices of the train/validation/test samples); checkpoints live in
``checkpoints/`` (``qff_core.store.checkpoint``, encoded by ``state.py``).

Runs are portable: ``run.json`` keeps the dataset's path relative to the run directory when
the dataset is inside it or near it (at most two levels up: a project folder moved as a
whole), else absolute, plus the absolute path it had and a checksum of the samples the run
uses. Opening a run resolves the dataset from any working directory, after the run and its
data were moved together, or after the run alone was moved; a dataset whose used samples
changed is refused (``DatasetChangedError``), never silently read. Samples appended later
(a grown dataset) do not change what the run uses.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from qff_core.errors import InputError, QffError
from qff_core.execution.base import ParameterMap, TrainingArrays
from qff_core.models import build_model
from qff_core.models.fragment import AnyModel
from qff_core.molecules import MoleculeSpec
from qff_core.run.config import RESUMABLE_SETTINGS, TrainConfig
from qff_core.run.label_noise import noisy_labels
from qff_core.store.checkpoint import Checkpoint, checkpoint_at, latest_checkpoint, read_checkpoint
from qff_core.store.dataset import DONE, Dataset

logger = logging.getLogger(__name__)

RUN_SCHEMA = 2
"""2: dataset location relative to the run directory, checksum of the used samples."""
RELATIVE_DEPTH = 2
"""A dataset at most this many levels above the run directory is recorded by a relative path."""


class TrainingError(QffError):
    """A run cannot start or continue as asked (existing run without --resume, changed settings)."""


class DatasetChangedError(InputError):
    """The samples a run was trained on are no longer what its dataset holds."""


@dataclass(frozen=True)
class Split:
    """Dataset indices of the training, validation and test samples."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray

    def counts(self) -> dict[str, int]:
        """Samples per part."""
        return {"train": int(self.train.size), "val": int(self.val.size), "test": int(self.test.size)}

    def used(self) -> np.ndarray:
        """Every index the run uses, sorted."""
        return np.sort(np.concatenate([self.train, self.val, self.test]))


def _count(size: float, n: int) -> int:
    return round(size * n) if size < 1 else int(size)


def make_split(status: np.ndarray, config: TrainConfig) -> Split:
    """A seeded split of the finished samples; nested in ``n_train`` (learning curves share test and val)."""
    done = np.flatnonzero(status == DONE)
    if done.size < 3:
        raise InputError(f"the dataset has {done.size} finished samples; training needs at least 3")
    order = np.random.default_rng([config.seed, 7919]).permutation(done)
    n_test = _count(config.test_size, done.size)
    if n_test >= done.size:
        raise InputError(f"test ({n_test}) samples leave nothing of the {done.size} finished samples to train on; "
                         "lower --test-size")
    n_val = _count(config.val_size, done.size - n_test)
    if n_test + n_val >= done.size:
        raise InputError(f"test ({n_test}) and validation ({n_val}) samples leave nothing of the "
                         f"{done.size} finished samples to train on; lower --test-size/--val-size")
    test, val, train = order[:n_test], order[n_test:n_test + n_val], order[n_test + n_val:]
    if config.n_train is not None:
        if config.n_train > train.size:
            raise InputError(f"--n-train {config.n_train} exceeds the {train.size} samples left for training")
        train = train[:config.n_train]
    return Split(train=np.sort(train), val=np.sort(val), test=np.sort(test))


@dataclass(frozen=True)
class Normalisation:
    """Training-set statistics that make the loss dimensionless (eV, eV/Angstrom)."""

    energy_mean_ev: float
    energy_std_ev: float
    force_rms_ev_per_a: float

    @classmethod
    def from_data(cls, energies_ev: np.ndarray, forces_ev_per_a: np.ndarray) -> Normalisation:
        """Statistics of a training set; a single sample or constant energies get unit spread."""
        std = float(np.std(energies_ev))
        rms = float(np.sqrt(np.mean(forces_ev_per_a**2)))
        return cls(float(np.mean(energies_ev)), std if std > 1e-12 else 1.0, rms if rms > 1e-12 else 1.0)


def parameter_map(model: AnyModel, norm: Normalisation) -> ParameterMap:
    """theta_model = multiplier * theta_opt + shift: the optimiser sees s and e0 in units of the training
    energies' spread (``model.scale`` may be an index array: a fragment model has one s per sub-model)."""
    mult = np.ones(model.n_parameters)
    shift = np.zeros(model.n_parameters)
    mult[model.scale] = mult[model.offset] = norm.energy_std_ev
    shift[model.offset] = norm.energy_mean_ev
    return ParameterMap(mult, shift)


@dataclass(frozen=True)
class TrainingData(TrainingArrays):
    """Positions (Angstrom), energies (eV) and forces (eV/Angstrom) of one part of the split."""

    @classmethod
    def take(cls, dataset: Dataset, indices: np.ndarray) -> TrainingData:
        """The samples ``indices`` of ``dataset``, with their clean labels (validation, test, anything scored)."""
        x, e, f = dataset.samples(indices)
        if not (np.isfinite(e).all() and np.isfinite(f).all() and np.isfinite(x).all()):
            dataset.check_finite(indices)  # names the damaged samples (finished ones holding NaN)
        return cls(x, e, f)

    @classmethod
    def training(cls, dataset: Dataset, indices: np.ndarray, config: TrainConfig) -> TrainingData:
        """The training samples ``indices`` of ``dataset`` with the label noise of ``config`` added to the raw
        eV and eV/Angstrom labels (``qff_core.run.label_noise``): what the optimiser, the normalisation statistics
        and the KRR baseline see. Without noise, exactly ``take``."""
        clean = cls.take(dataset, indices)
        positions, energies, forces = clean.positions_a, clean.energies_ev, clean.forces_ev_per_a
        energies, forces = noisy_labels(energies, forces, indices, energy_std_ev=config.label_noise_energy_ev,
                                        forces_std_ev_per_a=config.label_noise_forces_ev_per_a,
                                        seed=config.noise_seed)
        return cls(positions, energies, forces)


@dataclass(frozen=True)
class Run:
    """A run directory: its configuration (``config.dataset`` resolved), model, split and normalisation."""

    path: Path
    config: TrainConfig
    model: AnyModel
    split: Split
    norm: Normalisation
    info: dict

    @property
    def checkpoint_dir(self) -> Path:
        """Where the checkpoints live."""
        return self.path / "checkpoints"

    @property
    def parameter_map(self) -> ParameterMap:
        """Model parameters from the optimiser's."""
        return parameter_map(self.model, self.norm)

    def dataset(self) -> Dataset:
        """The run's dataset."""
        return Dataset.open(self.config.dataset)

    def training_data(self, dataset: Dataset | None = None) -> TrainingData:
        """The training split as the run trains on it (with its label noise, if any); validation and test
        samples are read clean with ``TrainingData.take``."""
        return TrainingData.training(dataset or self.dataset(), self.split.train, self.config)

    def final_parameters(self) -> tuple[np.ndarray, Checkpoint]:
        """Model parameters to use: the best on validation (or the last, without validation)."""
        ckpt_path = latest_checkpoint(self.checkpoint_dir)
        if ckpt_path is None:
            raise InputError(f"{self.path} has no checkpoint yet; train it first (`qff train --run-dir {self.path}`)")
        ckpt = read_checkpoint(ckpt_path)
        return np.asarray(ckpt.arrays["best_params"]), ckpt

    def parameters(self, checkpoint: int | str | Path | None = None) -> tuple[np.ndarray, Checkpoint]:
        """Model parameters: the best (``final_parameters``) when ``checkpoint`` is None, else the parameters at
        that checkpoint (a step number kept in the run, or a checkpoint folder)."""
        if checkpoint is None:
            return self.final_parameters()
        path = checkpoint_at(self.checkpoint_dir, checkpoint) if isinstance(checkpoint, int) else Path(checkpoint)
        ckpt = read_checkpoint(path)
        return np.asarray(ckpt.arrays["params"]), ckpt


def molecule_of(dataset: Dataset, spec: str | None = None) -> MoleculeSpec:
    """The run's molecule: ``spec`` if given, else the dataset's (built-in) one; checked against the data."""
    from qff_core.molecules import load_molecule

    stored = dataset.group.attrs["molecule"]
    molecule = load_molecule(spec or stored["name"])
    if list(molecule.symbols) != list(stored["symbols"]):
        raise InputError(f"molecule {molecule.name} has atoms {' '.join(molecule.symbols)} but the dataset holds "
                         f"{' '.join(stored['symbols'])}; pass the dataset's molecule with --molecule")
    return molecule


def dataset_location(run_dir: Path, dataset_path: Path) -> str:
    """How ``run.json`` records the dataset: relative to the run directory when it lies inside it or at most
    ``RELATIVE_DEPTH`` levels above, else absolute."""
    rel = Path(os.path.relpath(dataset_path.resolve(), run_dir.resolve()))
    return str(rel) if rel.parts.count("..") <= RELATIVE_DEPTH else str(dataset_path.resolve())


def _resolve_dataset(path: Path, recorded: dict) -> Path:
    """The dataset of the run at ``path``: its recorded location (relative to the run), else where it was."""
    candidates = [path / recorded["path"], Path(recorded.get("absolute", recorded["path"]))]
    for candidate in candidates:
        if (candidate / "zarr.json").exists():
            return candidate.resolve()
    tried = ", ".join(dict.fromkeys(str(c) for c in candidates))
    raise InputError(f"the dataset of the run in {path} is not where it was recorded ({tried}); move it back, or "
                     "move it together with the run directory")


def verify_samples(dataset: Dataset, split: Split, recorded: str | None, where: Path) -> None:
    """DatasetChangedError when the samples the run uses differ from those it was created with."""
    used = split.used()
    if used.size and int(used.max()) >= dataset.n_samples:
        raise DatasetChangedError(
            f"the run in {where} uses sample {int(used.max())}, but {dataset.path} now holds {dataset.n_samples} "
            "samples: it was replaced or cut short. Restore that dataset, or train a new run on this one")
    if recorded is None:  # a run written before checksums of used samples existed
        return
    now = dataset.checksum(used)
    if now != recorded:
        raise DatasetChangedError(
            f"the samples the run in {where} was trained on changed in {dataset.path} (checksum {recorded[:19]}... "
            f"became {now[:19]}...): its split and normalisation describe other data. Restore that dataset, or "
            "train a new run on this one")


def open_run(path: str | Path) -> Run:
    """An existing run directory (written by ``qff train``), from any working directory."""
    import zarr

    path = Path(path)
    try:
        info = json.loads((path / "run.json").read_text())
    except (OSError, json.JSONDecodeError):
        raise InputError(f"{path} is not a qff run directory (no readable run.json); create one with `qff train`"
                         ) from None
    dataset_path = _resolve_dataset(path, info["dataset"])
    config = TrainConfig.model_validate({**info["config"], "dataset": str(dataset_path)})
    dataset = Dataset.open(dataset_path)
    model = build_model(molecule_of(dataset, config.molecule), config.model)
    try:
        g = zarr.open_group(str(path / "split.zarr"), mode="r")
        split = Split(train=g["train"][:], val=g["val"][:], test=g["test"][:])
    except Exception as exc:  # missing or damaged: zarr raises several kinds
        raise InputError(f"{path}/split.zarr cannot be read ({type(exc).__name__}); the run's train/validation/test "
                         "split is lost with it: restore the run directory from a copy") from None
    verify_samples(dataset, split, info["dataset"].get("samples_checksum"), path)
    return Run(path, config, model, split, Normalisation(**info["normalisation"]), info)


def _write_info(path: Path, info: dict) -> None:
    """``run.json`` written beside its name and renamed into place: a killed write leaves the old one."""
    tmp = path / "run.json.tmp"
    tmp.write_text(json.dumps(info, indent=2))
    os.replace(tmp, path / "run.json")


def stored_config(path: str | Path) -> dict | None:
    """The settings the run at ``path`` was created with (its dataset resolved where it can be), or None when
    ``path`` holds no readable run: what ``--resume`` starts from."""
    path = Path(path)
    try:
        info = json.loads((path / "run.json").read_text())
        config = dict(info["config"])
    except (OSError, json.JSONDecodeError, KeyError, TypeError):
        return None
    with contextlib.suppress(InputError, KeyError, TypeError):  # else as recorded: opening the run says what is gone
        config["dataset"] = str(_resolve_dataset(path, info["dataset"]))
    return config


def update_resumable_settings(run: Run, config: TrainConfig) -> tuple[Run, dict]:
    """``run`` with the resumable settings of ``config`` (recorded in run.json), and {setting: (was, now)} of
    those that changed."""
    changed = {k: (getattr(run.config, k), getattr(config, k)) for k in RESUMABLE_SETTINGS
               if getattr(run.config, k) != getattr(config, k)}
    if not changed:
        return run, {}
    info = {**run.info, "config": {**run.info["config"], **{k: now for k, (_, now) in changed.items()}}}
    _write_info(run.path, info)
    updated = run.config.model_copy(update={k: now for k, (_, now) in changed.items()})
    return Run(run.path, updated, run.model, run.split, run.norm, info), changed


def create_run(path: str | Path, config: TrainConfig, split: Split | None = None) -> Run:
    """Write ``run.json`` and ``split.zarr`` for a new run (atomically, so a killed start leaves none).
    ``split``: explicit dataset indices (finished samples) instead of the seeded split of ``config``."""
    import zarr

    path = Path(path)
    inside = next((p for p in (path, *path.resolve().parents) if (p / "zarr.json").exists()), None)
    if inside is not None:
        raise InputError(f"--run-dir {path} lies inside the Zarr store {inside}; a run needs a folder of its own "
                         "(runs/NAME, say)")
    dataset = Dataset.open(config.dataset)
    molecule = molecule_of(dataset, config.molecule)
    model = build_model(molecule, config.model)
    if config.init_from is not None:  # before anything is written: a bad warm start leaves no half-made run
        source = open_run(config.init_from)
        if source.model.summary() != model.summary():
            raise InputError(f"--init-from {config.init_from} holds another model ({source.model.kind}, "
                             f"{source.model.n_parameters} parameters) than this run's ({model.kind}, "
                             f"{model.n_parameters} parameters); a warm start needs the same one")
    status = dataset.status()
    if split is None:
        split = make_split(status, config)
    elif (status[split.used()] != DONE).any() or len(set(split.used().tolist())) != split.used().size:
        raise InputError("an explicit split must name distinct finished samples of the dataset")
    not_done = int((status != DONE).sum())
    if not_done:
        logger.warning(f"{dataset.path} has {not_done} of {status.size} samples not done (pending or failed); the "
                       f"run uses the {status.size - not_done} done. Finish them first with `qff dataset generate "
                       "--out ...` (the same command) to train on all")
    train = TrainingData.training(dataset, split.train, config)  # noisy labels are all a user with noisy data has
    norm = Normalisation.from_data(train.energies_ev, train.forces_ev_per_a)
    path.mkdir(parents=True, exist_ok=True)
    g = zarr.open_group(str(path / "split.zarr"), mode="w", zarr_format=3)
    for name, idx in (("train", split.train), ("val", split.val), ("test", split.test)):
        g.create_array(name, data=np.asarray(idx, dtype=np.int64))
    location = dataset_location(path, Path(config.dataset))
    info = {
        "schema_version": RUN_SCHEMA,
        "kind": "qff-training-run",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "config": {**config.model_dump(), "dataset": location},
        "model": model.summary(),
        "dataset": {"path": location, "absolute": str(Path(config.dataset).resolve()),
                    "checksum": dataset.checksum(), "samples_checksum": dataset.checksum(split.used()),
                    "n_samples": dataset.n_samples, "molecule": molecule.name,
                    "level_of_theory": dataset.group.attrs.get("level_of_theory")},
        "split": split.counts(),
        "normalisation": norm.__dict__,
    }
    _write_info(path, info)
    resolved = config.model_copy(update={"dataset": str(Path(config.dataset).resolve())})
    return Run(path, resolved, model, split, norm, info)


__all__ = ["DatasetChangedError", "Normalisation", "Run", "Split", "TrainingData",
           "TrainingError", "create_run", "dataset_location", "make_split", "molecule_of", "open_run", "parameter_map",
           "stored_config", "update_resumable_settings", "verify_samples"]
