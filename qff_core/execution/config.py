"""Executor configuration: the ``executor:`` section of a config, ``qff train --executor ...`` flags.

``ExecutorConfig`` is validated against the executor registry (the options each executor
takes and needs); ``open_executor`` (``execution/registry.py``) builds what it describes.
``QpuTimeModel`` prices a job in QPU seconds, ``executed_shots_per_binding`` says how many
circuit shots a binding costs after twirling and ZNE: ``qff cost`` and the QPU budget guard of
training and evaluation use both.

Settings hold no secret: the IBM API key comes from ``$QISKIT_IBM_TOKEN`` (or the account
qiskit-ibm-runtime saved), or from a Prefect Secret block whose *name* is ``token_secret``;
the key itself is handed to ``open_executor`` at run time and never stored or logged.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from qff_core.execution.registry import executor_spec, is_local_backend

if TYPE_CHECKING:  # the configs are read by every command; the execution stack (JAX, Qiskit) only when used
    from qff_core.execution.shift.fanout import RetryPolicy
    from qff_core.execution.shift.planner import Batching

IBM_DEFAULT_PRECISION = 1 / 64
"""EstimatorOptions.default_precision of qiskit-ibm-runtime 0.51 (0.015625, i.e. 4096 shots)."""
ZNE_NOISE_FACTORS = 3
"""Circuit executions per binding under ZNE: qiskit-ibm-runtime 0.51's DEFAULT_NOISE_FACTORS (1, 3, 5)."""
CHECKED_OPTIONS = ("shots", "precision", "noise_backend", "backend", "instance", "channel", "token_secret",
                   "optimization_level")
"""Options an executor must declare to accept (``ExecutorSpec.options``); the rest apply to any."""
# Settings that say how to reach, wait for or price the backend, not what is computed: a resumed run may change them.
_OPERATIONAL = ("instance", "channel", "token_secret", "session_max_time", "retry_attempts", "retry_delays_s",
                "qpu_time")


def _deep_copy(d: dict) -> dict:
    return {k: _deep_copy(v) if isinstance(v, dict) else v for k, v in d.items()}


