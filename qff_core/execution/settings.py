"""Executor settings (the ``executor:`` section of a config, ``qff train --executor ...`` flags) and
``open_executor``, which builds the executor they describe for a model and keeps what it opened
(an IBM Runtime Session) open for as long as the caller needs it.

Settings hold no secret: the IBM API key comes from ``$QISKIT_IBM_TOKEN`` (or the account
qiskit-ibm-runtime saved), or from a Prefect Secret block whose *name* is ``token_secret``;
the key itself is handed to ``open_executor`` at run time and never stored or logged.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from qff_core.errors import InputError

if TYPE_CHECKING:  # the settings are read by every config; the execution stack (JAX, Qiskit) only when used
    from qff_core.execution.fanout import RetryPolicy
    from qff_core.execution.journal import JobJournal
    from qff_core.execution.shift import Batching
    from qff_core.models.ir import Model

ExecutorName = Literal["exact", "aer", "ibm"]
IBM_DEFAULT_PRECISION = 1 / 64
"""EstimatorOptions.default_precision of qiskit-ibm-runtime 0.51 (0.015625, i.e. 4096 shots)."""
LOCAL_IBM_BACKENDS = ("aer",)
"""IBM backend names that run locally (with every ``Fake...`` backend): qiskit-ibm-runtime's local testing mode."""
# Settings that say how to reach or wait for the backend, not what is computed: a resumed run may change them.
_OPERATIONAL = ("instance", "channel", "token_secret", "session_max_time", "retry_attempts", "retry_delays_s")


def is_local_backend(name: str | None) -> bool:
    """True for the ideal local simulator (``aer``) and fake backends: no account, no QPU time, no job ids to keep."""
    return name is not None and (name in LOCAL_IBM_BACKENDS or name.startswith("Fake"))


