"""Cost before submission: circuits, parameter bindings, shots and estimated QPU seconds of a
training run or an evaluation.

Counts come from the model's structure (``count_shifts``: the rows the planner would submit),
nothing is run. A training step plans the loss gradient of one minibatch (energies, forces
and their weight gradients as the loss weights ask); initialisation and validation run on the
exact simulator and cost no QPU time. An evaluation is one "step": energies and forces of
every scored geometry (test set x transformed copies), in one plan.

Shots executed by one step: bindings x measured bases (qubit-wise commuting groups of the
observable, one measured circuit each) x shots per binding. With twirling (IBM resilience
level 1 and 2) shots are rounded up to whole randomizations, TwirlingOptions' "auto" rule:
``max(64, ceil(shots / 32))`` shots per randomization; level 2 (ZNE) runs every circuit at
its 3 default noise factors (1, 3, 5); ZNE's noise learning and TREX's calibration circuits
are not modelled.

QPU time of one primitive job (``QpuTimeModel``): ``job_overhead_s + shots_executed x
(rep_delay_s + circuit_duration_s)``: IBM executes a job's circuits shot by shot, with
``rep_delay`` between circuit executions (IBM docs, "Qubit initialization"). In a Session,
IBM bills the wall-clock time the session is open, so classical work between steps and
queueing come on top of this estimate. The ibm executor is priced in local testing mode too
(``aer``, ``Fake...`` backends): a rehearsal shows what the device would take; aer and exact
simulate here and cost no QPU time.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from qff_core.errors import InputError
from qff_core.evaluation import EvaluateConfig
from qff_core.execution.settings import ExecutorSettings
from qff_core.training import TrainConfig

ZNE_NOISE_FACTORS = 3
"""Circuit executions per binding under ZNE: qiskit-ibm-runtime 0.51's DEFAULT_NOISE_FACTORS (1, 3, 5)."""


class BudgetError(InputError):
    """A run would use more QPU time than allowed (``--max-qpu-seconds``)."""


