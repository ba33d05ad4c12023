"""Aer evaluators: exact expectation values, or real shot sampling, optionally with a fake backend's noise.

* exact (``shots=None``): qiskit-aer's EstimatorV2 with ``runtime_parameter_bind_enable``
  (one PUB of many rows is then fast; api-facts section 7). Precision 0: no noise added.
* shots: Aer's EstimatorV2 does not sample (it adds Gaussian noise of size ``precision``), so
  shots are sampled for real: the observable is split into qubit-wise commuting groups
  (3 for a Heisenberg observable: all-X, all-Y, all-Z), each group's circuit rotates to its
  basis and measures every qubit, Aer computes each row's outcome probabilities (with the
  device's readout errors) and ``shots`` outcomes are drawn from them, row by row from the
  row's own seed (``sampling.py``: the shots do not depend on how rows are split into jobs).
  Each shot gives one value of the group's terms; their mean is the estimate and their
  sample variance / shots its variance. Groups are independent, so variances add.
* noise: ``noise_backend`` names a fake backend of qiskit-ibm-runtime (``fake_torino``,
  ``FakeManilaV2``...) or a NoiseModel JSON file; circuits are transpiled for the whole device,
  then simulated on the qubits they use with the device's noise restricted to them
  (``noise.py``; density matrix when exact). ``AerProgram.device`` keeps what the device sees.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from qff_core.errors import InputError
from qff_core.execution.base import ShotSeed, job_seed
from qff_core.execution.qiskit.compiler import IsaProgram, QiskitModel, transpile_for
from qff_core.execution.qiskit.sampling import (
    ProbabilityCircuit,
    outcome_values,
    probability_circuit,
    sample_means,
    with_readout,
)


def fake_backend_names() -> dict[str, str]:
    """Short names (``fake_torino``) of qiskit-ibm-runtime's V2 fake backends, to their class names."""
    from qiskit_ibm_runtime import fake_provider

    out = {}
    for cls_name in dir(fake_provider):
        if not cls_name.startswith("Fake") or cls_name.endswith(("Provider", "V1")) or "Provider" in cls_name:
            continue
        short = "fake_" + cls_name[4:].removesuffix("V2").lower()
        if short not in out or cls_name.endswith("V2"):
            out[short] = cls_name
    return out


def fake_backend(name: str):
    """A fake backend of qiskit-ibm-runtime by class name (``FakeManilaV2``, ``FakeFez``) or short name
    (``fake_torino``, ``fake_manila``)."""
    from qiskit_ibm_runtime import fake_provider

    names = fake_backend_names()
    cls_name = names.get(name.lower(), name) if name.lower().startswith("fake_") else name
    cls = getattr(fake_provider, cls_name, None) if cls_name in names.values() else None  # backends, not providers
    if cls is None:
        raise InputError(f"qiskit-ibm-runtime has no fake backend {name!r}; it has "
                         f"{', '.join(sorted(fake_backend_names()))} (or their class names, e.g. FakeManilaV2)")
    return cls()


def check_fits(model, backend) -> None:
    """InputError when ``backend`` has fewer qubits than ``model`` needs."""
    if model.n_qubits > backend.num_qubits:
        raise InputError(f"the model needs {model.n_qubits} qubits; {backend.name} has {backend.num_qubits}")


@dataclass(frozen=True)
class MeasuredGroup:
    """One qubit-wise commuting group: its measured ISA circuit and terms as (clbit masks, coefficients)."""

    circuit: object
    masks: np.ndarray  # (terms, n_qubits) bool: which measured bits enter each term's parity
    coeffs: np.ndarray  # (terms,)
    probabilities: ProbabilityCircuit | None = None  # what Aer runs (``with_probabilities``)
    outcome_values: np.ndarray | None = None  # one shot's value for each outcome index, computed once


@dataclass(frozen=True)
class SampledProgram:
    """The measured circuits of every group of the observable."""

    groups: tuple[MeasuredGroup, ...]


@dataclass(frozen=True)
class AerProgram:
    """A prepared program with the noise (a NoiseModel dict, None when noiseless) of the qubits it uses, and what
    the device sees: its name, the physical qubits and the two-qubit gates of the (first) circuit."""

    program: IsaProgram | SampledProgram
    noise: dict | None = None
    device: dict | None = None


