"""What an interrupted run keeps: the ids of submitted jobs (re-attached instead of paid twice) and the results
of finished chunks (never run again).

Keys are a digest of the exact rows of a plan (sha256 of the arrays, never ``str()`` of live
objects) plus the chunk index. ``JobJournal``: the backend's job ids, one small JSON file rewritten
atomically (temporary file + ``os.replace``) after every submission, before any result is awaited;
keep it beside the run's checkpoints. ``ChunkResults``: each finished chunk's expectation values and
variances, one ``.npz`` per chunk written atomically as the chunk finishes, on any backend.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from qff_core.execution.shift.planner import Plan


def plan_digest(plan: Plan, tag: str = "") -> str:
    """sha256 of a plan's rows, PUB and chunk layout, and ``tag`` (which program / backend)."""
    h = hashlib.sha256()
    h.update(tag.encode())
    h.update(np.ascontiguousarray(plan.values, dtype=np.float64).tobytes())
    h.update(np.asarray(plan.pubs, dtype=np.int64).tobytes())
    h.update(json.dumps([list(c) for c in plan.chunks]).encode())
    return h.hexdigest()


@dataclass(frozen=True)
class JobJournal:
    """Job ids by (plan digest, chunk), persisted at ``path``."""

    path: Path

    def load(self) -> dict[str, str]:
        """Every recorded key and job id (empty when the file does not exist yet)."""
        try:
            return json.loads(Path(self.path).read_text())
        except FileNotFoundError:
            return {}

    def lookup(self, digest: str, chunk: int) -> str | None:
        """The job id recorded for a chunk, if any."""
        return self.load().get(f"{digest}:{chunk}")

    def record(self, digest: str, chunk: int, job_id: str) -> None:
        """Record (or replace, after a retry) a chunk's job id; atomic on the file system."""
        entries = self.load()
        entries[f"{digest}:{chunk}"] = job_id
        self._write(entries)

    def forget(self, digest: str, chunk: int) -> None:
        """Drop a chunk's job (it failed for good): a rerun submits the chunk again instead of re-attaching."""
        entries = self.load()
        if entries.pop(f"{digest}:{chunk}", None) is not None:
            self._write(entries)

    def _write(self, entries: dict[str, str]) -> None:
        path = Path(self.path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps(entries, indent=1, sort_keys=True))
        os.replace(tmp, path)


@dataclass(frozen=True)
class ChunkResults:
    """Finished chunks' (expectation values, variances) per PUB, by (plan digest, chunk), under ``path``.

    ``namespace`` names the settings that decide the numbers besides the rows (executor, shots, noise,
    mitigation, seed): results of other settings are never reused. A rerun of an interrupted plan runs only the
    chunks that never finished; a job's seed depends on its plan rows alone, so it gives the numbers an
    uninterrupted run gives. ``stats`` counts chunks reused and saved in this process.
    """

    path: Path
    namespace: str = ""
    stats: dict = field(default_factory=lambda: {"reused": 0, "saved": 0}, compare=False, repr=False)

    @property
    def folder(self) -> Path:
        """Where this namespace's chunks live (one folder per namespace, so ``clear`` leaves others alone)."""
        return Path(self.path) / hashlib.sha256(self.namespace.encode()).hexdigest()[:16]

    def _file(self, digest: str, chunk: int) -> Path:
        return self.folder / f"{digest[:32]}-{chunk}.npz"

    def load(self, digest: str, chunk: int) -> list[tuple[np.ndarray, np.ndarray]] | None:
        """A finished chunk's results, or None (never saved, or unreadable: then it runs again)."""
        try:
            with np.load(self._file(digest, chunk), allow_pickle=False) as z:
                out = [(z[f"evs{k}"], z[f"var{k}"]) for k in range(int(z["n_pubs"]))]
        except (FileNotFoundError, KeyError, ValueError, OSError, zipfile.BadZipFile):
            return None
        self.stats["reused"] += 1
        return out

    def save(self, digest: str, chunk: int, results: list[tuple[np.ndarray, np.ndarray]]) -> None:
        """Keep a finished chunk's results; atomic on the file system."""
        path = self._file(digest, chunk)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.stem}.tmp-{os.getpid()}.npz")
        arrays = {"n_pubs": np.asarray(len(results))}
        for k, (evs, var) in enumerate(results):
            arrays[f"evs{k}"], arrays[f"var{k}"] = np.asarray(evs), np.asarray(var)
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
        self.stats["saved"] += 1

    def clear(self) -> None:
        """Forget this namespace's chunks (the plan finished and its result is recorded elsewhere)."""
        shutil.rmtree(self.folder, ignore_errors=True)
        with contextlib.suppress(OSError):  # the folder goes only when no other namespace is left in it
            Path(self.path).rmdir()
