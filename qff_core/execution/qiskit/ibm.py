"""IBM Runtime evaluator: qiskit-ibm-runtime 0.51's client-side Estimator (``executor_estimator``).

The top-level ``qiskit_ibm_runtime.Estimator`` / ``EstimatorV2`` is the deprecated server-side
one in 0.51 (api-facts section 1), so the new class is imported explicitly. ``mode`` is a
backend (job mode; a fake backend or an AerSimulator is qiskit-ibm-runtime's local testing
mode: the same code path with no network), or an open ``Session`` (training loops) or
``Batch`` (evaluation) from ``runtime_mode``. Every chunk is one job; all jobs of a plan are
submitted before any result is awaited, and their ids are kept. Credentials: qiskit-ibm-runtime
reads ``QISKIT_IBM_TOKEN`` (``_INSTANCE``, ``_CHANNEL``, ``_URL``) or its saved account; a key
from a secret store is passed to ``runtime_service`` and kept only inside the service object.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from qff_core.errors import EngineError, InputError, TransientError
from qff_core.execution.qiskit.compiler import IsaProgram, QiskitModel, transpile_for

LOCAL_IDEAL = "aer"
"""Backend name for an ideal local simulator (AerSimulator lowered to rz/sx/x/cx)."""


def runtime_service(*, channel: str | None = None, instance: str | None = None, token: str | None = None):
    """A ``QiskitRuntimeService``; what is not given comes from ``QISKIT_IBM_*`` or the saved account."""
    from qiskit_ibm_runtime import QiskitRuntimeService

    return QiskitRuntimeService(channel=channel, instance=instance, token=token)


def ibm_backend(name: str, *, service=None):
    """A backend by name: ``aer`` (ideal, local), ``Fake...`` (local testing mode) or a device of the
    account of ``service`` (default: ``runtime_service()``)."""
    if name == LOCAL_IDEAL:
        from qiskit_aer import AerSimulator

        return AerSimulator()
    if name.startswith("Fake"):
        from qff_core.execution.qiskit.aer import fake_backend

        return fake_backend(name)
    return (service or runtime_service()).backend(name)


def _transient_errors() -> tuple[type[BaseException], ...]:
    """Failures worth a retry: the network, the API, timeouts (a job that ran and failed is not one)."""
    from qiskit_ibm_runtime.api.exceptions import RequestsApiError
    from qiskit_ibm_runtime.exceptions import JobTimeoutError, RuntimeJobTimeoutError

    return (RequestsApiError, RuntimeJobTimeoutError, JobTimeoutError, ConnectionError, TimeoutError)


@contextmanager
def runtime_mode(backend, kind: str = "session", max_time: str | None = None) -> Iterator:
    """An open IBM Runtime ``Session`` (``kind="session"``) or ``Batch``; closed on exit, also on error."""
    from qiskit_ibm_runtime import Batch, Session

    cls = {"session": Session, "batch": Batch}.get(kind)
    if cls is None:
        raise InputError(f"runtime mode must be 'session' or 'batch', not {kind!r}")
    mode = cls(backend=backend, max_time=max_time)
    try:
        yield mode
    finally:
        mode.close()


@dataclass(frozen=True)
class IbmEvaluator:
    """Runs PUBs through the client-side Estimator on ``backend`` in ``mode`` (defaults to the backend).

    ``options`` are ``EstimatorOptions`` fields as a dict (``resilience_level``, ``default_shots``,
    ``simulator.seed_simulator``...). ``service`` is the account that re-attaches to recorded jobs.
    """

    backend: object
    options: dict = field(default_factory=lambda: {"resilience_level": 0})
    mode: object | None = None
    service: object | None = field(default=None, repr=False)
    job_ids: list = field(default_factory=list, compare=False)

    def prepare(self, qmodel: QiskitModel) -> IsaProgram:
        """ISA circuits are required: transpile for the backend (an ideal AerSimulator: rz/sx/x/cx)."""
        from qiskit_aer import AerSimulator

        if isinstance(self.backend, AerSimulator):
            return transpile_for(qmodel, basis_gates=("rz", "sx", "x", "cx"))
        return transpile_for(qmodel, self.backend)

    def submit(self, program: IsaProgram, values: list[np.ndarray], seed: int | None):
        """Submit one job for a chunk's PUBs; returns the job."""
        from qiskit_ibm_runtime.executor_estimator import Estimator

        options = dict(self.options)
        if seed is not None:
            options["simulator"] = {**options.get("simulator", {}), "seed_simulator": seed}
        est = Estimator(mode=self.mode if self.mode is not None else self.backend, options=options)
        job = est.run([(program.circuit, program.observable, v) for v in values])
        self.job_ids.append(job.job_id())
        return job

    @staticmethod
    def job_id(job) -> str:
        """The id to record for re-attaching."""
        return job.job_id()

    def attach(self, job_id: str):
        """A job submitted earlier, by id (needs the account: local testing-mode jobs cannot be re-attached)."""
        return (self.service or runtime_service()).job(job_id)

    @staticmethod
    def collect(job) -> list[tuple[np.ndarray, np.ndarray]]:
        """(evs, variances) per PUB of a finished job (waits for it); network and timeout failures are
        transient, a job that failed on the backend is an EngineError."""
        from qiskit_ibm_runtime.exceptions import RuntimeJobFailureError

        try:
            result = job.result()
        except _transient_errors() as exc:
            raise TransientError(f"IBM Runtime job {job.job_id()} failed transiently: {exc}") from exc
        except RuntimeJobFailureError as exc:
            raise EngineError(f"IBM Runtime job {job.job_id()} failed on the backend: {exc}; its logs are on the "
                              "IBM Quantum dashboard") from exc
        return [(np.asarray(r.data.evs), np.asarray(r.data.stds) ** 2) for r in result]

    def run(self, program: IsaProgram, values: list[np.ndarray], seed: int | None):
        """Submit and wait: one job."""
        return self.collect(self.submit(program, values, seed))
