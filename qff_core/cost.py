"""Cost before submission: circuits, parameter bindings, shots and estimated QPU seconds of a
training run or an evaluation.

Counts come from the model's structure (``count_shifts``: the rows the planner would submit),
nothing is run. A training step plans the loss gradient of one minibatch (energies, forces
and their weight gradients as the loss weights ask); initialisation and validation run on the
exact simulator and cost no QPU time. An evaluation is one "step": energies and forces of
every scored geometry (test set x transformed copies), in one plan.

Shots executed by one step: bindings x measured bases (qubit-wise commuting groups of the
observable, one measured circuit each) x shots per binding after twirling and ZNE
(``ExecutorConfig.executed_shots_per_binding``); ZNE's noise learning and TREX's calibration
circuits are not modelled.

QPU time of one primitive job (``ExecutorConfig.qpu_time``, a ``QpuTimeModel``):
``job_overhead_s + shots_executed x (rep_delay_s + circuit_duration_s)``: IBM executes a job's
circuits shot by shot, with ``rep_delay`` between circuit executions (IBM docs, "Qubit initialization"). In a Session,
IBM bills the wall-clock time the session is open, so classical work between steps and
queueing come on top of this estimate. The ibm executor is priced in local testing mode too
(``aer``, ``Fake...`` backends): a rehearsal shows what the device would take; aer and exact
simulate here and cost no QPU time. Which executor is priced how comes from its registry entry
(``qpu``: priced; ``exact``: no circuits).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from qff_core.errors import InputError
from qff_core.execution.config import ExecutorConfig, QpuTimeModel
from qff_core.run import TrainConfig


class BudgetError(InputError):
    """A run would use more QPU time than allowed (``max_qpu_seconds``)."""


@dataclass(frozen=True)
class RunCost:
    """What a training run will submit, per step and in total. ``qpu``: priced as QPU time (ibm), else 0;
    ``local_testing``: ibm in local testing mode (the price is what a device would take)."""

    executor: str
    backend: str | None
    kind: str  # "training" or "evaluation"
    steps: int
    geometries_per_step: int
    circuits_per_step: int
    bindings_per_step: int
    jobs_per_step: int
    shots_per_step: int
    qpu_seconds_per_step: float
    qpu_seconds_total: float
    qpu: bool
    local_testing: bool
    qpu_time_model: dict
    forces: bool = True  # False: energies only (one binding per geometry)

    def to_dict(self) -> dict:
        """JSON-ready."""
        return asdict(self)

    def describe(self) -> str:
        """A few lines for people."""
        where = f"{self.executor} executor" + (f" on {self.backend}" if self.backend else "")
        counts = (f"{self.circuits_per_step} circuits, {self.bindings_per_step:,} parameter bindings, "
                  f"{self.jobs_per_step} primitive jobs, {self.shots_per_step:,} shots, "
                  f"{self.qpu_seconds_per_step:,.1f} QPU s")
        if self.kind == "evaluation":
            what = "energies and forces" if self.forces else "energies"
            lines = [f"{where}, {what} of {self.geometries_per_step} geometries (one plan):",
                     f"  {counts} ({self.qpu_seconds_total / 3600:.2f} h)"]
        else:
            lines = [f"{where}, {self.geometries_per_step} geometries per step:", f"  per step: {counts}",
                     f"  {self.steps} steps: {self.qpu_seconds_total:,.1f} QPU s "
                     f"({self.qpu_seconds_total / 3600:.2f} h)"]
        if self.qpu:
            m = self.qpu_time_model
            lines.append(f"  QPU-time model: {m['job_overhead_s']:g} s per job + shots x "
                         f"({m['rep_delay_s'] * 1e6:g} us rep delay + {m['circuit_duration_s'] * 1e6:g} us circuit); "
                         "override under qpu_time:")
            if self.local_testing:
                lines.append("  (local testing mode: priced as a device would run it; nothing is billed)")
        else:
            lines.append("  no QPU time: these circuits are simulated here")
        return "\n".join(lines)


def geometries_per_step(config: TrainConfig) -> int:
    """The minibatch size: ``batch_size``, capped by the training split when the dataset exists."""
    from qff_core.run import make_split
    from qff_core.store.dataset import Dataset

    try:
        dataset = Dataset.open(config.dataset)
    except InputError:
        return config.batch_size
    return min(config.batch_size, make_split(dataset.status(), config).train.size)


def _model(config: TrainConfig):
    from qff_core.models import build_model
    from qff_core.molecules import load_molecule

    if config.molecule is None:
        from qff_core.run import molecule_of
        from qff_core.store.dataset import Dataset

        try:
            return build_model(molecule_of(Dataset.open(config.dataset)), config.model)
        except InputError as exc:
            raise InputError(f"{exc}; to price a run before its dataset exists, give molecule: in the train "
                             "section") from None
    return build_model(load_molecule(config.molecule), config.model)


def _check_device(model, executor: ExecutorConfig) -> None:
    """InputError for a device that cannot run the model, as the run itself would say: an unknown fake backend
    (a typo priced as "local testing mode" before), or one narrower than the model. Real device names need the
    account and are checked when the run starts."""
    from qff_core.execution.registry import is_local_backend

    name = executor.noise_backend if executor.name == "aer" else executor.backend
    if name is None or name == "aer" or name.lower().endswith(".json") or not is_local_backend(name):
        return
    from qff_core.execution.qiskit.aer import check_fits, fake_backend

    check_fits(model, fake_backend(name))


def plan_cost(model, executor: ExecutorConfig, n_geometries: int, request, *, kind: str, steps: int,
              qpu_time: QpuTimeModel | None = None) -> RunCost:
    """Price ``steps`` plans of ``request`` for ``n_geometries`` geometries on ``executor`` (its own
    ``qpu_time`` model unless one is given)."""
    from qff_core.execution.qiskit.compiler import compile_qiskit
    from qff_core.execution.shift.planner import count_shifts

    qpu_time = qpu_time or executor.qpu_time
    spec = executor.spec
    _check_device(model, executor)
    circuits = bindings = jobs = shots = 0
    if not spec.exact:
        qmodel = compile_qiskit(model)
        counts = count_shifts(qmodel, n_geometries, request, executor.batching())
        per_binding = executor.executed_shots_per_binding()
        bases = len(qmodel.observable.group_commuting(qubit_wise=True)) if per_binding else 1
        circuits, bindings, jobs = counts["circuits"] * bases, counts["rows"], counts["chunks"]
        shots = bindings * bases * per_binding
    per_step = qpu_time.seconds(jobs, shots) if spec.qpu else 0.0
    return RunCost(executor=executor.name, backend=executor.backend or executor.noise_backend, kind=kind,
                   steps=steps, geometries_per_step=n_geometries, circuits_per_step=circuits,
                   bindings_per_step=bindings, jobs_per_step=jobs, shots_per_step=shots,
                   qpu_seconds_per_step=per_step, qpu_seconds_total=per_step * steps, qpu=spec.qpu,
                   local_testing=spec.qpu and executor.local, qpu_time_model=qpu_time.model_dump(),
                   forces=bool(getattr(request, "forces", True)))


def training_cost(config: TrainConfig, *, qpu_time: QpuTimeModel | None = None, steps: int | None = None) -> RunCost:
    """The cost of ``steps`` (default: all) training steps of ``config`` on its executor."""
    from qff_core.execution.shift.executor import request_for
    from qff_core.loss import Loss

    model = None if config.executor.spec.exact else _model(config)
    request = request_for(Loss(config.energy_weight, config.force_weight))
    return plan_cost(model, config.executor, geometries_per_step(config), request, kind="training",
                     steps=config.steps if steps is None else steps, qpu_time=qpu_time)


def remaining_steps(config: TrainConfig, run_dir: str | Path | None) -> int:
    """Steps a ``qff train`` call would still run: all, or what is left after the run's latest checkpoint."""
    from qff_core.store.checkpoint import latest_checkpoint, read_checkpoint

    if run_dir is None:
        return config.steps
    latest = latest_checkpoint(Path(run_dir) / "checkpoints")
    return config.steps if latest is None else max(0, config.steps - read_checkpoint(latest).step)


