"""Dask clients from configuration: a LocalCluster, a running scheduler, or SLURM/PBS jobs.

One validated ``ClusterConfig`` (a YAML file, examples in ``deploy/dask/``) says where the
workers come from; ``dask_client(config)`` starts them, waits until they have connected
(``worker_timeout_s``), yields a Client and always closes what it started. Job-queue
clusters use dask-jobqueue: one batch job per ``jobs``, each running ``processes`` workers
with the Python of this process (``sys.executable``), so the jobs see the same packages.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from qff_core.errors import ClusterUnavailableError, InputError, WorkerTimeoutError

CLUSTER_ENV = "QFF_CLUSTER"  # path of the cluster YAML used when no --cluster is given
ClusterKind = Literal["local", "address", "slurm", "pbs"]
# kind -> (submit command, dask_jobqueue class)
_JOBQUEUE = {"slurm": ("sbatch", "SLURMCluster"), "pbs": ("qsub", "PBSCluster")}


class LocalClusterConfig(BaseModel):
    """A LocalCluster on this machine: ``n_workers`` workers of one thread each."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n_workers: int = Field(2, ge=1)
    processes: bool | None = Field(
        None, description="worker processes (True) or threads of this process (False); None: chosen by the engine")


WALLTIME = re.compile(r"^(\d+-)?\d+(:\d{1,2}){0,2}$")
MEMORY = re.compile(r"^\d+(\.\d+)?\s*([KMGT]i?)?B?$", re.IGNORECASE)


def check_walltime(value: str) -> str:
    """A batch-job duration as SLURM and PBS read it (MM, HH:MM:SS, D-HH:MM:SS, ...), not zero; ValueError else."""
    text = str(value).strip()
    if not WALLTIME.match(text) or not any(c not in "0:-" for c in text):
        raise ValueError(f"walltime {value!r} is not a duration: give HH:MM:SS (or D-HH:MM:SS), above zero")
    return text


def check_memory(value: str) -> str:
    """A batch-job memory amount (4GB, 500MB, 16G): a positive number with a unit; ValueError else."""
    text = str(value).strip()
    if not MEMORY.match(text) or float(re.match(r"[\d.]+", text).group()) <= 0:
        raise ValueError(f"memory {value!r} is not an amount: give a positive number with a unit, e.g. 4GB")
    return text


