"""The scripted evaluator test double (QCEngine's failure engine): it fails in the modes a test asks for.

``ScriptedEvaluator`` has the local form (``run``); ``ScriptedJobs`` the remote-job form of IBM
Runtime (``submit``, ``job_id``, ``attach``, ``collect``) with a job store that outlives a killed
client. Values come from a real evaluator when one is given (exact Aer), else zeros. Failures
are keyed by call number (1-based): of ``run``, or of ``collect`` for remote jobs.
"""

from __future__ import annotations

import numpy as np


class ScriptedEvaluator:
    """Runs PUBs here; raises ``failures[n]`` on the n-th ``run``."""

    def __init__(self, failures: dict[int, BaseException] | None = None, *, inner=None) -> None:
        self.failures = dict(failures or {})
        self.inner = inner  # a real evaluator (AerEvaluator) for real values, else zeros
        self.runs = 0

    @property
    def calls(self) -> int:
        """Primitive jobs started (runs here, submissions for remote jobs)."""
        return self.runs

    def values(self, program, values, seed):
        if self.inner is None:
            return [(np.zeros(len(v)), np.zeros(len(v))) for v in values]
        return self.inner.run(program, values, seed)

    def run(self, program, values, seed):
        self.runs += 1
        if self.runs in self.failures:
            raise self.failures.pop(self.runs)
        return self.values(program, values, seed)


class ScriptedJobs(ScriptedEvaluator):
    """Remote jobs: results are computed at submission and kept in ``server`` (job id -> results, shared by the
    clients of one test); ``failures[n]`` is raised by the n-th ``collect``."""

    def __init__(self, failures: dict[int, BaseException] | None = None, *, server: dict | None = None,
                 inner=None) -> None:
        super().__init__(failures, inner=inner)
        self.server = {} if server is None else server
        self.submitted: list[str] = []
        self.attached: list[str] = []
        self.collects = 0

    @property
    def calls(self) -> int:
        return len(self.submitted)

    def submit(self, program, values, seed):
        job_id = f"job-{len(self.server)}"
        self.server[job_id] = self.values(program, values, seed)
        self.submitted.append(job_id)
        return job_id

    def job_id(self, job):
        return job

    def attach(self, job_id):
        self.attached.append(job_id)
        return job_id

    def collect(self, job):
        self.collects += 1
        if self.collects in self.failures:
            raise self.failures.pop(self.collects)
        return self.server[job]


class WorkerKiller(ScriptedEvaluator):
    """Kills the Dask worker process that runs a chunk (as the OOM killer or a nanny restart would) until ``kills``
    workers have died; later chunks run normally. ``marker_dir`` is shared across processes: one file per death."""

    def __init__(self, marker_dir: str, kills: int = 1, *, inner=None) -> None:
        super().__init__(inner=inner)
        self.marker_dir = marker_dir
        self.kills = kills

    def run(self, program, values, seed):
        import os
        from pathlib import Path

        deaths = Path(self.marker_dir)
        deaths.mkdir(exist_ok=True)
        if len(list(deaths.iterdir())) < self.kills:
            (deaths / str(os.getpid())).write_text("killed")
            os._exit(1)
        return self.values(program, values, seed)
