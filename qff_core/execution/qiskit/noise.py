"""Device noise for Aer on the qubits a circuit uses.

A circuit transpiled for a 133-qubit device spans all 133 qubits, and Aer refuses it ("more
memory than max_memory_mb") although it acts on four. So circuits are transpiled for the full
device (layout, routing, gate counts and fidelity estimates as on the device), then *reduced*:
the physical qubits that carry operations are renumbered 0..k-1, the observable follows, and
the device's noise model is restricted to those qubits and their couplings (gate errors,
thermal relaxation, readout errors), renumbered the same way. Simulating the reduced circuit
with the reduced noise model is the same computation on k qubits.

A noise source is a fake backend of qiskit-ibm-runtime by short name (``fake_torino``) or class
name (``FakeManilaV2``), or a JSON file of ``NoiseModel.to_dict()`` (its circuits are lowered
to the model's basis gates, all-to-all).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from qff_core.errors import InputError


@dataclass(frozen=True)
class NoiseSource:
    """A backend to transpile for (None: a noise-model file, lowered to ``basis_gates``) and its noise as a dict."""

    name: str
    backend: object | None
    noise: dict
    basis_gates: tuple[str, ...]


def load_noise(spec: str) -> NoiseSource:
    """The noise source ``spec`` names: a fake backend or a NoiseModel JSON file."""
    if spec.lower().endswith(".json"):
        path = Path(spec)
        try:
            data = json.loads(path.read_text())
            if not isinstance(data, dict):
                raise ValueError(f"it holds a JSON {type(data).__name__}, not a NoiseModel's dict")
            model = noise_model(data)
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise InputError(f"{spec} is not a readable noise-model JSON (NoiseModel.to_dict()): {exc}") from None
        gates = tuple(g for g in model.basis_gates if g not in ("delay", "id", "reset", "measure", "for_loop",
                                                                 "if_else", "switch_case"))
        return NoiseSource(name=path.name, backend=None, noise=data, basis_gates=gates)
    from qff_core.execution.qiskit.aer import fake_backend

    backend = fake_backend(spec)
    return NoiseSource(name=backend.name, backend=backend, noise={}, basis_gates=())


def device_noise_dict(backend) -> dict:
    """The full noise model of a (fake) backend as a dict."""
    from qiskit_aer.noise import NoiseModel

    return NoiseModel.from_backend(backend).to_dict()


def active_qubits(circuits) -> list[int]:
    """Physical qubits that carry an operation in any of ``circuits`` (sorted)."""
    used: set[int] = set()
    for qc in circuits:
        for inst in qc.data:
            if inst.operation.name != "barrier":
                used.update(qc.find_bit(q).index for q in inst.qubits)
    return sorted(used)


def reduce_circuit(circuit, active: list[int]):
    """``circuit`` on ``len(active)`` qubits: physical qubit ``active[i]`` becomes qubit i (classical bits and
    parameters unchanged)."""
    from qiskit import QuantumCircuit, QuantumRegister

    index = {q: i for i, q in enumerate(active)}
    reduced = QuantumCircuit(QuantumRegister(len(active), "q"), *circuit.cregs, name=circuit.name,
                             global_phase=circuit.global_phase)
    for inst in circuit.data:
        qubits = [circuit.find_bit(q).index for q in inst.qubits]
        if inst.operation.name == "barrier":
            qubits = [q for q in qubits if q in index]
            if not qubits:
                continue
        elif any(q not in index for q in qubits):
            raise InputError(f"{inst.operation.name} acts on qubits {qubits} outside the active set {active}")
        reduced.append(inst.operation, [reduced.qubits[index[q]] for q in qubits],
                       [reduced.clbits[circuit.find_bit(c).index] for c in inst.clbits])
    return reduced


def reduce_observable(observable, active: list[int]):
    """A SparsePauliOp on physical qubits restricted to ``active`` (renumbered); identity elsewhere."""
    from qiskit.quantum_info import SparsePauliOp

    index = {q: i for i, q in enumerate(active)}
    terms = []
    for label, qubits, coeff in observable.to_sparse_list():
        if any(q not in index for q in qubits):
            raise InputError(f"the observable acts on qubits {list(qubits)} outside the active set {active}")
        terms.append((label, [index[q] for q in qubits], coeff))
    return SparsePauliOp.from_sparse_list(terms, len(active))


def reduce_noise(noise: dict, active: list[int]) -> dict:
    """The errors of ``noise`` (a NoiseModel dict) on ``active`` qubits only, renumbered like ``reduce_circuit``;
    errors on all qubits (no ``gate_qubits``) are kept as they are."""
    index = {q: i for i, q in enumerate(active)}
    errors = []
    for error in noise.get("errors", []):
        if "gate_qubits" not in error:
            errors.append(error)
            continue
        kept = [tuple(index[q] for q in qubits) for qubits in error["gate_qubits"] if all(q in index for q in qubits)]
        if kept:
            errors.append({**error, "gate_qubits": kept})
    return {**noise, "errors": errors}


def noise_model(noise: dict):
    """A NoiseModel from its dict (as shipped to workers). ``from_dict`` is deprecated since qiskit-aer 0.15 but
    is the only public way back from ``to_dict``; the pinned version has it (a test would fail first)."""
    import warnings

    from qiskit_aer.noise import NoiseModel

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return NoiseModel.from_dict(noise)


__all__ = ["NoiseSource", "active_qubits", "device_noise_dict", "load_noise", "noise_model", "reduce_circuit",
           "reduce_noise", "reduce_observable"]
