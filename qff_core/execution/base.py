"""What every executor offers (``Executor``), and the pieces of a training step they share.

An executor evaluates one model: energies (eV) and forces (eV/Angstrom) of a batch of
geometries, the value and gradient of a ``qff_core.loss.Loss``, and a whole training step
(the loss gradient chained to the optimiser's parameters, then the optimiser update). The
exact executor fuses that step into one jitted program; parameter-shift executors plan,
run and reassemble, then update (``generic_training_step``). The trainer sees only this
protocol.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from qff_core.execution.shift.journal import ChunkResults, JobJournal
    from qff_core.loss import Loss

StepFn = Callable[[Any, Any, np.ndarray, int], tuple[Any, Any, Any]]
"""(optimiser parameters, optimiser state, minibatch indices, step number) -> (parameters, state, loss)."""


@dataclass(frozen=True)
class ParameterMap:
    """theta = multiplier * p + shift: the model parameters from the ones the optimiser sees (numpy, float64)."""

    multiplier: np.ndarray
    shift: np.ndarray

    def theta(self, opt_params) -> np.ndarray:
        """Model parameters at optimiser parameters ``opt_params``."""
        return np.asarray(opt_params) * self.multiplier + self.shift


@dataclass(frozen=True)
class ShotSeed:
    """The shot-noise seed of one job: the plan's ``seed`` and the plan row each of the job's PUBs starts at."""

    seed: int
    starts: tuple[int, ...]

    @classmethod
    def of(cls, seed: int | ShotSeed | None, values: list[np.ndarray]) -> ShotSeed | None:
        """``seed`` as a ShotSeed for PUBs ``values``: a plain int numbers their rows from 0, as one plan."""
        if seed is None or isinstance(seed, ShotSeed):
            return seed
        return cls(int(seed), tuple(int(a) for a in np.cumsum([0] + [len(v) for v in values[:-1]])))

    @property
    def job(self) -> int:
        """One seed for the whole job (evaluators that cannot seed rows): fixed by the seed and first row."""
        return int(np.random.SeedSequence([self.seed, self.starts[0] if self.starts else 0]).generate_state(1)[0])

    def rows(self, pub: int, n_rows: int, stream: int = 0) -> list[np.random.Generator]:
        """A generator for each of PUB ``pub``'s ``n_rows`` rows, from (seed, stream, plan row) alone."""
        start = self.starts[pub]
        return [np.random.default_rng([self.seed, stream, start + i]) for i in range(n_rows)]


def job_seed(seed: int | ShotSeed | None) -> int | None:
    """The seed of a whole job (None stays None)."""
    return seed.job if isinstance(seed, ShotSeed) else seed


@dataclass(frozen=True)
class TrainingArrays:
    """The training set a step draws minibatches from: positions (Angstrom), energies (eV), forces (eV/Angstrom)."""

    positions_a: np.ndarray
    energies_ev: np.ndarray
    forces_ev_per_a: np.ndarray


@dataclass(frozen=True)
class Prediction:
    """Energies (n,) eV and forces (n, atoms, 3) eV/Angstrom of a batch, with the estimator variances
    (eV^2, (eV/Angstrom)^2) of a shot-based executor; None for an exact one."""

    energies_ev: np.ndarray
    forces_ev_per_a: np.ndarray
    energies_var: np.ndarray | None = None
    forces_var: np.ndarray | None = None


@runtime_checkable
class Executor(Protocol):
    """What the trainer, evaluation and calculators call."""

    name: str

    def energies_forces(self, theta: np.ndarray, positions_a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Energies (n,) eV and forces (n, atoms, 3) eV/Angstrom."""
        ...

    def predict(self, theta: np.ndarray, positions_a: np.ndarray) -> Prediction:
        """Energies and forces of a batch with their estimator variances (None when exact)."""
        ...

    def energies(self, theta: np.ndarray, positions_a: np.ndarray) -> np.ndarray:
        """Energies (n,) eV alone: on a circuit, one binding per geometry instead of one per force shift."""
        ...

    def loss_and_grad(self, theta: np.ndarray, positions_a: np.ndarray, energies_ev: np.ndarray,
                      forces_ev_per_a: np.ndarray, loss: Loss) -> tuple[float, np.ndarray]:
        """The loss (dimensionless) and its gradient with respect to theta (zero for frozen parameters)."""
        ...

    def training_step(self, loss: Loss, optimiser, parameter_map: ParameterMap, data: TrainingArrays) -> StepFn:
        """A step function: the minibatch's loss gradient at ``parameter_map.theta(p)``, chained to p, then
        the optax ``optimiser`` update."""
        ...

    def with_journal(self, journal: JobJournal) -> Executor:
        """This executor recording remote job ids in ``journal`` (unchanged when it submits none)."""
        ...

    def with_results(self, results: ChunkResults) -> Executor:
        """This executor keeping finished chunks in ``results``, so a rerun skips them (unchanged when it runs no
        chunks)."""
        ...

    def describe(self) -> dict:
        """What run summaries and checkpoints record about it: name, runtime mode, jobs submitted."""
        ...


def generic_training_step(executor: Executor, loss: Loss, optimiser, parameter_map: ParameterMap,
                          data: TrainingArrays, *, reseed: Callable[[int], Executor] | None = None) -> StepFn:
    """A step from ``executor.loss_and_grad``: the gradient with respect to theta chained to the optimiser's
    parameters (dtheta/dp = multiplier), then the optax update. ``reseed(step)`` gives the executor of one
    step (shot seeds per step, so a resumed run draws the same shots)."""
    import jax.numpy as jnp
    import optax

    def step(opt_params, opt_state, idx, step_number: int):
        idx = np.asarray(idx)
        ex = executor if reseed is None else reseed(step_number)
        value, grad = ex.loss_and_grad(parameter_map.theta(opt_params), data.positions_a[idx],
                                       data.energies_ev[idx], data.forces_ev_per_a[idx], loss)
        updates, opt_state = optimiser.update(jnp.asarray(grad * parameter_map.multiplier), opt_state, opt_params)
        return optax.apply_updates(opt_params, updates), opt_state, value

    return step


__all__ = ["Executor", "ParameterMap", "Prediction", "ShotSeed", "StepFn", "TrainingArrays", "generic_training_step",
           "job_seed"]