def _reduce(program: IsaProgram | SampledProgram, source) -> AerProgram:
    """``program`` (transpiled for the full device) on its active qubits, with the device noise of those."""
    from dataclasses import replace

    from qff_core.execution.qiskit.noise import (
        active_qubits,
        device_noise_dict,
        reduce_circuit,
        reduce_noise,
        reduce_observable,
    )

    circuits = [program.circuit] if isinstance(program, IsaProgram) else [g.circuit for g in program.groups]
    first = circuits[0]
    device = {"backend": source.name, "physical_qubits": active_qubits(circuits),
              "two_qubit_gates": sum(1 for inst in first.data if inst.operation.num_qubits == 2)}
    if source.backend is None:  # a noise-model file: circuits are already on the model's own qubits
        return AerProgram(program, source.noise, device)
    active = device["physical_qubits"]
    if isinstance(program, IsaProgram):
        reduced = replace(program, circuit=reduce_circuit(program.circuit, active),
                          observable=reduce_observable(program.observable, active))
    else:
        reduced = SampledProgram(tuple(replace(g, circuit=reduce_circuit(g.circuit, active)) for g in program.groups))
    return AerProgram(reduced, reduce_noise(device_noise_dict(source.backend), active), device)


@dataclass(frozen=True)
class AerEvaluator:
    """Runs PUBs on Aer. ``shots=None``: exact; else sampled. ``threads`` per primitive job."""

    shots: int | None = None
    noise_backend: str | None = None
    threads: int = 1
    optimization_level: int = 1  # Qiskit's transpiler level
    seeds_rows: ClassVar[bool] = True  # each row's shots come from (seed, row): the job split does not change them

    def prepare(self, qmodel: QiskitModel) -> AerProgram:
        """Transpile once for the simulated device (with shots, one measured circuit per group), then keep the
        qubits the circuits use and the device noise on them."""
        from qiskit_aer import AerSimulator

        if self.shots is not None and self.shots < 1:
            raise InputError("shots must be a positive integer (or None for exact expectation values)")
        source = None
        if self.noise_backend:
            from qff_core.execution.qiskit.noise import load_noise

            source = load_noise(self.noise_backend)
            if source.backend is not None:
                check_fits(qmodel.model, source.backend)
        backend = AerSimulator() if source is None or source.backend is None else source.backend
        basis = source.basis_gates if source is not None and source.backend is None else None
        if self.shots is None:
            program = transpile_for(qmodel, None if basis else backend, basis_gates=basis,
                                    optimization_level=self.optimization_level)
        else:
            program = SampledProgram(tuple(_measured_group(qmodel, group, backend, basis, self.optimization_level)
                                           for group in qmodel.observable.group_commuting(qubit_wise=True)))
        prepared = AerProgram(program) if source is None else _reduce(program, source)
        return prepared if self.shots is None else _with_probabilities(prepared)

    def _backend_options(self, noise: dict | None) -> dict:
        opts: dict = {"runtime_parameter_bind_enable": True, "max_parallel_threads": self.threads}
        if noise is not None:
            opts["noise_model"] = _noise_model_of(noise)
            opts["method"] = "density_matrix"
        elif self.shots is not None:
            opts["method"] = "statevector"
        return opts

    def run(self, program: AerProgram, values: list[np.ndarray],
            seed: ShotSeed | int | None) -> list[tuple[np.ndarray, np.ndarray]]:
        """One primitive job for all PUBs of a chunk: (evs, variances) per PUB. Sampled rows draw their shots from
        their own seeds (a plain int numbers the rows of ``values`` from 0)."""
        noise, prepared = program.noise, program.program
        if self.shots is None:
            from qiskit_aer.primitives import EstimatorV2

            options = {"backend_options": self._backend_options(noise), "default_precision": 0.0}
            if seed is not None:
                options["run_options"] = {"seed_simulator": job_seed(seed)}
            est = EstimatorV2(options=options)
            result = est.run([(prepared.circuit, prepared.observable, v) for v in values]).result()
            return [(np.asarray(r.data.evs), np.asarray(r.data.stds) ** 2) for r in result]
        from qiskit_aer import AerSimulator

        seeds = ShotSeed.of(seed, values)
        unseeded = np.random.default_rng() if seeds is None else None  # one stream for every row
        simulator = AerSimulator(**self._backend_options(noise))
        out = []
        for p, v in enumerate(values):
            evs = np.zeros(len(v))
            var = np.zeros(len(v))
            for g, group in enumerate(prepared.groups):
                probabilities = outcome_probabilities(simulator, group.probabilities, v)
                rngs = seeds.rows(p, len(v), stream=g) if seeds is not None else [unseeded] * len(v)
                mean, variance = sample_means(probabilities, group.outcome_values, self.shots, rngs)
                evs += mean
                var += variance
            out.append((evs, var))
        return out


