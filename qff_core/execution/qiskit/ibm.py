"""IBM Runtime evaluator: qiskit-ibm-runtime 0.51's client-side Estimator (``executor_estimator``).

The top-level ``qiskit_ibm_runtime.Estimator`` / ``EstimatorV2`` is the deprecated server-side
one in 0.51 (api-facts section 1), so the new class is imported explicitly. ``mode`` is a
backend (job mode; a fake backend or an AerSimulator is qiskit-ibm-runtime's local testing
mode: the same code path with no network), or an open ``Session`` (training loops) or
``Batch`` (evaluation) from ``runtime_mode``. Every chunk is one job; on IBM's devices all jobs of a
plan are submitted before any result is awaited, and their ids are kept; in local testing mode they
run one at a time (``runs_here``). Credentials: qiskit-ibm-runtime
reads ``QISKIT_IBM_TOKEN`` (``_INSTANCE``, ``_CHANNEL``, ``_URL``) or its saved account; a key
from a secret store is passed to ``runtime_service`` and kept only inside the service object.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from qff_core.errors import EngineError, InputError, TransientError
from qff_core.execution.base import ShotSeed, job_seed
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
    if name.startswith("Fake") or name.lower().startswith("fake_"):
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
class LocalDeviceProgram:
    """A fake device in local testing mode: the circuit on the qubits it uses (``program``), the AerSimulator
    with the device's noise on those qubits that runs it, and what the device sees (``device``)."""

    program: IsaProgram
    simulator: object
    device: dict


def _is_fake_device(backend) -> bool:
    from qiskit_ibm_runtime.fake_provider.fake_backend import FakeBackendV2

    return isinstance(backend, FakeBackendV2)


def local_device_program(qmodel: QiskitModel, backend, optimization_level: int = 1) -> LocalDeviceProgram:
    """Transpile for the whole fake device (layout and counts as on it), then reduce to the used qubits with the
    device noise restricted to them: local testing mode on a 133-qubit device otherwise exhausts Aer's memory."""
    from dataclasses import replace

    from qiskit_aer import AerSimulator

    from qff_core.execution.qiskit.noise import (
        active_qubits,
        device_noise_dict,
        noise_model,
        reduce_circuit,
        reduce_noise,
        reduce_observable,
    )

    full = transpile_for(qmodel, backend, optimization_level=optimization_level)
    active = active_qubits([full.circuit])
    index = {q: i for i, q in enumerate(active)}
    edges = [[index[a], index[b]] for a, b in backend.coupling_map.get_edges() if a in index and b in index]
    noise = noise_model(reduce_noise(device_noise_dict(backend), active))
    simulator = AerSimulator(noise_model=noise, basis_gates=noise.basis_gates, coupling_map=edges or None)
    program = replace(full, circuit=reduce_circuit(full.circuit, active),
                      observable=reduce_observable(full.observable, active))
    device = {"backend": backend.name, "physical_qubits": active,
              "two_qubit_gates": sum(1 for inst in full.circuit.data if inst.operation.num_qubits == 2)}
    return LocalDeviceProgram(program, simulator, device)


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
    optimization_level: int = 1  # Qiskit's transpiler level

    def prepare(self, qmodel: QiskitModel) -> IsaProgram | LocalDeviceProgram:
        """ISA circuits are required: transpile for the backend (an ideal AerSimulator: rz/sx/x/cx; a fake device:
        ``local_device_program``)."""
        from qiskit_aer import AerSimulator

        if isinstance(self.backend, AerSimulator):
            return transpile_for(qmodel, basis_gates=("rz", "sx", "x", "cx"),
                                 optimization_level=self.optimization_level)
        width = getattr(self.backend, "num_qubits", None)
        if width is not None and qmodel.model.n_qubits > width:
            raise InputError(f"the model needs {qmodel.model.n_qubits} qubits; {self.backend.name} has {width}")
        if _is_fake_device(self.backend):
            return local_device_program(qmodel, self.backend, self.optimization_level)
        return transpile_for(qmodel, self.backend, optimization_level=self.optimization_level)

    @property
    def runs_here(self) -> bool:
        """Local testing mode (an AerSimulator or a fake device): every job runs in a thread of this process, so a
        plan's jobs go one at a time (all at once they are hundreds of simulations sharing the cores and memory,
        and a Ctrl-C waits for every one to finish)."""
        from qiskit_aer import AerSimulator

        return isinstance(self.backend, AerSimulator) or _is_fake_device(self.backend)

    def submit(self, program: IsaProgram | LocalDeviceProgram, values: list[np.ndarray], seed: ShotSeed | int | None):
        """Submit one job for a chunk's PUBs; returns the job."""
        from qiskit_ibm_runtime.executor_estimator import Estimator

        options = dict(self.options)
        if seed is not None:
            options["simulator"] = {**options.get("simulator", {}), "seed_simulator": job_seed(seed)}
        mode = self.mode if self.mode is not None else self.backend
        if isinstance(program, LocalDeviceProgram):  # local testing mode on the used qubits of a fake device
            mode, program = program.simulator, program.program
        est = Estimator(mode=mode, options=options)
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

    def run(self, program: IsaProgram, values: list[np.ndarray], seed: ShotSeed | int | None):
        """Submit and wait: one job."""
        return self.collect(self.submit(program, values, seed))
