"""A journal of submitted job ids, so that an interrupted run re-attaches instead of paying twice.

Keys are a digest of the exact rows of a plan (sha256 of the arrays, never ``str()`` of live
objects) plus the chunk index; values are the backend's job ids. The file is small JSON,
rewritten atomically (temporary file + ``os.replace``) after every submission, before any
result is awaited. Keep it beside the run's checkpoints.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
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
