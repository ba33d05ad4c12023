"""An ASE calculator of a trained qff model: energies (eV) and forces (eV/Angstrom) for ASE's optimisers,
vibrations and molecular dynamics.

>>> calc = QFFCalculator("runs/h2o", executor="exact")          # best parameters of the run
>>> atoms = calc.reference_atoms(); atoms.calc = calc
>>> atoms.get_potential_energy(), atoms.get_forces()

Atoms may come in any order: they are mapped onto the model's atom order species by species, the
assignment closest to the molecule's reference distances (``qff_core.molecules.matching``); an
invariant model gives the same energy for every assignment its permutation group relates. The
mapping is made once per order of symbols seen. Other elements or counts, or periodic boundary
conditions, are errors. On a shot-based executor (``aer`` with ``shots``, ``ibm``) the results
also hold ``energy_var`` (eV^2) and ``forces_var`` ((eV/Angstrom)^2), the estimator variances,
as MACE reports committee variances. A geometry with an interatomic distance outside the range the
model was trained on gives an ``ExtrapolationWarning`` (once per calculator; ``outside_domain``
counts them all, ``last_outside`` names the pairs of the last).
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import ClassVar

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes

from qff_core.domain import TrainingDomain
from qff_core.errors import InputError, QffError
from qff_core.execution import ExecutorConfig
from qff_core.execution.base import Executor, Prediction
from qff_core.molecules.matching import inverse_order, match_atoms
from qff_core.run import Run, open_run


def executor_config(executor: str | dict | ExecutorConfig) -> ExecutorConfig:
    """An ExecutorConfig from a name (``"exact"``, ``"aer"``), a dict of its fields, or itself."""
    from pydantic import ValidationError

    if isinstance(executor, ExecutorConfig):
        return executor
    try:
        if isinstance(executor, str):
            return ExecutorConfig(name=executor)
        return ExecutorConfig.model_validate(executor)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'executor'}: {e['msg']}" for e in exc.errors())
        raise InputError(f"executor {executor!r} is not usable: {problems}") from None


class QFFCalculator(Calculator):
    """The model of a qff training run as an ASE calculator (``energy`` in eV, ``forces`` in eV/Angstrom).

    ``run_dir``: a run written by ``qff train``; ``executor``: where the model is evaluated (default
    the exact simulator); ``checkpoint``: a step kept in the run, or a checkpoint folder, whose
    parameters to use (default: the best on validation). Use it as a context manager (or call
    ``close``) with a remote or Dask-backed executor.
    """

    implemented_properties: ClassVar[list[str]] = ["energy", "forces"]

    def __init__(self, run_dir: str | Path, executor: str | dict | ExecutorConfig = "exact", *,
                 checkpoint: int | str | Path | None = None, token: str | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.run: Run = open_run(run_dir)
        self.theta, ckpt = self.run.parameters(checkpoint)
        self.step = ckpt.step
        self.executor_config = executor_config(executor)
        self._stack = ExitStack()
        self.executor: Executor = self._open(token)
        self._orders: dict[tuple[str, ...], tuple[np.ndarray, np.ndarray]] = {}
        self.domain: TrainingDomain | None = training_domain(self.run)
        self.outside_domain = 0  # calculations of geometries outside the training domain
        self.last_outside: list[str] = []
        if self.executor_config.name != "exact" and getattr(self.executor, "estimates", lambda: False)():
            self.implemented_properties = [*type(self).implemented_properties, "energy_var", "forces_var"]

    def _open(self, token: str | None) -> Executor:
        from qff_core.execution import open_executor

        if self.executor_config.name == "exact":
            from qff_core.execution.exact.executor import ExactExecutor

            return ExactExecutor.for_model(self.run.model)
        self.executor_config.spec.preflight(self.executor_config, token)
        return self._stack.enter_context(open_executor(self.executor_config, self.run.model, token=token,
                                                       runtime_mode="batch"))

    @property
    def molecule(self):
        """The model's molecule spec."""
        return self.run.model.molecule

    @property
    def rotation_invariant(self) -> bool:
        """The model's energy is invariant under rotations (not the generic model, no symmetry-breaking gates): its
        forces then keep a molecule's zero rotation."""
        model = self.run.config.model
        return model.model != "generic" and model.symmetry_breaking == "off"

    def reference_atoms(self) -> Atoms:
        """An ``Atoms`` of the model's molecule at the dataset's minimum (the sampler's), else the spec's geometry."""
        return Atoms(symbols=list(self.molecule.symbols), positions=reference_positions(self.run))

    def _order(self, atoms: Atoms) -> tuple[np.ndarray, np.ndarray]:
        symbols = tuple(atoms.get_chemical_symbols())
        if symbols not in self._orders:
            order = np.asarray(match_atoms(self.molecule, symbols, atoms.positions))
            self._orders[symbols] = (order, inverse_order(order))
        return self._orders[symbols]

    def calculate(self, atoms: Atoms | None = None, properties=None, system_changes=all_changes) -> None:
        """Energy and forces of ``atoms`` (and their variances on a shot-based executor)."""
        Calculator.calculate(self, atoms, properties, system_changes)
        if self.atoms.pbc.any():
            raise InputError("the qff model is of an isolated molecule; this Atoms has periodic boundary conditions "
                             "(set atoms.pbc = False)")
        order, back = self._order(self.atoms)
        positions = self.atoms.positions[order]
        self.last_outside = self.domain.outside(positions) if self.domain is not None else []
        if self.last_outside:
            if self.outside_domain == 0:
                self.domain.warn(self.last_outside)
            self.outside_domain += 1
        prediction: Prediction = self.executor.predict(self.theta, positions)
        self.results = {"energy": float(prediction.energies_ev),
                        "forces": np.asarray(prediction.forces_ev_per_a)[back]}
        if prediction.energies_var is not None:
            self.results["energy_var"] = float(prediction.energies_var)
        if prediction.forces_var is not None:
            self.results["forces_var"] = np.asarray(prediction.forces_var)[back]

    def close(self) -> None:
        """Release the executor (a Dask client, a Runtime session)."""
        self._stack.close()

    def __enter__(self) -> QFFCalculator:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def training_domain(run: Run) -> TrainingDomain | None:
    """The interatomic distances of the run's training split (None when its dataset cannot be read here)."""
    try:
        positions = run.dataset().samples(run.split.train)[0]
    except (QffError, OSError):
        return None
    return TrainingDomain.of_positions(tuple(run.model.molecule.symbols), positions)


def reference_positions(run: Run) -> np.ndarray:
    """Positions (Angstrom) to start from: the minimum the dataset's sampler recorded, else the molecule's."""
    sampler = run.dataset().group.attrs.get("sampler", {}) or {}
    minimum = sampler.get("minimum", {}).get("positions_a")
    return np.asarray(minimum if minimum is not None else run.model.molecule.positions_a, dtype=np.float64)


__all__ = ["QFFCalculator", "executor_config", "reference_positions", "training_domain"]
