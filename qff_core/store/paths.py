"""Checks that an output location can be written, made before any work starts (nothing is left behind)."""

from __future__ import annotations

import os
from pathlib import Path

from qff_core.errors import InputError


def check_writable_dir(path: str | Path, flag: str) -> None:
    """InputError unless ``path`` is (or can become) a writable directory; creates nothing that was not there."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"cannot write {flag} {path}: it is a file, not a folder; choose another {flag}")
    probe_dir = path if path.exists() else next((p for p in path.parents if p.exists()), Path("."))
    if not probe_dir.is_dir():
        raise InputError(f"cannot write {flag} {path}: {probe_dir} is a file, not a folder; choose another {flag}")
    if not os.access(probe_dir, os.W_OK | os.X_OK):
        raise InputError(f"cannot write {flag} {path}: {probe_dir} is not writable; choose a writable {flag}")


def check_new_store(path: str | Path, flag: str, what: str) -> None:
    """InputError unless ``path`` is free or holds a Zarr store (``what``: 'dataset'...) to resume, and its folder
    is writable."""
    path = Path(path)
    if path.is_file():
        raise InputError(f"{flag} {path} names an existing file; choose a new path for the {what}")
    if path.is_dir() and not (path / "zarr.json").exists() and any(path.iterdir()):
        raise InputError(f"{flag} {path} is a folder that holds no {what}; choose a new path for the {what}")
    check_writable_dir(path.parent, flag)


__all__ = ["check_new_store", "check_writable_dir"]