def check_qpu_budget(config: TrainConfig, max_qpu_seconds: float, *, qpu_time: QpuTimeModel | None = None,
                     run_dir: str | Path | None = None) -> RunCost:
    """The cost of the steps still to run; BudgetError (before anything is written) when it exceeds the budget."""
    cost = training_cost(config, qpu_time=qpu_time, steps=remaining_steps(config, run_dir))
    _check_budget(cost, max_qpu_seconds, "Lower --steps, --batch-size or --shots")
    return cost


def check_evaluation_budget(cost: RunCost, max_qpu_seconds: float) -> RunCost:
    """``cost`` of an evaluation; BudgetError (before anything is submitted) when it exceeds the budget."""
    _check_budget(cost, max_qpu_seconds, "Lower --max-test, drop --sets or lower --shots")
    return cost


def _check_budget(cost: RunCost, max_qpu_seconds: float, remedy: str) -> None:
    if cost.qpu_seconds_total > max_qpu_seconds:
        what = f"{cost.steps} steps" if cost.kind == "training" else f"evaluating {cost.geometries_per_step} geometries"
        raise BudgetError(
            f"{what} on {cost.executor} ({cost.backend}) would take an estimated "
            f"{cost.qpu_seconds_total:,.0f} QPU s ({cost.qpu_seconds_per_step:,.1f} s per step: "
            f"{cost.bindings_per_step:,} bindings, {cost.shots_per_step:,} shots, {cost.jobs_per_step} jobs), more "
            f"than --max-qpu-seconds {max_qpu_seconds:g}; nothing was started. {remedy}, or raise the limit "
            "(see `qff cost --config FILE`)")
