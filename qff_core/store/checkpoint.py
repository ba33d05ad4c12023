"""Training checkpoints: one Zarr group per checkpoint, each written whole or not at all.

A checkpoint is built as ``step_<n>.zarr.partial-<pid>-<random>`` beside its final name, then renamed
into place (an atomic directory rename); ``latest`` is a symlink swapped atomically with
``os.replace``. A process killed at any moment leaves either the old or the new checkpoint
visible, never a half-written one; leftovers of killed writers are removed on the next write.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import zarr

from qff_core.errors import CheckpointDamagedError, InputError, QffError
from qff_core.processes import pid_alive

CHECKPOINT_SCHEMA = 1
LATEST = "latest"


@dataclass(frozen=True)
class Checkpoint:
    """Arrays (by slash-separated name) and JSON attributes of one checkpoint."""

    step: int
    arrays: dict[str, np.ndarray]
    attrs: dict = field(default_factory=dict)
    path: Path | None = None


def _name(step: int) -> str:
    return f"step_{step:08d}.zarr"


def write_checkpoint(directory: str | Path, checkpoint: Checkpoint, *, keep: int = 3) -> Path:
    """Write ``checkpoint`` into ``directory`` atomically, point ``latest`` at it, keep the newest ``keep``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / _name(checkpoint.step)
    # A fresh name every time: a write cut short by Ctrl-C may leave zarr's I/O thread still writing into the
    # last staging folder while the interrupt handler writes the same step again.
    staging = directory / f"{final.name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    root = zarr.open_group(str(staging), mode="w", zarr_format=3)
    sums: dict[str, str] = {}
    for name, value in checkpoint.arrays.items():
        value = np.asarray(value)
        parent = root
        *groups, leaf = name.split("/")
        for g in groups:
            parent = parent.require_group(g)
        chunks = tuple(max(1, d) for d in value.shape)
        a = parent.create_array(leaf, shape=value.shape, dtype=value.dtype, chunks=chunks,
                                compressors=None, config={"write_empty_chunks": True})
        a[...] = value
        sums[name] = _checksum(value)
    root.attrs.update({"schema_version": CHECKPOINT_SCHEMA, "kind": "qff-checkpoint", "step": checkpoint.step,
                       "checksums": sums, **json.loads(json.dumps(checkpoint.attrs))})
    _fsync_tree(staging)
    if final.exists():  # the same step written again (a resumed run): replace it
        shutil.rmtree(final)
    os.rename(staging, final)
    link = directory / LATEST
    tmp_link = directory / f".{LATEST}.{os.getpid()}"
    if tmp_link.is_symlink() or tmp_link.exists():
        tmp_link.unlink()
    os.symlink(final.name, tmp_link)
    os.replace(tmp_link, link)
    _prune(directory, keep)
    return final


def _checksum(value: np.ndarray) -> str:
    """sha256 of an array's dtype, shape and bytes: what a read must give back."""
    import hashlib

    value = np.ascontiguousarray(value)
    return hashlib.sha256(f"{value.dtype.str}{value.shape}".encode() + value.tobytes()).hexdigest()


def _fsync_tree(path: Path) -> None:
    """Flush the files of a finished checkpoint to disk before it becomes visible."""
    for p in path.rglob("*"):
        if p.is_file():
            with open(p, "rb") as fh:
                os.fsync(fh.fileno())


def _prune(directory: Path, keep: int) -> None:
    latest = os.readlink(directory / LATEST)
    steps = sorted(p for p in directory.glob("step_*.zarr") if p.is_dir())
    for p in steps[:-keep] if keep > 0 else []:
        if p.name != latest:
            shutil.rmtree(p, ignore_errors=True)
    for p in directory.glob("step_*.zarr.partial-*"):  # left by a killed writer, or by an interrupted write here
        pid = p.name.split(".partial-", 1)[1].split("-", 1)[0]
        if pid.isdigit() and (int(pid) == os.getpid() or not pid_alive(int(pid))):
            shutil.rmtree(p, ignore_errors=True)