class JobQueueConfig(BaseModel):
    """Batch-job settings of a SLURM or PBS cluster (dask-jobqueue's keyword arguments, per job)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    queue: str | None = Field(None, description="partition (SLURM) or queue (PBS)")
    account: str | None = None
    cores: int = Field(1, ge=1, description="cores per job")
    processes: int = Field(1, ge=1, description="Dask worker processes per job; each gets cores/processes threads")
    memory: str = Field("2GB", description="memory per job, e.g. 4GB")
    walltime: str = Field("01:00:00", description="HH:MM:SS")
    job_name: str = "qff-dask"
    job_extra_directives: list[str] = Field(default_factory=list, description="extra #SBATCH / #PBS options")
    job_script_prologue: list[str] = Field(default_factory=list, description="shell lines run before the worker")
    interface: str | None = Field(None, description="network interface of scheduler and workers (ib0, lo, ...)")
    local_directory: str | None = Field(None, description="worker scratch directory on the compute node")
    log_directory: str | None = Field(None, description="where the jobs' stdout/stderr files go")
    python: str | None = Field(None, description="Python of the worker jobs; default: this process's")

    @field_validator("walltime", mode="before")
    @classmethod
    def _sexagesimal(cls, value: object) -> object:
        """YAML 1.1 reads an unquoted 02:00:00 as 7200 (seconds); turn it back into HH:MM:SS."""
        if isinstance(value, int) and not isinstance(value, bool):
            if value <= 0:
                raise ValueError(f"walltime {value} s: give a positive duration, HH:MM:SS")
            return f"{value // 3600:02d}:{value // 60 % 60:02d}:{value % 60:02d}"
        return value

    @field_validator("walltime")
    @classmethod
    def _a_duration(cls, value: str) -> str:
        return check_walltime(value)

    @field_validator("memory")
    @classmethod
    def _an_amount(cls, value: str) -> str:
        return check_memory(value)

    @model_validator(mode="after")
    def _processes_fit_the_cores(self) -> JobQueueConfig:
        if self.processes > self.cores:
            raise ValueError(f"processes {self.processes} > cores {self.cores}: each Dask worker process needs a "
                             "core of its own")
        return self


class ClusterConfig(BaseModel):
    """Where Dask workers come from: ``local``, a scheduler ``address``, or ``slurm``/``pbs`` jobs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: ClusterKind = "local"
    local: LocalClusterConfig = LocalClusterConfig()
    address: str | None = Field(None, description="tcp://host:port of a running scheduler (kind address)")
    jobqueue: JobQueueConfig = JobQueueConfig()
    jobs: int = Field(1, ge=1, description="batch jobs to submit (kind slurm/pbs)")
    min_workers: int | None = Field(
        None, ge=1, description="workers to wait for before computing; default all (address: 1)")
    worker_timeout_s: float = Field(300.0, gt=0, description="seconds to wait for min_workers to connect")

    @model_validator(mode="after")
    def _address_given(self) -> ClusterConfig:
        if self.kind == "address" and not self.address:
            raise ValueError("kind 'address' needs address: tcp://host:port of a running Dask scheduler")
        return self

    @classmethod
    def load(cls, path: str | Path) -> ClusterConfig:
        """Read a cluster YAML file (the settings at top level or under ``cluster:``)."""
        from qff_core.yamlfile import load_mapping

        loaded = load_mapping(path, "cluster file")
        try:
            return cls.model_validate(loaded.get("cluster", loaded))
        except ValidationError as exc:
            raise InputError(f"invalid cluster settings in {path}:\n{exc}") from exc

    def with_overrides(self, *, workers: int | None = None, scheduler: str | None = None) -> ClusterConfig:
        """Command-line flags on top: ``scheduler`` selects that address; ``workers`` sets the
        local worker count, or the number of jobs for slurm/pbs."""
        if scheduler:
            return self.model_copy(update={"kind": "address", "address": scheduler})
        if workers is None:
            return self
        if self.kind in _JOBQUEUE:
            return self.model_copy(update={"jobs": workers})
        return self.model_copy(update={"local": self.local.model_copy(update={"n_workers": workers})})

    def for_engine(self, engine: str, timeout_s: float | None = None) -> ClusterConfig:
        """Fill in ``local.processes`` when unset: processes for calculations that run in the
        worker's own process, threads for those that run in a subprocess."""
        if self.kind != "local" or self.local.processes is not None:
            return self
        return self.model_copy(update={"local": self.local.model_copy(
            update={"processes": workers_need_processes(engine, timeout_s)})})

    def expected_workers(self) -> int:
        """How many workers to wait for before the first task is submitted."""
        if self.min_workers is not None:
            return self.min_workers
        return {"local": self.local.n_workers, "address": 1}.get(self.kind, self.jobs * self.jobqueue.processes)


def load_cluster_config(source: str | Path | dict | None = None, *, workers: int | None = None,
                        scheduler: str | None = None) -> ClusterConfig | None:
    """The cluster of a command: ``source`` (a YAML path or a dict; else ``$QFF_CLUSTER``; else a
    LocalCluster) with the flags on top. ``None`` when ``workers == 0`` and no ``scheduler``:
    compute in this process, without Dask."""
    if workers == 0 and not scheduler:
        return None
    if isinstance(source, dict):
        try:
            base = ClusterConfig.model_validate(source)
        except ValidationError as exc:
            raise InputError(f"invalid cluster settings:\n{exc}") from exc
    else:
        path = source or os.environ.get(CLUSTER_ENV) or None
        base = ClusterConfig.load(path) if path else ClusterConfig()
    return base.with_overrides(workers=workers, scheduler=scheduler)


def workers_need_processes(engine: str, timeout_s: float | None = None) -> bool:
    """Calculations in the worker's own process (PySCF without a timeout, psi4 in-process) need
    one process per worker; those in a subprocess (the psi4 executable, PySCF with a timeout)
    are parallelised as well by threads, which start in milliseconds instead of seconds."""
    from qff_core.reference import get_engine

    return get_engine(engine, require=False).computes_in_process(timeout_s)