class QpuTimeModel(BaseModel):
    """Estimated QPU seconds of a primitive job: ``job_overhead_s + shots x (rep_delay_s + circuit_duration_s)``.

    Defaults and their sources (override them under ``qpu_time:`` in the config):

    * ``rep_delay_s`` = 250e-6 s: ``default_rep_delay`` of IBM's Heron and Falcon fake backends
      in qiskit-ibm-runtime 0.51 (FakeFez, FakeTorino, FakeManilaV2; ``rep_delay_range`` 0-500 us).
    * ``circuit_duration_s`` = 10e-6 s: an assumption for these shallow circuits plus readout
      (gates of tens of ns, measurement ~1-2 us); ``isa.estimate_duration(backend.target)`` gives a device's.
    * ``job_overhead_s`` = 3.0 s: IBM's "Estimate job run time" guide shows a 2-qubit Bell circuit at
      the default 4096 shots estimated at 4.1 quantum seconds, of which shots take ~1.1 s.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    job_overhead_s: float = Field(3.0, ge=0, description="seconds per primitive job (loading, compiling, returning)")
    rep_delay_s: float = Field(250e-6, ge=0, description="seconds between circuit executions")
    circuit_duration_s: float = Field(10e-6, ge=0, description="seconds of one circuit execution (gates + readout)")

    def seconds(self, jobs: int, shots: int) -> float:
        """QPU seconds of ``jobs`` primitive jobs executing ``shots`` circuit shots in all."""
        return jobs * self.job_overhead_s + shots * (self.rep_delay_s + self.circuit_duration_s)


def executed_shots_per_binding(settings: ExecutorSettings) -> int:
    """Circuit shots per binding and measured basis after twirling and ZNE (0 for exact expectation values)."""
    shots = settings.shots_per_binding()
    if shots is None:
        return 0
    if settings.name == "ibm" and settings.resilience_level >= 1:
        per_randomization = max(64, math.ceil(shots / 32))
        shots = math.ceil(shots / per_randomization) * per_randomization
    if settings.name == "ibm" and settings.resilience_level == 2:
        shots *= ZNE_NOISE_FACTORS
    return shots


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
            lines = [f"{where}, energies and forces of {self.geometries_per_step} geometries (one plan):",
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
    from qff_core.store.dataset import Dataset
    from qff_core.training import make_split

    try:
        dataset = Dataset.open(config.dataset)
    except InputError:
        return config.batch_size
    return min(config.batch_size, make_split(dataset.status(), config).train.size)


def _model(config: TrainConfig):
    from qff_core.models import build_model
    from qff_core.molecules import load_molecule

    if config.molecule is None:
        from qff_core.store.dataset import Dataset
        from qff_core.training import _molecule_of

        try:
            return build_model(_molecule_of(Dataset.open(config.dataset)), config.model)
        except InputError as exc:
            raise InputError(f"{exc}; to price a run before its dataset exists, give molecule: in the train "
                             "section") from None
    return build_model(load_molecule(config.molecule), config.model)


def _plan_cost(model, settings: ExecutorSettings, n_geometries: int, request, *, kind: str, steps: int,
               qpu_time: QpuTimeModel) -> RunCost:
    """Price ``steps`` plans of ``request`` for ``n_geometries`` geometries on ``settings``' executor."""
    from qff_core.execution.qiskit_circuits import compile_qiskit
    from qff_core.execution.shift import count_shifts

    circuits = bindings = jobs = shots = 0
    if settings.name != "exact":
        qmodel = compile_qiskit(model)
        counts = count_shifts(qmodel, n_geometries, request, settings.batching())
        per_binding = executed_shots_per_binding(settings)
        bases = len(qmodel.observable.group_commuting(qubit_wise=True)) if per_binding else 1
        circuits, bindings, jobs = counts["circuits"] * bases, counts["rows"], counts["chunks"]
        shots = bindings * bases * per_binding
    qpu = settings.name == "ibm"
    per_step = qpu_time.seconds(jobs, shots) if qpu else 0.0
    return RunCost(executor=settings.name, backend=settings.backend or settings.noise_backend, kind=kind,
                   steps=steps, geometries_per_step=n_geometries, circuits_per_step=circuits,
                   bindings_per_step=bindings, jobs_per_step=jobs, shots_per_step=shots,
                   qpu_seconds_per_step=per_step, qpu_seconds_total=per_step * steps, qpu=qpu,
                   local_testing=qpu and settings.local, qpu_time_model=qpu_time.model_dump())


def training_cost(config: TrainConfig, *, qpu_time: QpuTimeModel | None = None, steps: int | None = None) -> RunCost:
    """The cost of ``steps`` (default: all) training steps of ``config`` on its executor."""
    from qff_core.execution.executors import LossWeights

    model = _model(config) if config.executor.name != "exact" else None
    request = LossWeights(config.energy_weight, config.force_weight, 1.0, 1.0).request()
    return _plan_cost(model, config.executor, geometries_per_step(config), request, kind="training",
                      steps=config.steps if steps is None else steps, qpu_time=qpu_time or QpuTimeModel())


def evaluation_cost(config: EvaluateConfig, *, qpu_time: QpuTimeModel | None = None) -> RunCost:
    """The cost of ``qff evaluate`` with ``config``: energies and forces of every scored geometry, one plan."""
    from qff_core.execution.shift import Request
    from qff_core.training import open_run

    run = open_run(config.run_dir)
    n = config.n_geometries(len(run.split.test))
    return _plan_cost(run.model, config.executor, n, Request(forces=True), kind="evaluation", steps=1,
                      qpu_time=qpu_time or QpuTimeModel())


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


def check_evaluation_budget(config: EvaluateConfig, max_qpu_seconds: float, *,
                            qpu_time: QpuTimeModel | None = None) -> RunCost:
    """The cost of an evaluation; BudgetError (before anything is submitted) when it exceeds the budget."""
    cost = evaluation_cost(config, qpu_time=qpu_time)
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
