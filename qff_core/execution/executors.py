"""Executors behind one small protocol, found by name: ``exact``, ``aer``, ``ibm``.

An executor gives energies (eV) and forces (eV/Angstrom) for a batch of geometries and the
value and weight gradient of the training loss

    loss = w_energy * mean(((E_pred - (E - energy_shift_ev)) / energy_scale_ev)^2)
         + w_forces * mean(((F_pred - F) / force_scale_ev_per_a)^2)

(means over geometries, resp. over all force components). Gradients are zero for frozen
parameters. ``exact`` differentiates the JAX simulator; quantum executors plan parameter
shifts, run the rows (on a Dask client when given one) and reassemble.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import jax
import jax.numpy as jnp
import numpy as np

from qff_core.errors import InputError, ResourceError
from qff_core.execution.exact import ExactSimulator, compile_exact
from qff_core.execution.fanout import DEFAULT_RETRY, Evaluator, RetryPolicy, run_plan
from qff_core.execution.journal import JobJournal
from qff_core.execution.qiskit_circuits import QiskitModel, compile_qiskit
from qff_core.execution.shift import DEFAULT_BATCHING, Batching, Plan, Request, ShiftResult, plan_shifts
from qff_core.models.ir import Model


@runtime_checkable
class Executor(Protocol):
    """What the trainer calls."""

    name: str

    def energies_forces(self, theta: np.ndarray, positions_a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Energies (n,) eV and forces (n, atoms, 3) eV/Angstrom."""
        ...

    def loss_and_grad(self, theta: np.ndarray, positions_a: np.ndarray, energies_ev: np.ndarray,
                      forces_ev_per_a: np.ndarray, *, w_energy: float, w_forces: float, energy_scale_ev: float,
                      force_scale_ev_per_a: float, energy_shift_ev: float = 0.0) -> tuple[float, np.ndarray]:
        """The loss (dimensionless) and its gradient with respect to theta."""
        ...


@dataclass(frozen=True)
class LossWeights:
    """The loss's weights and scales (eV, eV/Angstrom)."""

    w_energy: float
    w_forces: float
    energy_scale_ev: float
    force_scale_ev_per_a: float
    energy_shift_ev: float = 0.0

    def __post_init__(self) -> None:
        if self.energy_scale_ev <= 0 or self.force_scale_ev_per_a <= 0:
            raise InputError("energy_scale_ev and force_scale_ev_per_a must be positive")
        if self.w_energy < 0 or self.w_forces < 0:
            raise InputError("loss weights must be non-negative")

    def request(self) -> Request:
        """What a parameter-shift plan must deliver for this loss and its weight gradient."""
        return Request(forces=self.w_forces > 0, weight_gradient=self.w_energy > 0, force_gradient=self.w_forces > 0)


# ----------------------------------------------------------------------------- exact


@dataclass(frozen=True)
class ExactExecutor:
    """The JAX statevector simulator; loss gradients by autodiff (mixed second derivatives for forces)."""

    simulator: ExactSimulator
    name: str = "exact"
    _loss: Callable = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        sim = self.simulator
        mask = jnp.asarray(sim.model.trainable_mask(), dtype=jnp.float64)

        def energy_loss(theta, positions, e_ref, f_ref, w):
            e = sim.batch_energies_fn(theta, positions)
            return w[0] * jnp.mean(((e - (e_ref - w[4])) / w[2]) ** 2)

        def loss(theta, positions, e_ref, f_ref, w):
            e, f = sim.energies_forces_fn(theta, positions)
            value = w[0] * jnp.mean(((e - (e_ref - w[4])) / w[2]) ** 2)
            return value + w[1] * jnp.mean(((f - f_ref) / w[3]) ** 2)

        # Without forces in the loss, no second derivatives: a much smaller program to compile.
        with_forces = jax.jit(jax.value_and_grad(loss))
        energy_only = jax.jit(jax.value_and_grad(energy_loss))

        def masked(theta, positions, e_ref, f_ref, w, forces: bool):
            v, g = (with_forces if forces else energy_only)(theta, positions, e_ref, f_ref, w)
            return v, g * mask

        object.__setattr__(self, "_loss", masked)

    @classmethod
    def for_model(cls, model: Model) -> ExactExecutor:
        """Compile ``model`` and wrap it."""
        return cls(compile_exact(model))

    def energies_forces(self, theta, positions_a):
        return self.simulator.evaluate(theta, positions_a)

    def loss_and_grad(self, theta, positions_a, energies_ev, forces_ev_per_a, *, w_energy, w_forces, energy_scale_ev,
                      force_scale_ev_per_a, energy_shift_ev=0.0):
        w = LossWeights(w_energy, w_forces, energy_scale_ev, force_scale_ev_per_a, energy_shift_ev)
        positions = self.simulator.model.molecule.validate_positions(positions_a)
        value, grad = self._loss(jnp.asarray(theta, dtype=jnp.float64), jnp.asarray(positions),
                                 jnp.asarray(energies_ev, dtype=jnp.float64),
                                 jnp.asarray(forces_ev_per_a, dtype=jnp.float64),
                                 jnp.asarray([w.w_energy, w.w_forces, w.energy_scale_ev, w.force_scale_ev_per_a,
                                              w.energy_shift_ev]), w.w_forces > 0)
        return float(value), np.asarray(grad)


# ----------------------------------------------------------------------------- parameter shift


