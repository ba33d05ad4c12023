"""The exact executor's simulator: closed-form JAX statevectors compiled from the model IR.

``compile_exact(model)`` gives an ``ExactSimulator`` for any model: one circuit
(``compiler.py``: ``dense`` or ``tensor`` strategy) or a fragment model (``composite.py``:
monomer and pair circuits compiled once each and summed). ``executor.py`` wraps it in the
``Executor`` protocol (loss gradients by autodiff, a jitted training step).
"""

from __future__ import annotations

from typing import Literal

from qff_core.execution.exact.compiler import DENSE_MAX_QUBITS, MAX_EXACT_QUBITS, compile_circuit
from qff_core.execution.exact.composite import compile_composite
from qff_core.execution.exact.simulator import (
    ExactSimulator,
    bucket_size,
    enable_compilation_cache,
    simulator_from_energies,
)
from qff_core.execution.gates import enable_x64
from qff_core.models.fragment import AnyModel, FragmentModel


def compile_exact(model: AnyModel, *, strategy: Literal["auto", "dense", "tensor"] = "auto",
                  unroll: bool | None = None) -> ExactSimulator:
    """Compile ``model`` into jitted JAX functions over batches of geometries (float64).

    ``strategy`` and ``unroll`` as in ``compile_circuit``; a fragment model compiles its
    monomer and pair models once each with them. Every choice gives the same numbers.
    """
    enable_x64()
    if isinstance(model, FragmentModel):
        return compile_composite(model, strategy=strategy, unroll=unroll)
    return compile_circuit(model, strategy=strategy, unroll=unroll)


__all__ = ["DENSE_MAX_QUBITS", "MAX_EXACT_QUBITS", "ExactSimulator", "bucket_size", "compile_exact",
           "enable_compilation_cache", "enable_x64", "simulator_from_energies"]
