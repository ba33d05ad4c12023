"""The model registry: versioned records of trained models in the data catalog, beside the dataset records.

One YAML file per model name (``<catalog>/models/<name>.yaml``) holds every version: the run
directory, model and training settings, the dataset it was trained on (name, path, checksum,
samples), the pinned held-out test indices and the metrics on them (the ``qff evaluate``
keys), its status (``candidate``, ``production``, ``archived``) with the history of changes and
their reasons. Versions are numbered 1, 2, ... and never reused; at most one is in production.
A record is rewritten whole and renamed into place under the model's lock
(``<name>.lock`` beside it), so it is never seen half-written and two writers never interleave.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from qff_core.errors import InputError
from qff_core.store.catalog import CATALOG_ENV, catalog_dir
from qff_core.store.locks import holder_lock

RECORD_SCHEMA = 1
Status = Literal["candidate", "production", "archived"]
PRIMARY_METRICS = (("rotated", "forces_mae_kcal_mol_a"), ("rotated", "energy_mae_kcal_mol"))
"""What promotion compares, in order: rotated-set force MAE, then energy MAE (kcal/mol/A, kcal/mol)."""


class RegistryError(InputError):
    """A model record that cannot be read, or a request it cannot satisfy (the message names the file)."""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class StatusChange(BaseModel):
    """One status a version entered, when and why."""

    model_config = ConfigDict(extra="forbid")

    status: Status
    at: str
    reason: str


class ModelVersion(BaseModel):
    """One registered version of a model."""

    model_config = ConfigDict(extra="forbid")

    version: int = Field(ge=1)
    status: Status
    run_dir: str = Field(description="the training run (absolute path)")
    molecule: str
    n_parameters: int
    model: dict = Field(description="ModelConfig of the run")
    train: dict = Field(description="TrainConfig of the run (without the dataset)")
    dataset: dict = Field(description="path, checksum of the whole dataset, checksum and count of the used samples")
    test_indices: list[int] = Field(description="the pinned held-out test set (dataset indices)")
    metrics: dict[str, dict[str, float]] = Field(description="error metrics on the pinned test set, per set")
    created: str
    updated: str
    history: list[StatusChange]
    notes: dict = Field(default_factory=dict, description="what produced this version (retraining decisions)")

    def primary(self) -> tuple[float, ...]:
        """The promotion metrics, in order."""
        return tuple(float(self.metrics[s][m]) for s, m in PRIMARY_METRICS)


class ModelRecord(BaseModel):
    """Every version of one model name."""

    model_config = ConfigDict(extra="forbid")

    name: str
    kind: Literal["model"] = "model"
    schema_version: int = RECORD_SCHEMA
    versions: list[ModelVersion] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_entry_per_version(self) -> ModelRecord:
        numbers = [v.version for v in self.versions]
        twice = sorted({n for n in numbers if numbers.count(n) > 1})
        if twice:
            raise ValueError(f"version {', '.join(map(str, twice))} appears more than once")
        return self

    def get(self, version: int | None = None) -> ModelVersion:
        """Version ``version``, or the production one (else the newest) when None."""
        if not self.versions:
            raise RegistryError(f"model {self.name!r} has no versions")
        if version is None:
            return self.production() or self.versions[-1]
        for v in self.versions:
            if v.version == version:
                return v
        raise RegistryError(f"model {self.name!r} has no version {version}; it has "
                            f"{', '.join(str(v.version) for v in self.versions)}")

    def production(self) -> ModelVersion | None:
        """The version in production, if any."""
        return next((v for v in self.versions if v.status == "production"), None)


def _safe(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}", name):
        raise InputError(f"model name {name[:120]!r}: use up to 100 letters, digits, '_', '.' and '-' (starting with "
                         "a letter or digit)")
    return name


def _models_folder(catalog: str | Path | None) -> Path:
    """The catalog's ``models`` folder (it may not exist yet); InputError when it or the catalog is a file."""
    folder = catalog_dir(catalog) / "models"
    for p in (folder.parent, folder):
        if p.exists() and not p.is_dir():
            raise InputError(f"the catalog path {p} is a file; give a catalog folder (--catalog DIR or QFF_CATALOG)")
    return folder


def record_path(name: str, catalog: str | Path | None = None) -> Path:
    """Where the record of model ``name`` lives."""
    return _models_folder(catalog) / f"{_safe(name)}.yaml"