def loss_from_shifts(result: ShiftResult, energies_ev: np.ndarray, forces_ev_per_a: np.ndarray,
                     w: LossWeights) -> tuple[float, np.ndarray]:
    """The loss and its gradient from a reassembled plan (energy Jacobian, force second-order shifts)."""
    n = len(result.energies)
    e_res = result.energies - (np.asarray(energies_ev) - w.energy_shift_ev)
    loss = w.w_energy * float(np.mean((e_res / w.energy_scale_ev) ** 2))
    grad = np.zeros(result.plan.qmodel.model.n_parameters)
    if w.w_energy:
        grad += (2 * w.w_energy / (n * w.energy_scale_ev**2)) * (e_res @ result.energy_jacobian)
    if w.w_forces:
        f_res = result.forces - np.asarray(forces_ev_per_a)
        loss += w.w_forces * float(np.mean((f_res / w.force_scale_ev_per_a) ** 2))
        # F = -dE/dr, so dLoss/d(dE/dr) = -2 w_F (F - F_ref) / (N sigma_F^2).
        cotangent = -2 * w.w_forces * f_res / (f_res.size * w.force_scale_ev_per_a**2)
        grad += result.force_gradient(cotangent)
    return loss, grad


@dataclass(frozen=True)
class ShiftExecutor:
    """Parameter shift on a circuit backend: plan, run the rows (fanned out on ``client``), reassemble.

    ``evaluator`` executes prepared programs (``AerEvaluator``...), ``program`` is what its
    ``prepare`` made for this model; ``seed`` makes shot noise reproducible; ``retry`` reruns
    chunks whose job failed with a TransientError (never any other error); ``journal`` records
    remote job ids so that a rerun re-attaches.
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

    def plan(self, theta, positions_a, request: Request) -> Plan:
        """The plan for ``request`` (nothing runs): inspect ``cost()`` before paying for it."""
        return plan_shifts(self.qmodel, theta, positions_a, request, self.batching)

    def run(self, plan: Plan) -> ShiftResult:
        """Evaluate a plan's rows and reassemble them."""
        evs, var = run_plan(plan, self.evaluator, self.program, client=self.client, seed=self.seed, retry=self.retry,
                            journal=self.journal, tag=self.name)
        return plan.reassemble(evs, var)

    def energies_forces(self, theta, positions_a):
        res = self.run(self.plan(theta, positions_a, Request(forces=True)))
        return res.energies, res.forces

    def loss_and_grad(self, theta, positions_a, energies_ev, forces_ev_per_a, *, w_energy, w_forces, energy_scale_ev,
                      force_scale_ev_per_a, energy_shift_ev=0.0):
        w = LossWeights(w_energy, w_forces, energy_scale_ev, force_scale_ev_per_a, energy_shift_ev)
        return loss_from_shifts(self.run(self.plan(theta, positions_a, w.request())), energies_ev, forces_ev_per_a, w)


# ----------------------------------------------------------------------------- registry


def _make_exact(model: Model, **options) -> ExactExecutor:
    if options:
        raise InputError(f"the exact executor takes no options; got {sorted(options)}")
    return ExactExecutor.for_model(model)


def _make_aer(model: Model, *, shots: int | None = None, noise_backend: str | None = None, threads: int = 1,
              batching: Batching = DEFAULT_BATCHING, client=None, seed: int | None = None,
              retry: RetryPolicy = DEFAULT_RETRY) -> ShiftExecutor:
    from qff_core.execution.aer import AerEvaluator

    qmodel = compile_qiskit(model)
    evaluator = AerEvaluator(shots=shots, noise_backend=noise_backend, threads=threads)
    return ShiftExecutor(name="aer", qmodel=qmodel, evaluator=evaluator, program=evaluator.prepare(qmodel),
                         batching=batching, client=client, seed=seed, retry=retry)


def _make_ibm(model: Model, *, backend="aer", options: dict | None = None, mode=None,
              batching: Batching = DEFAULT_BATCHING, seed: int | None = None,
              journal: JobJournal | None = None, retry: RetryPolicy = DEFAULT_RETRY, service=None) -> ShiftExecutor:
    """``backend``: a name for ``ibm_backend`` or a backend object; ``mode``: an open Session/Batch;
    ``service``: the account's QiskitRuntimeService (re-attaches to journalled jobs)."""
    from qff_core.execution.ibm import IbmEvaluator, ibm_backend

    qmodel = compile_qiskit(model)
    evaluator = IbmEvaluator(backend=ibm_backend(backend, service=service) if isinstance(backend, str) else backend,
                             options=dict(options or {"resilience_level": 0}), mode=mode, service=service)
    return ShiftExecutor(name="ibm", qmodel=qmodel, evaluator=evaluator, program=evaluator.prepare(qmodel),
                         batching=batching, seed=seed, journal=journal, retry=retry)


def _missing(module: str, package: str) -> Callable[[], str | None]:
    def check() -> str | None:
        try:
            __import__(module)
        except ImportError:
            return f"{package} is not installed: pip install {package}"
        return None

    return check


EXECUTORS: dict[str, tuple[Callable[..., Executor], Callable[[], str | None]]] = {
    "exact": (_make_exact, lambda: None),
    "aer": (_make_aer, _missing("qiskit_aer", "qiskit-aer")),
    "ibm": (_make_ibm, _missing("qiskit_ibm_runtime", "qiskit-ibm-runtime")),
}


def found() -> dict[str, str | None]:
    """Every registered executor and why it is unavailable here (None when it is available)."""
    return {name: missing() for name, (_, missing) in EXECUTORS.items()}


def get_executor(name: str, model: Model, **options) -> Executor:
    """Build the executor ``name`` for ``model`` (``options`` as its factory takes them)."""
    try:
        factory, missing = EXECUTORS[name]
    except KeyError:
        raise InputError(f"unknown executor {name!r}; choose one of {sorted(EXECUTORS)}") from None
    reason = missing()
    if reason:
        raise ResourceError(reason)
    return factory(model, **options)
