"""Shots drawn from exact outcome probabilities, each plan row from its own seed.

A measured group circuit ends in measurements of every qubit and nothing after them, so its
shots are independent draws from one outcome distribution. Aer computes that distribution
(statevector, or density matrix under noise) once per row, the device's readout errors are
applied to it as the per-qubit confusion matrices Aer would sample them with, and the counts
of ``shots`` draws come from a multinomial. This is the same distribution Aer's sampler draws
from, without materialising shots x qubits bits per row, and the generator of row r is
seeded from (seed, group, r) alone: the shots of a row do not depend on how the plan's rows
were split into PUBs, jobs or workers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qff_core.errors import InputError


@dataclass(frozen=True)
class ProbabilityCircuit:
    """A measured group circuit as a probabilities circuit: the measurements replaced by Aer's probability
    snapshot of the measured qubits in classical-bit order (bit j of an outcome index is clbit j), preceded by
    the noise model's own errors on ``measure``; ``readout[j]`` is clbit j's confusion matrix
    P(read | true) (None: none)."""

    circuit: object
    readout: tuple[np.ndarray | None, ...]

    @property
    def n_bits(self) -> int:
        """Measured bits (outcomes: 2**n_bits)."""
        return len(self.readout)


def probability_circuit(circuit, noise: dict | None) -> ProbabilityCircuit:
    """``circuit`` (measurements last) with its measurements replaced by a probability snapshot; ``noise`` (a
    NoiseModel dict on the circuit's qubits) gives the errors of the measurement itself and the readout."""
    from qiskit_aer.library import SaveProbabilities
    from qiskit_aer.noise import QuantumError

    qc = circuit.copy_empty_like()
    measured: dict[int, int] = {}
    for inst in circuit.data:
        if inst.operation.name == "measure":
            measured[circuit.find_bit(inst.clbits[0]).index] = circuit.find_bit(inst.qubits[0]).index
        elif measured and inst.operation.name != "barrier":
            raise InputError(f"{inst.operation.name} follows a measurement: shots cannot be drawn from one "
                             "outcome distribution")
        else:
            qc.append(inst)
    if sorted(measured) != list(range(len(measured))):
        raise InputError("the measured circuit does not measure into classical bits 0..n-1")
    order = [measured[c] for c in range(len(measured))]
    qerrors, readout = _measurement_errors(noise or {}, order)
    for q, errors in zip(order, qerrors, strict=True):
        for error in errors:
            qc.append(QuantumError.from_dict(error), [qc.qubits[q]])
    qc.append(SaveProbabilities(len(order), label="probabilities"), [qc.qubits[q] for q in order])
    return ProbabilityCircuit(qc, readout)


def _measurement_errors(noise: dict, order: list[int]) -> tuple[list[list[dict]], tuple[np.ndarray | None, ...]]:
    """Per measured qubit: the quantum errors of ``measure`` (those on the qubit, else those on every qubit, as
    Aer applies them) and the readout confusion matrix."""
    local_q: dict[int, list[dict]] = {}
    default_q: list[dict] = []
    local_ro: dict[int, np.ndarray] = {}
    default_ro = None
    for error in noise.get("errors", []):
        if "measure" not in error.get("operations", []):
            continue
        qubit_sets = error.get("gate_qubits")
        if error["type"] == "roerror":
            matrix = np.asarray(error["probabilities"], dtype=float)
            if matrix.shape != (2, 2) or any(len(qs) != 1 for qs in qubit_sets or []):
                raise InputError("the noise model has correlated (multi-qubit) readout errors; only per-qubit "
                                 "readout errors are supported with shots")
            if qubit_sets is None:
                default_ro = matrix
            for (q,) in qubit_sets or []:
                local_ro[q] = matrix
        elif qubit_sets is None:
            default_q.append(error)
        else:
            for (q,) in qubit_sets:
                local_q.setdefault(q, []).append(error)
    qerrors = [local_q.get(q, default_q) for q in order]
    return qerrors, tuple(local_ro.get(q, default_ro) for q in order)


def outcome_values(masks: np.ndarray, coeffs: np.ndarray) -> np.ndarray:
    """The value of one shot for every outcome index (2**bits,): the sum of the group's terms, each +-coefficient
    by the parity of its measured bits."""
    n_bits = masks.shape[1]
    outcomes = np.arange(2**n_bits)
    bits = ((outcomes[:, None] >> np.arange(n_bits)) & 1).astype(bool)  # (outcomes, bits), bit j = clbit j
    odd = (bits[:, None, :] & masks[None]).sum(axis=-1) % 2  # (outcomes, terms)
    return (1.0 - 2.0 * odd) @ coeffs


def with_readout(probabilities: np.ndarray, readout: tuple[np.ndarray | None, ...]) -> np.ndarray:
    """Outcome probabilities (rows, 2**bits) as read out: each bit's confusion matrix applied."""
    n = len(readout)
    tensor = probabilities.reshape((-1,) + (2,) * n)  # axis 1 is the highest bit
    for j, matrix in enumerate(readout):
        if matrix is not None:
            axis = n - j
            tensor = np.moveaxis(np.tensordot(tensor, matrix, axes=([axis], [0])), -1, axis)
    return tensor.reshape(probabilities.shape)


def sample_means(probabilities: np.ndarray, values: np.ndarray, shots: int,
                 generators: list[np.random.Generator]) -> tuple[np.ndarray, np.ndarray]:
    """(mean, variance of the mean) of ``shots`` draws of ``values`` per row, row i drawn with ``generators[i]``."""
    p = np.clip(probabilities, 0.0, None)
    p /= p.sum(axis=1, keepdims=True)
    means = np.empty(len(p))
    variances = np.empty(len(p))
    for i, (row, rng) in enumerate(zip(p, generators, strict=True)):
        counts = rng.multinomial(shots, row)
        mean = counts @ values / shots
        means[i] = mean
        variances[i] = counts @ (values - mean) ** 2 / (shots - 1) / shots
    return means, variances


__all__ = ["ProbabilityCircuit", "outcome_values", "probability_circuit", "sample_means", "with_readout"]