class QpuTimeModel(BaseModel):
    """Estimated QPU seconds of a primitive job: ``job_overhead_s + shots x (rep_delay_s + circuit_duration_s)``.

    Defaults and their sources (override them under ``qpu_time:`` in the config):

    * ``rep_delay_s`` = 250e-6 s: ``default_rep_delay`` of IBM's Heron and Falcon fake backends
      in qiskit-ibm-runtime 0.51 (FakeFez, FakeTorino, FakeManilaV2; ``rep_delay_range`` 0-500 us).
    * ``circuit_duration_s`` = 10e-6 s: an assumption for these shallow circuits plus readout
      (gates of tens of ns, measurement ~1-2 us); ``isa.estimate_duration(backend.target)`` gives a device's.
    * ``job_overhead_s`` = 3.0 s: IBM's "Estimate job run time" guide shows a 2-qubit Bell circuit at
      the default 4096 shots estimated at 4.1 quantum seconds, of which shots take ~1.1 s.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    job_overhead_s: float = Field(3.0, ge=0, description="seconds per primitive job (loading, compiling, returning)")
    rep_delay_s: float = Field(250e-6, ge=0, description="seconds between circuit executions")
    circuit_duration_s: float = Field(10e-6, ge=0, description="seconds of one circuit execution (gates + readout)")

    def seconds(self, jobs: int, shots: int) -> float:
        """QPU seconds of ``jobs`` primitive jobs executing ``shots`` circuit shots in all."""
        return jobs * self.job_overhead_s + shots * (self.rep_delay_s + self.circuit_duration_s)


class ExecutorConfig(BaseModel):
    """Where circuits run and how (shots, noise, backend, batching, retries, QPU-time model).

    ``exact``: the JAX simulator, no options. ``aer``: parameter shift on Aer, exact
    (``shots`` None) or sampled with ``shots`` per binding and measured basis, optionally with
    a fake backend's noise. ``ibm``: parameter shift through IBM Runtime's client-side
    Estimator in a Session on ``backend`` (a device of the account, or ``aer``/``Fake...`` for
    the local testing mode), ``shots`` or ``precision`` per expectation value. Any registered
    executor name is accepted, with the options its spec declares.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field("exact", description="a registered executor: exact, aer or ibm")
    shots: int | None = Field(None, ge=2, le=10_000_000, description="shots per parameter binding and measured "
                                                                     "basis (2 to 1e7: a variance needs two); aer: "
                                                                     "None = exact expectation values")
    precision: float | None = Field(None, gt=0, lt=1, description="ibm: target standard error of each expectation "
                                                                 "value (shots = 1/precision^2); default 1/64")
    seed: int | None = Field(None, ge=0, description="seed of the shot noise (aer, ibm local testing mode); "
                                              "default: the run's seed")
    noise_backend: str | None = Field(None, description="aer: simulate this device's noise: a fake backend "
                                                        "(fake_torino, FakeManilaV2...) or a NoiseModel JSON file")
    backend: str | None = Field(None, description="ibm: a device of the account, or aer / Fake... (local testing)")
    optimization_level: Literal[0, 1, 2, 3] | None = Field(
        None, description="aer, ibm: Qiskit's transpiler level for the device (default 1); higher levels search "
                          "longer for a layout on better qubits (qff model show --backend B --optimization-level N "
                          "shows the circuit and its estimated fidelity)")
    instance: str | None = Field(None, description="ibm: instance CRN; default $QISKIT_IBM_INSTANCE or the saved "
                                                   "account's")
    channel: Literal["ibm_quantum_platform", "ibm_cloud"] | None = Field(
        None, description="ibm: account channel; default $QISKIT_IBM_CHANNEL or ibm_quantum_platform")
    token_secret: str | None = Field(None, description="ibm: name of a Prefect Secret block holding the API key "
                                                       "(else $QISKIT_IBM_TOKEN or the saved account)")
    resilience_level: Literal[0, 1, 2] = Field(0, description="ibm: 0 none, 1 TREX measurement mitigation, 2 ZNE")
    mitigation: dict = Field(default_factory=dict, description=(
        "ibm: EstimatorOptions groups on top of resilience_level, e.g. {resilience: {zne_mitigation: true, zne: "
        "{noise_factors: [1, 3, 5], extrapolator: exponential}, measure_mitigation: true}, twirling: {enable_gates: "
        "true, num_randomizations: 32}, dynamical_decoupling: {enable: true, sequence_type: XY4}}; validated "
        "against qiskit-ibm-runtime's EstimatorOptions, run for real in local testing mode"))
    session_max_time: str | None = Field(None, description="ibm: Session max_time, e.g. '2h'")
    rows_per_pub: int = Field(4096, ge=1, description="parameter bindings per PUB")
    pubs_per_chunk: int = Field(1, ge=1, description="PUBs per primitive job (one Dask task or IBM job)")
    min_chunks: int | None = Field(None, ge=1, description="split smaller plans into this many jobs; "
                                                           "default: one per Dask worker")
    retry_attempts: int = Field(3, ge=1, description="tries of a job that fails transiently (the first included)")
    retry_delays_s: tuple[float, ...] = Field((1.0, 4.0, 16.0), description="seconds before each retry")

    qpu_time: QpuTimeModel = Field(default_factory=QpuTimeModel, description="how QPU seconds are estimated")

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, value: object) -> object:
        """``executor: aer`` is short for ``executor: {name: aer}``."""
        return {"name": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _options_fit_the_executor(self) -> ExecutorConfig:
        spec = executor_spec(self.name)
        hints = dict(spec.hints)
        given = {k for k in CHECKED_OPTIONS if getattr(self, k) is not None}
        if given - spec.options:
            refused = sorted(given - spec.options)
            extra = "".join(f"; {hints[k]}" for k in refused if k in hints)
            raise ValueError(f"the {self.name} executor does not take {', '.join(refused)}{extra}")
        if spec.required - given:
            missing = sorted(spec.required - given)
            raise ValueError(f"the {self.name} executor needs a {', '.join(missing)}"
                             + "".join(f": {hints[k]}" for k in missing if k in hints))
        if self.shots is not None and self.precision is not None:
            raise ValueError("give shots or precision, not both")
        if self.resilience_level and self.name != "ibm":
            raise ValueError(f"resilience_level is IBM Runtime's mitigation; the {self.name} executor does not "
                             "mitigate (it would be recorded and not applied): drop it, or use --executor ibm")
        if self.mitigation:
            self._check_mitigation()
        if not self.retry_delays_s or min(self.retry_delays_s) < 0:
            raise ValueError("retry_delays_s needs at least one non-negative delay")
        return self

    def _check_mitigation(self) -> None:
        """Mitigation options only where they run, and only what qiskit-ibm-runtime's EstimatorOptions accepts."""
        if self.name != "ibm":
            raise ValueError(f"the {self.name} executor does not mitigate errors (aer --noise is the fast unmitigated "
                             "path); mitigation runs on --executor ibm, locally with --ibm-backend fake_torino")
        ours = {"default_shots", "default_precision", "resilience_level", "simulator"} & set(self.mitigation)
        if ours:
            raise ValueError(f"set {', '.join(sorted(ours))} with the executor's own settings (shots, precision, "
                             "resilience_level, seed), not under mitigation")
        res = self.mitigation.get("resilience", {}) or {}
        zne = res.get("zne", {}) or {}
        if res.get("pec_mitigation") or zne.get("amplifier") in ("pea", "pea+gate_folding") or "layer_noise_learning" \
                in res:
            raise ValueError("PEC and PEA need a layer noise model learned on the device, and PEC's sampling overhead "
                             "(up to pec.max_overhead x the shots) is not priced by qff cost: qff does not run them. "
                             "Use ZNE with gate folding (zne.amplifier: gate_folding), TREX (measure_mitigation) and "
                             "twirling")
        from qiskit_ibm_runtime.options_models.estimator import EstimatorOptions

        try:
            EstimatorOptions(**self.ibm_options())
        except (ValueError, TypeError) as exc:
            raise ValueError(f"mitigation options rejected by qiskit-ibm-runtime's EstimatorOptions: {exc}") from None

    @property
    def spec(self):
        """The registry entry of this executor (``ExecutorSpec``)."""
        return executor_spec(self.name)

    @property
    def local(self) -> bool:
        """No QPU involved (exact, aer, a remote executor in local testing mode)."""
        return not self.spec.qpu or is_local_backend(self.backend)

    def fingerprint(self) -> dict:
        """The settings that determine the numbers (a resumed run must keep them)."""
        d = self.model_dump()
        for k in _OPERATIONAL:
            d.pop(k)
        return d

    def shots_per_binding(self) -> int | None:
        """Shots per parameter binding and measured basis (before twirling); None for exact expectation values."""
        if self.spec.qpu:
            return self.shots or math.ceil(1.0 / (self.precision or IBM_DEFAULT_PRECISION) ** 2)
        return None if self.spec.exact else self.shots

    def executed_shots_per_binding(self) -> int:
        """Circuit shots per binding and measured basis after twirling (IBM resilience levels 1 and 2: rounded up
        to whole randomizations, TwirlingOptions' "auto" rule ``max(64, ceil(shots / 32))`` per randomization)
        and ZNE (level 2: every circuit at its 3 default noise factors); 0 for exact expectation values."""
        shots = self.shots_per_binding()
        if shots is None:
            return 0
        if not self.spec.qpu:
            return shots
        twirl, n_rand, per_rand = self._twirling()
        if twirl:
            if isinstance(n_rand, int) and isinstance(per_rand, int):
                shots = n_rand * per_rand
            elif isinstance(n_rand, int):
                shots = n_rand * math.ceil(shots / n_rand)
            else:
                per = per_rand if isinstance(per_rand, int) else max(64, math.ceil(shots / 32))
                shots = math.ceil(shots / per) * per
        return shots * self.zne_factors()

    @property
    def transpiler_level(self) -> int:
        """The transpiler optimization level circuits are compiled at (1 unless set)."""
        return 1 if self.optimization_level is None else self.optimization_level

    def batching(self, workers: int = 1) -> Batching:
        """PUB and job sizes; ``min_chunks`` defaults to ``workers`` (every Dask worker gets a job)."""
        from qff_core.execution.shift.planner import Batching

        return Batching(rows_per_pub=self.rows_per_pub, pubs_per_chunk=self.pubs_per_chunk,
                        min_chunks=self.min_chunks or max(1, workers))

    def retry(self) -> RetryPolicy:
        """The retry policy of transient job failures."""
        from qff_core.execution.shift.fanout import RetryPolicy

        return RetryPolicy(attempts=self.retry_attempts, delays_s=tuple(self.retry_delays_s))

    def ibm_options(self) -> dict:
        """EstimatorOptions fields (dict form) for the ibm executor."""
        options: dict = {"resilience_level": self.resilience_level, **_deep_copy(self.mitigation)}
        if self.shots is not None:
            options["default_shots"] = self.shots
        elif self.precision is not None:
            options["default_precision"] = self.precision
        return options

    def _twirling(self) -> tuple[bool, object, object]:
        """(on, num_randomizations, shots_per_randomization) as the Estimator will use them."""
        tw = self.mitigation.get("twirling", {})
        on = tw.get("enable_gates", self.resilience_level >= 1) or tw.get("enable_measure", self.resilience_level >= 1)
        return bool(on), tw.get("num_randomizations", "auto"), tw.get("shots_per_randomization", "auto")

    def zne_factors(self) -> int:
        """Noise factors every circuit runs at (1 without ZNE)."""
        res = self.mitigation.get("resilience", {})
        if not res.get("zne_mitigation", self.resilience_level == 2):
            return 1
        factors = res.get("zne", {}).get("noise_factors", "auto")
        return ZNE_NOISE_FACTORS if isinstance(factors, str) else len(factors)  # "auto": Runtime's (1, 3, 5)


__all__ = ["CHECKED_OPTIONS", "ExecutorConfig", "QpuTimeModel"]
