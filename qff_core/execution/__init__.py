"""Where circuits run: one front door to every executor.

``open_executor(config, model)`` (configured runs) and ``get_executor(name, model, ...)``
(the Python API) build an executor from the registry; ``executor_spec(name)`` says what an
executor is and takes; ``found()`` which can run here. The parts, by folder: ``exact/`` (the
JAX statevector simulator and its executor), ``qiskit/`` (the Qiskit compiler, the Aer and
IBM Runtime evaluators), ``shift/`` (the parameter-shift planner, Dask fan-out, job journal
and executor); ``gates.py`` is the gate algebra both compilers share.
"""

from qff_core.execution.config import ExecutorConfig, QpuTimeModel
from qff_core.execution.registry import (
    ExecutorSpec,
    executor_names,
    executor_spec,
    found,
    get_executor,
    open_executor,
    register_executor,
)

__all__ = ["ExecutorConfig", "ExecutorSpec", "QpuTimeModel", "executor_names", "executor_spec", "found",
           "get_executor", "open_executor", "register_executor"]