LOCAL_WORKER_TTL = "1h"
"""How long a local worker may miss heartbeats (busy in a long primitive job) before the scheduler restarts it."""


def make_cluster(config: ClusterConfig):
    """A LocalCluster or dask-jobqueue cluster (not yet scaled); the caller closes it.

    A job-queue cluster starts its scheduler here, but no job: ``cluster.job_script()`` shows
    what ``scale`` would submit. ClusterUnavailableError when the submit command is missing.
    """
    if config.kind == "local":
        import dask
        from distributed import LocalCluster

        processes = True if config.local.processes is None else config.local.processes
        # A primitive job (minutes of Aer with device noise) can hold a worker's GIL past the scheduler's 5-minute
        # heartbeat limit on a loaded machine; the scheduler would then restart a healthy worker and lose its work.
        # Dead local workers are noticed by their nanny and closed connections anyway.
        # No dashboard; the scheduler's HTTP endpoints (health, metrics) on a free port: on distributed's default
        # 8787 a second qff command on the machine warned "Port 8787 is already in use".
        with dask.config.set({"distributed.scheduler.worker-ttl": LOCAL_WORKER_TTL}):
            return LocalCluster(n_workers=config.local.n_workers, threads_per_worker=1, processes=processes,
                                dashboard_address=None, scheduler_kwargs={"dashboard_address": ":0"})
    if config.kind not in _JOBQUEUE:
        raise InputError(f"kind {config.kind!r} has no cluster to start; it connects to {config.address}")
    check_submit_command(config)
    return _jobqueue_cluster(config)


def check_submit_command(config: ClusterConfig) -> None:
    """ClusterUnavailableError now, before any work, when a slurm/pbs config's ``sbatch``/``qsub``
    is not on PATH (dask-jobqueue would only log it, and the workers would never come)."""
    if config.kind not in _JOBQUEUE:
        return
    command = _JOBQUEUE[config.kind][0]
    if shutil.which(command) is None:
        raise ClusterUnavailableError(
            f"cluster kind {config.kind!r} submits worker jobs with `{command}`, which is not on PATH here: run "
            f"on the cluster's login node, choose kind local or address, or start a single-node test cluster "
            f"(SLURM: `sudo scripts/slurm-local.sh start`)")


def job_script(config: ClusterConfig) -> str:
    """The batch script one worker job of a slurm/pbs ``config`` would run (no job is submitted,
    and the submit command need not exist here)."""
    if config.kind not in _JOBQUEUE:
        raise InputError(f"kind {config.kind!r} submits no jobs; job scripts exist for slurm and pbs")
    cluster = _jobqueue_cluster(config)
    try:
        return cluster.job_script()
    finally:
        _close(cluster)


def import_jobqueue():
    """``dask_jobqueue``, without the SIGINT handler its import installs (``dask_jobqueue.runner`` sets
    ``sys.exit()`` for the whole process: Ctrl-C would then exit 0 with no checkpoint and no message)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        import dask_jobqueue

        return dask_jobqueue
    previous = signal.getsignal(signal.SIGINT)
    try:
        import dask_jobqueue
    finally:
        signal.signal(signal.SIGINT, previous)
    return dask_jobqueue


def _jobqueue_cluster(config: ClusterConfig):
    """A SLURMCluster/PBSCluster with the config's job settings; its scheduler starts, no job yet."""
    dask_jobqueue = import_jobqueue()
    jq = config.jobqueue
    return getattr(dask_jobqueue, _JOBQUEUE[config.kind][1])(
        queue=jq.queue, account=jq.account, cores=jq.cores, processes=jq.processes, memory=jq.memory,
        walltime=jq.walltime, job_name=jq.job_name, job_extra_directives=list(jq.job_extra_directives),
        job_script_prologue=list(jq.job_script_prologue), interface=jq.interface,
        local_directory=jq.local_directory, log_directory=jq.log_directory, python=jq.python or sys.executable,
        scheduler_options={"dashboard_address": ":0"},
    )