class ExecutorSettings(BaseModel):
    """Where circuits run and how (shots, noise, backend, batching, retries).

    ``exact``: the JAX simulator, no options. ``aer``: parameter shift on Aer, exact
    (``shots`` None) or sampled with ``shots`` per binding and measured basis, optionally with
    a fake backend's noise. ``ibm``: parameter shift through IBM Runtime's client-side
    Estimator in a Session on ``backend`` (a device of the account, or ``aer``/``Fake...`` for
    the local testing mode), ``shots`` or ``precision`` per expectation value.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: ExecutorName = "exact"
    shots: int | None = Field(None, ge=1, description="shots per parameter binding and measured basis; "
                                                      "aer: None = exact expectation values")
    precision: float | None = Field(None, gt=0, lt=1, description="ibm: target standard error of each expectation "
                                                                 "value (shots = 1/precision^2); default 1/64")
    seed: int | None = Field(None, description="seed of the shot noise (aer, ibm local testing mode); "
                                              "default: the run's seed")
    noise_backend: str | None = Field(None, description="aer: simulate this fake backend's noise (FakeManilaV2...)")
    backend: str | None = Field(None, description="ibm: a device of the account, or aer / Fake... (local testing)")
    instance: str | None = Field(None, description="ibm: instance CRN; default $QISKIT_IBM_INSTANCE or the saved "
                                                   "account's")
    channel: Literal["ibm_quantum_platform", "ibm_cloud"] | None = Field(
        None, description="ibm: account channel; default $QISKIT_IBM_CHANNEL or ibm_quantum_platform")
    token_secret: str | None = Field(None, description="ibm: name of a Prefect Secret block holding the API key "
                                                       "(else $QISKIT_IBM_TOKEN or the saved account)")
    resilience_level: Literal[0, 1, 2] = Field(0, description="ibm: 0 none, 1 TREX measurement mitigation, 2 ZNE")
    session_max_time: str | None = Field(None, description="ibm: Session max_time, e.g. '2h'")
    rows_per_pub: int = Field(4096, ge=1, description="parameter bindings per PUB")
    pubs_per_chunk: int = Field(1, ge=1, description="PUBs per primitive job (one Dask task or IBM job)")
    min_chunks: int | None = Field(None, ge=1, description="split smaller plans into this many jobs; "
                                                           "default: one per Dask worker")
    retry_attempts: int = Field(3, ge=1, description="tries of a job that fails transiently (the first included)")
    retry_delays_s: tuple[float, ...] = Field((1.0, 4.0, 16.0), description="seconds before each retry")

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, value: object) -> object:
        """``executor: aer`` is short for ``executor: {name: aer}``."""
        return {"name": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _options_fit_the_executor(self) -> ExecutorSettings:
        given = {k for k in ("shots", "precision", "noise_backend", "backend", "instance", "channel", "token_secret")
                 if getattr(self, k) is not None}
        allowed = {"exact": set(), "aer": {"shots", "noise_backend"},
                   "ibm": {"shots", "precision", "backend", "instance", "channel", "token_secret"}}[self.name]
        if given - allowed:
            raise ValueError(f"the {self.name} executor does not take {', '.join(sorted(given - allowed))}"
                             + ("" if self.name != "aer" or "precision" not in given else
                                "; aer samples real shots: give shots instead of precision"))
        if self.shots is not None and self.precision is not None:
            raise ValueError("give shots or precision, not both")
        if self.name == "ibm" and not self.backend:
            raise ValueError("the ibm executor needs a backend: a device of your account (ibm_fez...), "
                             "or aer / FakeManilaV2... for qiskit-ibm-runtime's local testing mode")
        if not self.retry_delays_s or min(self.retry_delays_s) < 0:
            raise ValueError("retry_delays_s needs at least one non-negative delay")
        return self

    @property
    def local(self) -> bool:
        """No QPU involved (exact, aer, ibm local testing mode)."""
        return self.name != "ibm" or is_local_backend(self.backend)

    def fingerprint(self) -> dict:
        """The settings that determine the numbers (a resumed run must keep them)."""
        d = self.model_dump()
        for k in _OPERATIONAL:
            d.pop(k)
        return d

    def shots_per_binding(self) -> int | None:
        """Shots per parameter binding and measured basis (before twirling); None for exact expectation values."""
        if self.name == "ibm":
            return self.shots or math.ceil(1.0 / (self.precision or IBM_DEFAULT_PRECISION) ** 2)
        return self.shots if self.name == "aer" else None

    def batching(self, workers: int = 1) -> Batching:
        """PUB and job sizes; ``min_chunks`` defaults to ``workers`` (every Dask worker gets a job)."""
        from qff_core.execution.shift import Batching

        return Batching(rows_per_pub=self.rows_per_pub, pubs_per_chunk=self.pubs_per_chunk,
                        min_chunks=self.min_chunks or max(1, workers))

    def retry(self) -> RetryPolicy:
        """The retry policy of transient job failures."""
        from qff_core.execution.fanout import RetryPolicy

        return RetryPolicy(attempts=self.retry_attempts, delays_s=tuple(self.retry_delays_s))

    def ibm_options(self) -> dict:
        """EstimatorOptions fields (dict form) for the ibm executor."""
        options: dict = {"resilience_level": self.resilience_level}
        if self.shots is not None:
            options["default_shots"] = self.shots
        elif self.precision is not None:
            options["default_precision"] = self.precision
        return options


def _workers(client) -> int:
    return len(client.scheduler_info(n_workers=-1)["workers"]) if client is not None else 1


@contextmanager
def open_executor(settings: ExecutorSettings, model: Model, *, client=None, journal: JobJournal | None = None,
                  seed: int | None = None, ibm_token: str | None = None,
                  runtime_mode: Literal["session", "batch"] = "session") -> Iterator:
    """The executor ``settings`` describe for ``model``, open for the duration of the block.

    ``client``: a dask.distributed Client for aer's fan-out. ``journal``: where ibm job ids
    are recorded (ignored in local testing mode, whose jobs cannot be re-attached). ``seed``:
    shot-noise seed when the settings give none. ``ibm_token``: an API key read from a secret
    store (else qiskit-ibm-runtime reads ``$QISKIT_IBM_TOKEN`` or its saved account). The ibm
    executor runs inside an IBM Runtime Session (training loops: each step's jobs wait on the
    previous step's) or, with ``runtime_mode="batch"``, a Batch (independent jobs submitted at
    once: evaluation), closed on exit, on error too.
    """
    from qff_core.execution.executors import get_executor

    seed = settings.seed if settings.seed is not None else seed
    if settings.name == "exact":
        if client is not None:
            raise InputError("the exact executor runs in this process; drop --cluster/--workers/--scheduler")
        yield get_executor("exact", model)
        return
    if settings.name == "aer":
        yield get_executor("aer", model, shots=settings.shots, noise_backend=settings.noise_backend,
                           batching=settings.batching(_workers(client)), client=client, seed=seed,
                           retry=settings.retry())
        return
    if client is not None:
        raise InputError("ibm jobs are submitted from this process and run remotely; drop --cluster/--workers/"
                         "--scheduler (Dask fans out aer simulations only)")
    from qff_core.execution.ibm import ibm_backend, runtime_service
    from qff_core.execution.ibm import runtime_mode as open_runtime_mode

    local = is_local_backend(settings.backend)
    service = None if local else runtime_service(channel=settings.channel, instance=settings.instance,
                                                 token=ibm_token)
    backend = ibm_backend(settings.backend, service=service)
    with open_runtime_mode(backend, runtime_mode, max_time=settings.session_max_time) as mode:
        yield get_executor("ibm", model, backend=backend, options=settings.ibm_options(), mode=mode,
                           batching=settings.batching(), seed=seed if local else None,
                           journal=None if local else journal, retry=settings.retry(), service=service)