def parse_ref(ref: str) -> tuple[str, int | None]:
    """``NAME`` or ``NAME@VERSION`` (``NAME@v3`` too)."""
    name, at, version = ref.partition("@")
    if at and not version:
        raise InputError(f"{ref!r}: give the version after @ (NAME@3), or the name alone for the production version")
    if not version:
        return _safe(name), None
    try:
        return _safe(name), int(version.lstrip("v"))
    except ValueError:
        raise InputError(f"{ref!r}: the version after @ must be a number (NAME@3)") from None


def load(name: str, catalog: str | Path | None = None) -> ModelRecord:
    """The record of model ``name``; RegistryError naming the file when it is missing or invalid."""
    path = record_path(name, catalog)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        known = ", ".join(names(catalog)) or "none"
        raise RegistryError(f"no model {name!r} in {path.parent} (registered: {known}); register one with "
                            "`qff models register RUN --name NAME`") from None
    except (OSError, yaml.YAMLError) as exc:
        raise RegistryError(f"the model record {path} cannot be read ({exc}); restore it from version control") \
            from None
    try:
        record = ModelRecord.model_validate(raw)
    except ValidationError as exc:
        raise RegistryError(f"the model record {path} is not valid ({exc.error_count()} problems, first: "
                            f"{exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}); restore it from version control, "
                            "it is written by qff only") from None
    if record.name != name:
        raise RegistryError(f"the model record {path} names {record.name!r}, not {name!r}; restore it")
    if sum(v.status == "production" for v in record.versions) > 1:
        raise RegistryError(f"the model record {path} has more than one version in production; restore it")
    return record


def names(catalog: str | Path | None = None) -> list[str]:
    """Registered model names."""
    folder = _models_folder(catalog)
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def save(record: ModelRecord, catalog: str | Path | None = None) -> Path:
    """Write ``record`` whole, atomically (call under ``model_lock``)."""
    path = record_path(record.name, catalog)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    tmp.write_text(yaml.safe_dump(record.model_dump(mode="json"), sort_keys=False))
    os.replace(tmp, path)
    return path


@contextmanager
def model_lock(name: str, catalog: str | Path | None = None, *, wait: bool = False, notice=None) -> Iterator[None]:
    """The lock of model ``name``'s record: one writer (register, promote, retrain) at a time."""
    path = record_path(name, catalog)
    with holder_lock(path.with_suffix(".lock"), f"the model {name!r}", wait=wait, notice=notice,
                     hint="run this again when it is done (a retrain holds the model for its whole run; qff retrain "
                          "waits by default)"):
        yield


def check_finished(run) -> None:
    """RegistryError unless the run's training ended: completed or stopped early, not diverged or cut short (its
    parameters would not be the model its settings describe)."""
    _, ckpt = run.final_parameters()
    reason, steps = ckpt.attrs.get("stop_reason"), run.config.steps
    if reason == "non-finite loss":
        raise RegistryError(f"the run in {run.path} diverged (a non-finite loss at step {ckpt.step}); it is no model "
                            "to register: retrain with a lower learning rate")
    if reason is None and ckpt.step < steps:
        raise RegistryError(f"the run in {run.path} stopped at step {ckpt.step} of {steps} (interrupted); finish it "
                            f"with `qff train --resume --run-dir {run.path}` and its settings, then register it")


def version_from_run(run_dir: str | Path, version: int, status: Status, reason: str,
                     test_indices: np.ndarray | None = None, notes: dict | None = None) -> ModelVersion:
    """A version describing the trained run in ``run_dir``, scored on ``test_indices`` (default: its test split)."""
    from qff_core.evaluation import score
    from qff_core.run import open_run

    run = open_run(run_dir)
    check_finished(run)
    test = run.split.test if test_indices is None else np.asarray(test_indices)
    if test.size == 0:
        raise RegistryError(f"the run in {run.path} has no test samples to pin; train it with --test-size > 0")
    metrics = score(run, test)
    dataset = run.dataset()
    now = _now()
    train = run.config.model_dump(mode="json", exclude={"dataset", "model"})
    return ModelVersion(
        version=version, status=status, run_dir=str(Path(run.path).resolve()), molecule=run.model.molecule.name,
        n_parameters=run.model.n_parameters, model=run.config.model.model_dump(mode="json"), train=train,
        dataset={"path": str(Path(run.config.dataset).resolve()), "checksum": dataset.checksum(),
                 "samples_checksum": run.info["dataset"].get("samples_checksum"), "n_samples": dataset.n_samples,
                 "used": int(run.split.used().size), "level_of_theory": run.info["dataset"].get("level_of_theory")},
        test_indices=[int(i) for i in test], metrics=metrics, created=now, updated=now,
        history=[StatusChange(status=status, at=now, reason=reason)], notes=notes or {})