_NOISE_MODELS: dict[int, tuple[dict, object]] = {}
"""id of a program's noise dict -> (that dict, its NoiseModel): the dict is kept, so its id is not reused."""


def _noise_model_of(noise: dict):
    """The NoiseModel of a program's noise dict, built once per process and program (``from_dict`` builds every
    error anew: it cost more than simulating a small chunk)."""
    from qff_core.execution.qiskit.noise import noise_model

    held = _NOISE_MODELS.get(id(noise))
    if held is not None and held[0] is noise:
        return held[1]
    if len(_NOISE_MODELS) >= 8:
        _NOISE_MODELS.clear()
    model = noise_model(noise)
    _NOISE_MODELS[id(noise)] = (noise, model)
    return model


def outcome_probabilities(simulator, circuit: ProbabilityCircuit, rows: np.ndarray) -> np.ndarray:
    """Outcome probabilities as read out (rows, 2**bits) of each row of parameter values, on an AerSimulator."""
    qc = circuit.circuit
    binds = [{param: rows[:, i] for i, param in enumerate(qc.parameters)}]
    result = simulator.run(qc, parameter_binds=binds, shots=None).result()
    exact = np.array([result.data(i)["probabilities"] for i in range(len(result.results))]).reshape(len(rows), -1)
    return with_readout(exact, circuit.readout)


def _with_probabilities(program: AerProgram) -> AerProgram:
    """Each measured group of a sampled program with its probabilities circuit (after reduction: its noise)."""
    from dataclasses import replace

    groups = tuple(replace(g, probabilities=probability_circuit(g.circuit, program.noise),
                           outcome_values=outcome_values(g.masks, g.coeffs)) for g in program.program.groups)
    return replace(program, program=SampledProgram(groups))


def _measured_group(qmodel: QiskitModel, group, backend, basis_gates: tuple[str, ...] | None = None,
                    optimization_level: int = 1) -> MeasuredGroup:
    """Template + basis change + measurement of every qubit, transpiled for ``backend``."""
    from qiskit.transpiler import generate_preset_pass_manager

    n = qmodel.model.n_qubits
    basis = ["I"] * n
    labels = group.paulis.to_labels()
    for label in labels:
        for q, ch in enumerate(reversed(label)):  # qiskit labels: rightmost character is qubit 0
            if ch != "I":
                basis[q] = ch
    qc = qmodel.template.copy()
    for q, b in enumerate(basis):
        if b == "X":
            qc.h(q)
        elif b == "Y":
            qc.sdg(q)
            qc.h(q)
    qc.measure_all()
    from qff_core.execution.qiskit.compiler import TRANSPILER_SEED

    if basis_gates:
        pm = generate_preset_pass_manager(optimization_level=optimization_level, basis_gates=list(basis_gates),
                                          seed_transpiler=TRANSPILER_SEED)
    else:
        pm = generate_preset_pass_manager(optimization_level=optimization_level, backend=backend,
                                          seed_transpiler=TRANSPILER_SEED)
    isa = pm.run(qc)
    if list(isa.parameters) != list(qmodel.template.parameters):
        raise InputError("transpiling the measured circuit changed its parameters")
    masks = np.array([[ch != "I" for ch in reversed(label)] for label in labels])
    coeffs = np.real_if_close(group.coeffs)
    if np.iscomplexobj(coeffs):
        raise InputError("the observable is not Hermitian")
    return MeasuredGroup(circuit=isa, masks=masks, coeffs=np.asarray(coeffs, dtype=float))
