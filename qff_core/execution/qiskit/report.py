"""What a model's circuit becomes on a device: two-qubit gates, depth, layout and an estimated fidelity.

``estimated_fidelity`` is the product over the transpiled circuit's instructions of
(1 - error) of that instruction on its physical qubits, times (1 - readout error) of every
measured qubit, with the errors the backend reports (its ``Target``); instructions with no
reported error count as perfect. It ignores decoherence during idle time and crosstalk, so it
is an upper bound of the chance that a shot runs without error.
"""

from __future__ import annotations

from qff_core.execution.qiskit.compiler import QiskitModel, transpile_for


def _two_qubit_depth(circuit) -> int:
    return circuit.depth(filter_function=lambda inst: inst.operation.num_qubits == 2)


def transpile_report(qmodel: QiskitModel, backend, *, optimization_level: int = 1) -> dict:
    """Gate counts, depths, the layout (physical qubit of each virtual qubit) and estimated fidelity of
    ``qmodel``'s template transpiled for ``backend`` at ``optimization_level``."""
    program = transpile_for(qmodel, backend, optimization_level=optimization_level)
    isa = program.circuit
    target = backend.target
    fidelity = 1.0
    for inst in isa.data:
        name = inst.operation.name
        if name in ("barrier", "delay") or name not in target.operation_names:
            continue
        qargs = tuple(isa.find_bit(q).index for q in inst.qubits)
        props = target[name].get(qargs) if target[name] is not None else None
        if props is not None and props.error is not None:
            fidelity *= 1.0 - props.error
    layout = isa.layout.final_index_layout() if isa.layout is not None else list(range(qmodel.model.n_qubits))
    if "measure" in target.operation_names:
        for q in layout:
            props = target["measure"].get((q,))
            if props is not None and props.error is not None:
                fidelity *= 1.0 - props.error
    counts = dict(isa.count_ops())
    two_qubit = sum(1 for inst in isa.data if inst.operation.num_qubits == 2)
    return {"backend": program.target, "optimization_level": optimization_level,
            "two_qubit_gates": two_qubit, "depth": isa.depth(), "two_qubit_depth": _two_qubit_depth(isa),
            "layout": [int(q) for q in layout], "gate_counts": {k: int(v) for k, v in sorted(counts.items())},
            "estimated_fidelity": float(fidelity)}


__all__ = ["transpile_report"]
