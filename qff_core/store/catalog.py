"""The data catalog: one small YAML record per dataset, pointing at its Zarr store.

A record names the dataset, where it lives, its schema version, counts, provenance and a
checksum of its arrays (SHA-256 over the bytes of positions, energies, forces and status),
so that a training run can say exactly which data it saw. ``location`` is relative to the
folder that holds the catalog (``data/h2o.zarr`` beside ``data_catalog/``), absolute when the
dataset lies outside it: the same from any working directory. Two datasets of one name in
different places get two records (the second's name carries a hash of its location).
"""

from __future__ import annotations

import hashlib
import os
import re
from datetime import UTC, datetime
from pathlib import Path

import yaml

from qff_core.store.dataset import Dataset

CATALOG_ENV = "QFF_CATALOG"
DEFAULT_CATALOG = "data_catalog"


def catalog_dir(catalog: str | Path | None = None) -> Path:
    """The catalog folder: ``catalog``, else ``$QFF_CATALOG``, else ``data_catalog``."""
    return Path(catalog or os.environ.get(CATALOG_ENV) or DEFAULT_CATALOG)


def record_location(path: str | Path, catalog_dir: str | Path) -> str:
    """Where a dataset lies, relative to the folder holding the catalog (absolute when outside it)."""
    path, base = Path(path).resolve(), Path(catalog_dir).resolve().parent
    return str(path.relative_to(base)) if path.is_relative_to(base) else str(path)


def catalog_record(dataset: Dataset, catalog_dir: str | Path, *, name: str | None = None) -> dict:
    """The record of ``dataset`` in the catalog at ``catalog_dir`` (JSON/YAML-ready)."""
    info = dataset.info()
    return {
        "name": name or dataset.path.stem,
        "kind": "dataset",
        "location": record_location(dataset.path, catalog_dir),
        "schema_version": info["schema_version"],
        "counts": {k: info[k] for k in ("n_samples", "n_done", "n_failed", "n_pending")},
        "units": info["units"],
        "provenance": {
            "molecule": info["molecule"],
            "level_of_theory": info["level_of_theory"],
            "engine_versions": info["engine_versions"],
            "sampler": info["sampler"],
            "segments": info["segments"],
        },
        "checksum": dataset.checksum(),
        "updated": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def write_record(record: dict, catalog_dir: str | Path) -> Path:
    """Write (or replace) ``<catalog_dir>/<name>.yaml`` atomically; returns its path. A record of that name for a
    dataset elsewhere is kept: this one is named ``<name>-<hash of its location>``. A record that says what the
    file already says (only ``updated`` would change) leaves the file as it is, so rerunning a finished job
    does not dirty a versioned catalog."""
    directory = Path(catalog_dir)
    directory.mkdir(parents=True, exist_ok=True)
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", record["name"]).strip("-") or "dataset"
    path = directory / f"{safe}.yaml"
    if path.exists() and (yaml.safe_load(path.read_text()) or {}).get("location") != record["location"]:
        digest = hashlib.sha256(record["location"].encode()).hexdigest()[:8]
        record = {**record, "name": f"{record['name']}-{digest}"}
        path = directory / f"{safe}-{digest}.yaml"
    if path.exists():
        old = yaml.safe_load(path.read_text()) or {}
        if {k: v for k, v in old.items() if k != "updated"} == {k: v for k, v in record.items() if k != "updated"}:
            return path
    tmp = path.with_suffix(f".yaml.tmp-{os.getpid()}")
    tmp.write_text(yaml.safe_dump(record, sort_keys=False))
    os.replace(tmp, path)
    return path