def latest_checkpoint(directory: str | Path) -> Path | None:
    """The checkpoint ``latest`` points at, or None when there is none yet. A run copied without its
    symlinks (``cp -r``, an archive) has ``latest`` as a folder or none: then the highest step is the latest."""
    link = Path(directory) / LATEST
    if link.is_symlink():
        target = link.parent / os.readlink(link)
        if (target / "zarr.json").exists():
            return target
        kept = sorted(p.name for p in Path(directory).glob("step_*.zarr") if (p / "zarr.json").exists())
        if not kept:
            return None
        raise CheckpointDamagedError(f"{link} points at {target.name}, which is gone; kept: {', '.join(kept)}. Pick "
                                     f"one with --checkpoint STEP, or remove {link} to use the newest kept one")
    steps = sorted(p for p in Path(directory).glob("step_*.zarr") if (p / "zarr.json").exists())
    return steps[-1] if steps else None


def checkpoint_at(directory: str | Path, step: int) -> Path:
    """The checkpoint of ``step`` in ``directory``; InputError naming the steps kept when there is none."""
    path = Path(directory) / _name(step)
    if not (path / "zarr.json").exists():
        kept = sorted(int(p.name[5:13]) for p in Path(directory).glob("step_*.zarr") if (p / "zarr.json").exists())
        raise InputError(f"no checkpoint of step {step} in {directory}; kept: {kept or 'none'}")
    return path


def read_checkpoint(path: str | Path) -> Checkpoint:
    """All arrays and attributes of the checkpoint at ``path``."""
    path = Path(path)
    try:
        root = zarr.open_group(str(path), mode="r", use_consolidated=False)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError):
        raise InputError(f"{path} holds no checkpoint") from None
    except Exception as exc:  # broken metadata
        raise CheckpointDamagedError(f"{path} is damaged: {type(exc).__name__}: {exc}; {_USE_ANOTHER}") from None
    attrs = dict(root.attrs)
    if attrs.get("kind") != "qff-checkpoint":
        raise InputError(f"{path} is not a qff checkpoint")
    if attrs.get("schema_version", 0) > CHECKPOINT_SCHEMA:
        raise InputError(f"{path} has checkpoint schema {attrs['schema_version']}; upgrade qff to read it")
    arrays: dict[str, np.ndarray] = {}

    def walk(group: zarr.Group, prefix: str) -> None:
        for name, member in group.members():
            key = f"{prefix}{name}"
            if isinstance(member, zarr.Group):
                walk(member, key + "/")
            else:
                if member.nchunks_initialized < member.nchunks:  # written with every chunk: one is gone
                    raise CheckpointDamagedError(f"{path} is damaged: the array {key!r} lost a chunk file (zarr would "
                                                 f"read zeros); {_USE_ANOTHER}")
                arrays[key] = member[...]

    try:
        walk(root, "")
    except QffError:
        raise
    except Exception as exc:  # zarr and numpy raise many kinds on truncated or garbled files
        raise CheckpointDamagedError(f"{path} is damaged: {type(exc).__name__}: {exc}; {_USE_ANOTHER}") from None
    sums = attrs.pop("checksums", None) or {}  # checkpoints written before checksums have none
    altered = sorted(k for k, digest in sums.items() if k not in arrays or _checksum(arrays[k]) != digest)
    if altered:
        raise CheckpointDamagedError(f"{path} is damaged: {', '.join(altered)} differ from what was written "
                                     f"(checksum); {_USE_ANOTHER}")
    step = int(attrs.pop("step"))
    for k in ("schema_version", "kind"):
        attrs.pop(k, None)
    return Checkpoint(step=step, arrays=arrays, attrs=attrs, path=path)


_USE_ANOTHER = ("remove it and the 'latest' link beside it to fall back to the newest kept checkpoint (qff train "
                "--resume continues from there), or pick a kept one with --checkpoint STEP (qff md, qff vibrations, "
                "QFFCalculator)")
