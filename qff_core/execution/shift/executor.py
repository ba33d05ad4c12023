"""Parameter-shift executors: plan the rows, run them on a circuit backend (fanned out on Dask or
submitted as remote jobs), reassemble energies, forces and loss gradients.

The backend is an ``Evaluator`` (``execution/qiskit/aer.py``, ``execution/qiskit/ibm.py``):
it only executes prepared programs. Shot noise is seeded per training step, so a resumed run
draws the same shots as one that never stopped.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from qff_core.execution.base import ParameterMap, Prediction, StepFn, TrainingArrays, generic_training_step
from qff_core.execution.shift.fanout import DEFAULT_RETRY, Evaluator, RemoteEvaluator, RetryPolicy, run_plan
from qff_core.execution.shift.planner import (
    DEFAULT_BATCHING,
    ENERGIES,
    Batching,
    Plan,
    Request,
    ShiftResult,
    plan_shifts,
)

if TYPE_CHECKING:
    from qff_core.execution.qiskit.compiler import QiskitModel
    from qff_core.execution.shift.journal import ChunkResults, JobJournal
    from qff_core.loss import Loss


def step_seed(seed: int | None, step: int) -> int | None:
    """The shot-noise seed of training step ``step`` (None stays None): a resumed run draws the same shots."""
    return None if seed is None else int(np.random.SeedSequence([seed, step, 1]).generate_state(1)[0])


def request_for(loss: Loss) -> Request:
    """What a plan must deliver for ``loss`` and its weight gradient."""
    return Request(forces=loss.needs_forces, weight_gradient=loss.w_energy > 0, force_gradient=loss.needs_forces)


@dataclass(frozen=True)
class ShiftExecutor:
    """Parameter shift on a circuit backend: plan, run the rows (fanned out on ``client``), reassemble.

    ``evaluator`` executes prepared programs, ``program`` is what its ``prepare`` made for this
    model; ``seed`` makes shot noise reproducible; ``retry`` reruns chunks whose job failed with
    a TransientError (never any other error); ``journal`` records remote job ids so that a rerun
    re-attaches; ``results`` keeps finished chunks so that a rerun of the same plan skips them.
    """

    name: str
    qmodel: QiskitModel
    evaluator: Evaluator
    program: object
    batching: Batching = DEFAULT_BATCHING
    client: object | None = None
    seed: int | None = None
    retry: RetryPolicy = DEFAULT_RETRY
    journal: JobJournal | None = None
    results: ChunkResults | None = None

    @property
    def model(self):
        """The model it evaluates."""
        return self.qmodel.model

    @property
    def remote(self) -> bool:
        """Its jobs run elsewhere and have ids (submitted, collected, re-attached)."""
        return isinstance(self.evaluator, RemoteEvaluator)

    def plan(self, theta, positions_a, request: Request) -> Plan:
        """The plan for ``request`` (nothing runs): inspect ``cost()`` before paying for it."""
        return plan_shifts(self.qmodel, theta, positions_a, request, self.batching)

    def run(self, plan: Plan) -> ShiftResult:
        """Evaluate a plan's rows and reassemble them."""
        evs, var = run_plan(plan, self.evaluator, self.program, client=self.client, seed=self.seed, retry=self.retry,
                            journal=self.journal, results=self.results, tag=self.name)
        return plan.reassemble(evs, var)

    def energies_forces(self, theta, positions_a):
        res = self.run(self.plan(theta, positions_a, Request(forces=True)))
        return res.energies, res.forces

    def energies(self, theta, positions_a) -> np.ndarray:
        return self.run(self.plan(theta, positions_a, ENERGIES)).energies

    def predict(self, theta, positions_a) -> Prediction:
        positions = np.asarray(positions_a, dtype=np.float64)
        single = positions.ndim == 2
        res = self.run(self.plan(theta, positions[None] if single else positions, Request(forces=True)))
        shots = self.estimates()
        out = (res.energies, res.forces, res.energies_var if shots else None, res.forces_var if shots else None)
        return Prediction(*(None if a is None else (a[0] if single else a) for a in out))

    def estimates(self) -> bool:
        """Its expectation values are estimates (shots, or a device), so their variances mean something."""
        return self.remote or bool(getattr(self.evaluator, "shots", None))

    def loss_and_grad(self, theta, positions_a, energies_ev, forces_ev_per_a, loss: Loss):
        return loss.from_shifts(self.run(self.plan(theta, positions_a, request_for(loss))), energies_ev,
                                forces_ev_per_a)

    def training_step(self, loss: Loss, optimiser, parameter_map: ParameterMap, data: TrainingArrays) -> StepFn:
        reseed = None if self.seed is None else (lambda step: replace(self, seed=step_seed(self.seed, step)))
        return generic_training_step(self, loss, optimiser, parameter_map, data, reseed=reseed)

    def with_journal(self, journal: JobJournal) -> ShiftExecutor:
        if self.remote and self.journal is None and self.client is None:
            return replace(self, journal=journal)
        return self

    def with_results(self, results: ChunkResults) -> ShiftExecutor:
        return replace(self, results=results)

    def describe(self) -> dict:
        info: dict = {"name": self.name}
        if not getattr(self.evaluator, "seeds_rows", False):  # shots seeded per job: the split fixes them too
            info["min_chunks"] = self.batching.min_chunks
        device = getattr(self.program, "device", None)
        if device:  # a (fake) device: the physical qubits the circuits were placed on, and their two-qubit gates
            info["device"] = device
        mode = getattr(self.evaluator, "mode", None)
        if mode is not None:
            info["runtime_mode"] = type(mode).__name__
        job_ids = getattr(self.evaluator, "job_ids", None)
        if job_ids is not None:
            info["jobs_submitted"] = len(job_ids)
        if self.journal is not None and Path(self.journal.path).exists():
            info["job_journal"] = {"file": Path(self.journal.path).name, "jobs": len(self.journal.load())}
        if self.results is not None:
            info["chunks_reused"] = self.results.stats["reused"]  # finished before an interruption, not run again
        return info


__all__ = ["ShiftExecutor", "request_for", "step_seed"]