@contextmanager
def dask_client(config: ClusterConfig | None = None, *, address: str | None = None, n_workers: int = 2,
                processes: bool = True) -> Iterator[Any]:
    """A dask.distributed Client on the cluster ``config`` describes, with its workers connected.

    Without ``config``, the keywords say it: connect to ``address``, else start a LocalCluster of
    ``n_workers`` (processes or threads). Everything started here is closed on exit, on error too.
    """
    from distributed import Client

    if config is None:
        config = (ClusterConfig(kind="address", address=address) if address else
                  ClusterConfig(local=LocalClusterConfig(n_workers=n_workers, processes=processes)))
    if config.kind == "address":
        try:
            client = Client(config.address, timeout=f"{min(config.worker_timeout_s, 30.0)}s")
        except OSError as exc:
            raise ClusterUnavailableError(
                f"no Dask scheduler answers at {config.address} ({exc}); start one (`dask scheduler`) "
                "or fix the address") from None
        with client:
            _wait_for_workers(client, config)
            yield client
        return
    cluster = make_cluster(config)
    try:
        with _SubmitErrors() as errors:
            if config.kind in _JOBQUEUE:
                cluster.scale(jobs=config.jobs)
            with Client(cluster) as client:
                _wait_for_workers(client, config, errors)
                yield client
    finally:
        _close(cluster)


def _close(cluster) -> None:
    """Close a cluster: its jobs are cancelled (scancel/qdel) before its scheduler stops."""
    # distributed asserts, after cancelling the jobs and closing the scheduler, that no job is
    # still in state 'created', which a job whose submission failed is. Nothing is left running.
    with suppress(AssertionError):
        cluster.close()


def _wait_for_workers(client, config: ClusterConfig, errors: _SubmitErrors | None = None) -> None:
    """Block until ``config.expected_workers()`` workers are connected; fail fast when every job
    submission failed, else WorkerTimeoutError after ``worker_timeout_s``."""
    wanted = config.expected_workers()
    deadline = time.monotonic() + config.worker_timeout_s
    while True:
        have = len(client.scheduler_info(n_workers=-1)["workers"])
        if have >= wanted:
            return
        if errors is not None and errors.count >= config.jobs and have == 0:
            raise ClusterUnavailableError(
                f"every {config.kind} job submission failed; the last said:\n{errors.last}\n"
                "fix the jobqueue settings (queue, account, memory, walltime) in the cluster file")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            hint = f"; a job submission failed:\n{errors.last}" if errors is not None and errors.last else ""
            raise WorkerTimeoutError(
                f"{have} of {wanted} Dask workers connected within {config.worker_timeout_s:g} s ({config.kind})"
                f"{hint}\nraise worker_timeout_s or lower min_workers in the cluster file, check the queue "
                "(squeue / qstat) and the job logs (jobqueue.log_directory)")
        with suppress(TimeoutError):
            client.wait_for_workers(wanted, timeout=min(remaining, 0.5))


class _SubmitErrors(logging.Handler):
    """Collects job-submission failures, which dask-jobqueue only logs (from its event loop)."""

    _LOGGERS = ("tornado.application", "asyncio", "distributed.deploy.spec")

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.last = ""
        self._seen: list[object] = []  # one failure can be logged twice (tornado, then asyncio)

    @property
    def count(self) -> int:
        """Distinct failed submissions seen so far."""
        return len(self._seen)

    def emit(self, record: logging.LogRecord) -> None:
        exc = record.exc_info[1] if record.exc_info else None
        text = str(exc) if exc is not None else record.getMessage()
        if "Command exited with non-zero exit code" not in text and not isinstance(exc, FileNotFoundError):
            return
        if exc is None or not any(seen is exc for seen in self._seen):  # handle() holds self.lock
            self._seen.append(exc if exc is not None else text)
        self.last = text.split("stderr:", 1)[-1].strip()  # what sbatch/qsub said, without the command

    def __enter__(self) -> _SubmitErrors:
        for name in self._LOGGERS:
            logging.getLogger(name).addHandler(self)
        return self

    def __exit__(self, *exc) -> None:
        for name in self._LOGGERS:
            logging.getLogger(name).removeHandler(self)