def register(run_dir: str | Path, name: str, *, catalog: str | Path | None = None, promote: bool = False,
             reason: str | None = None) -> ModelVersion:
    """Register the run in ``run_dir`` as the next version of ``name`` (a candidate, or with ``promote`` the
    production version, archiving the previous one)."""
    with model_lock(name, catalog):
        path = record_path(name, catalog)
        record = load(name, catalog) if path.exists() else ModelRecord(name=name)
        here = str(Path(run_dir).resolve())
        again = next((v for v in record.versions if v.run_dir == here), None)
        if again is not None:
            raise RegistryError(f"{run_dir} is registered already, as {name}@{again.version} ({again.status}); "
                                f"promote that version (qff models promote {name}@{again.version}) instead of "
                                "registering it twice")
        version = version_from_run(run_dir, 1 + max((v.version for v in record.versions), default=0), "candidate",
                                   reason or "registered")
        record.versions.append(version)
        if promote:
            set_production(record, version.version, reason or "registered with --promote")
        save(record, catalog)
        return record.get(version.version)


def set_production(record: ModelRecord, version: int, reason: str) -> None:
    """In ``record`` (not yet saved): ``version`` to production, the previous production version archived."""
    target = record.get(version)
    if target.status == "production":
        raise RegistryError(f"{record.name}@{version} is already in production")
    now = _now()
    for v in record.versions:
        if v.status == "production":
            v.status, v.updated = "archived", now
            v.history.append(StatusChange(status="archived", at=now, reason=f"replaced by version {version}: "
                                                                              f"{reason}"))
    target.status, target.updated = "production", now
    target.history.append(StatusChange(status="production", at=now, reason=reason))


def seen_test_samples(candidate: ModelVersion, production: ModelVersion) -> list[int]:
    """The production version's pinned test samples that ``candidate``'s run trained or validated on (same
    dataset): its errors on them are not held-out, so the two versions cannot be compared there."""
    from qff_core.run import open_run

    if candidate.dataset.get("path") != production.dataset.get("path"):
        return []
    split = open_run(candidate.run_dir).split
    seen = set(np.concatenate([split.train, split.val]).tolist())
    return sorted(i for i in production.test_indices if i in seen)


def promote(name: str, version: int, reason: str, *, catalog: str | Path | None = None,
            force: bool = False) -> ModelVersion:
    """Put ``name@version`` in production (the previous production version is archived), with ``reason``. A version
    whose run trained on the production version's pinned test samples is refused unless ``force``."""
    if not reason.strip():
        raise InputError("say why: --reason TEXT is recorded with the status change")
    with model_lock(name, catalog):
        record = load(name, catalog)
        run_dir = Path(record.get(version).run_dir)
        if not (run_dir / "run.json").exists():
            raise RegistryError(f"{name}@{version} points at {run_dir}, which holds no run any more; production would "
                                "have nothing to serve or retrain from. Restore the run, or promote another version")
        production = record.production()
        seen = [] if production is None or production.version == version else \
            seen_test_samples(record.get(version), production)
        if seen and not force:
            shown = ", ".join(map(str, seen[:8])) + (" ..." if len(seen) > 8 else "")
            raise RegistryError(
                f"{name}@{version} was trained or validated on {len(seen)} of the {len(production.test_indices)} test "
                f"samples pinned by production {name}@{production.version} (dataset indices {shown}): its errors "
                f"there are not held-out and it was scored on another test set ({len(record.get(version).test_indices)}"
                f" samples), so the two cannot be compared. Retrain from production (`qff retrain --model {name}`, "
                "which keeps them out), or pass --force to promote it anyway")
        if seen:
            reason = f"{reason} (forced: trained on {len(seen)} of production's pinned test samples)"
        set_production(record, version, reason)
        save(record, catalog)
        return record.get(version)


def summary(version: ModelVersion) -> dict:
    """The fields ``qff models list`` shows."""
    rot = version.metrics.get("rotated", version.metrics.get("test", {}))
    return {"version": version.version, "status": version.status, "molecule": version.molecule,
            "n_parameters": version.n_parameters, "model": version.model.get("model"),
            "n_test": len(version.test_indices), "energy_mae_rot_kcal_mol": rot.get("energy_mae_kcal_mol"),
            "forces_mae_rot_kcal_mol_a": rot.get("forces_mae_kcal_mol_a"), "updated": version.updated,
            "run_exists": (Path(version.run_dir) / "run.json").exists()}


__all__ = ["CATALOG_ENV", "PRIMARY_METRICS", "ModelRecord", "ModelVersion", "RegistryError", "catalog_dir", "load",
           "model_lock", "names", "parse_ref", "promote", "record_path", "register", "save", "set_production",
           "summary", "version_from_run"]
