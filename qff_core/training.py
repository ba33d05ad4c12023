"""Training: Adam on minibatches of a reference dataset, checkpointed, resumable bit for bit.

The loss is ``qff_core.loss.Loss`` with sigma_E the training energies' standard deviation and
sigma_F the RMS training force component, so both terms are dimensionless. The optimiser sees
the output scale and offset in those units too (``s = sigma_E * s'``, ``e0 = mu_E + sigma_E *
e0'``): one learning rate fits all parameters although the absolute energies are ~1e3 eV.

Every executor trains through the same loop: it supplies the step (``Executor.training_step``:
one jitted program on the exact simulator, plan-run-reassemble on a quantum backend), the
loop supplies minibatches (a pure function of seed and step), validation, early stopping and
checkpoints (``qff_core.run``). Initialisation and validation run on the exact simulator
(classical, free: they pick the best parameters).
"""

from __future__ import annotations

import logging
import math
import shlex
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from qff_core.errors import ExecutionError, InputError, Interrupted, TransientError
from qff_core.execution import executor_spec
from qff_core.interrupts import deferred_interrupts, raise_if_interrupted
from qff_core.loss import Loss
from qff_core.metrics import error_metrics
from qff_core.models import init_parameters
from qff_core.run import Run, Split, TrainConfig, TrainingData, TrainingError, create_run, open_run
from qff_core.run.directory import update_resumable_settings, verify_samples
from qff_core.run.state import HISTORY_KEYS, VAL_KEYS, TrainState, state_from_checkpoint, state_to_checkpoint
from qff_core.store.checkpoint import latest_checkpoint, read_checkpoint, write_checkpoint
from qff_core.store.locks import holder_lock
from qff_core.store.paths import check_writable_dir

if TYPE_CHECKING:
    from qff_core.distributed import ClusterConfig
    from qff_core.execution.base import Executor
    from qff_core.execution.exact import ExactSimulator

logger = logging.getLogger(__name__)

JOURNAL = "jobs.json"
"""The job journal's file name inside ``checkpoints/``: remote job ids of every step, for re-attaching."""

ProgressFn = Callable[[dict], None]


def run_loss(run: Run) -> Loss:
    """The run's loss: its weights, with the training set's spreads as scales."""
    cfg, norm = run.config, run.norm
    return Loss(cfg.energy_weight, cfg.force_weight, norm.energy_std_ev, norm.force_rms_ev_per_a)


def learning_rate_schedule(config: TrainConfig) -> Callable:
    """The optax schedule of the run: from ``learning_rate`` to ``final_learning_rate`` over ``steps``."""
    import optax

    lr, final, steps = config.learning_rate, config.final_learning_rate, config.steps
    if config.schedule == "exponential":
        return optax.exponential_decay(lr, transition_steps=steps, decay_rate=final / lr)
    if config.schedule == "cosine":
        return optax.cosine_decay_schedule(lr, decay_steps=steps, alpha=final / lr)
    return optax.constant_schedule(lr)


def batch_indices(seed: int, step: int, n_train: int, batch_size: int) -> np.ndarray:
    """Positions (into the training set) of the minibatch of ``step``: epochs of seeded permutations."""
    b = min(batch_size, n_train)
    per_epoch = n_train // b
    epoch, k = divmod(step, per_epoch)
    perm = np.random.default_rng([seed, epoch]).permutation(n_train)
    return perm[k * b:(k + 1) * b]


def format_progress(p: dict) -> str:
    """One line for a progress report of ``train``: step, loss, validation errors, speed, ETA."""
    val = ""
    if p.get("val_forces_mae_kcal_mol_a") is not None:
        val = (f", val E MAE {p['val_energy_mae_kcal_mol']:.3f} kcal/mol, "
               f"F MAE {p['val_forces_mae_kcal_mol_a']:.2f} kcal/mol/A")
    return (f"step {p['step']}/{p['steps']}, loss {p['loss']:.4g}, lr {p['learning_rate']:.1e}{val} "
            f"({p['seconds_per_step'] * 1e3:.0f} ms/step, ETA {p['eta_s']:.0f} s)")


def initial_parameters(run: Run, sim: ExactSimulator, train_data: TrainingData) -> np.ndarray:
    """Optimiser parameters at step 0: the builder's initialisation, with s = sigma_E and e0 so that the
    mean prediction on (up to 256) training geometries is the training mean."""
    theta = init_parameters(run.model, seed=run.config.seed, strategy=run.config.init)
    probe = train_data.positions_a[: min(len(train_data.positions_a), 256)]
    expectation, _ = sim.evaluate(theta, probe)  # s = 1, e0 = 0: the bare expectation value
    opt = theta.copy()
    opt[run.model.scale] = 1.0
    opt[run.model.offset] = -float(np.mean(expectation))
    return opt


def warm_start(run: Run) -> np.ndarray:
    """Optimiser parameters at the best parameters of the run ``run.config.init_from`` (same model)."""
    source = open_run(run.config.init_from)
    if source.model.summary() != run.model.summary():
        raise InputError(f"--init-from {run.config.init_from} holds another model ({source.model.kind}, "
                         f"{source.model.n_parameters} parameters); a warm start needs the same one")
    theta, _ = source.final_parameters()
    pmap = run.parameter_map
    return (np.asarray(theta) - pmap.shift) / pmap.multiplier


def _differences(old: dict, new: dict, prefix: str = "") -> list[tuple[str, object, object]]:
    """(dotted key, old value, new value) of every setting that differs, nested sections followed."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out.extend(_differences(a, b, f"{prefix}{key}."))
        elif a != b:
            out.append((f"{prefix}{key}", a, b))
    return out


def _open_or_create(run_dir: Path, config: TrainConfig, resume: bool, split: Split | None = None) -> Run:
    """The run in ``run_dir`` (checked against ``config``) with ``resume``, else a new one (on ``split``)."""
    if not (run_dir / "run.json").exists():
        return create_run(run_dir, config, split=split)
    if not resume:
        raise TrainingError(f"{run_dir} already holds a run; pass --resume to continue it or choose a new --run-dir")
    run = open_run(run_dir)
    if run.config.fingerprint() != config.fingerprint():
        changed = "; ".join(f"{k}: {was!r} in the run, {now!r} now"
                            for k, was, now in _differences(run.config.fingerprint(), config.fingerprint()))
        raise TrainingError(f"--resume with different settings than the run in {run_dir} ({changed}); resume with "
                            "the original settings or start a new --run-dir")
    if Path(config.dataset).resolve() != Path(run.config.dataset).resolve():  # the same samples, elsewhere?
        from qff_core.store.dataset import Dataset

        verify_samples(Dataset.open(config.dataset), run.split, run.info["dataset"].get("samples_checksum"), run_dir)
        run = Run(run.path, run.config.model_copy(update={"dataset": str(Path(config.dataset).resolve())}),
                  run.model, run.split, run.norm, run.info)
    if config.steps != run.config.steps:
        raise TrainingError(f"the run in {run_dir} was planned for {run.config.steps} steps (its learning-rate "
                            f"schedule depends on it); resume with --steps {run.config.steps}")
    run, changed = update_resumable_settings(run, config)
    if changed:
        logger.warning(f"resuming {run_dir} with " + ", ".join(f"{k} {now} (was {was})"
                                                               for k, (was, now) in changed.items()))
    return run


def _initial_state(run: Run, sim: ExactSimulator, optimiser, train_data: TrainingData) -> TrainState:
    """The state of the latest checkpoint, or step 0."""
    import jax
    import jax.numpy as jnp

    ckpt_path = latest_checkpoint(run.checkpoint_dir)
    if ckpt_path is not None:
        return state_from_checkpoint(read_checkpoint(ckpt_path))
    opt0 = initial_parameters(run, sim, train_data) if run.config.init_from is None else warm_start(run)
    leaves = [np.asarray(x) for x in jax.tree_util.tree_leaves(optimiser.init(jnp.asarray(opt0)))]
    return TrainState(step=0, opt_params=opt0, opt_state_leaves=leaves, best_params=run.parameter_map.theta(opt0),
                      best_val_loss=math.inf, best_step=0, evals_since_best=0,
                      history={k: [] for k in (*HISTORY_KEYS, *VAL_KEYS)})


def train(run_dir: str | Path, config: TrainConfig, *, resume: bool = False, progress: ProgressFn | None = None,
          stop_after: int | None = None, cluster: ClusterConfig | None = None, executor: Executor | None = None,
          token: str | None = None, wait: bool = False, split: Split | None = None) -> dict:
    """Train (or, with ``resume``, continue) the run in ``run_dir``; returns a summary.

    ``split``: the dataset indices of a new run (default: the seeded split of ``config``).
    ``stop_after``: return after this many steps in this call (checkpointing first), to split a
    long run into pieces (Prefect tasks, batch jobs with a wall-time limit). ``cluster``: a
    Dask cluster for executors that fan out on one. ``executor``: one already built for this
    run's model, used instead of the one ``config.executor`` describes (callers that hold their
    own Session; tests). ``token``: an API key read from a secret store, handed to the backend
    and never stored. With ``config.max_qpu_seconds``, a run whose remaining steps would take
    longer on a QPU is refused before anything is written (``BudgetError``); so are credentials the
    executor cannot use. The run directory is locked (``<run_dir>.lock``): a second ``train`` on it
    fails with ``BusyError`` naming the holder, or with ``wait`` queues behind it. Interrupted
    (Ctrl-C), it checkpoints the steps done and raises ``Interrupted`` saying how to resume.
    """
    run_dir = Path(run_dir)
    if config.max_qpu_seconds is not None:
        from qff_core.cost import check_qpu_budget

        check_qpu_budget(config, config.max_qpu_seconds, run_dir=run_dir if resume else None)
    if executor is None:
        config.executor.spec.preflight(config.executor, token)  # credentials, before anything is written
    check_writable_dir(run_dir, "--run-dir")
    with holder_lock(run_dir.with_name(run_dir.name + ".lock"), f"the run in {run_dir}", wait=wait,
                     notice=logger.warning):
        return _train_locked(run_dir, config, resume=resume, progress=progress, stop_after=stop_after,
                             cluster=cluster, executor=executor, token=token, split=split)


def _train_locked(run_dir: Path, config: TrainConfig, *, resume: bool, progress: ProgressFn | None,
                  stop_after: int | None, cluster: ClusterConfig | None, executor: Executor | None,
                  token: str | None, split: Split | None) -> dict:
    """``train`` with the run directory's lock held."""
    import optax

    from qff_core.execution import open_executor
    from qff_core.execution.exact import compile_exact
    from qff_core.execution.shift.journal import JobJournal

    run = _open_or_create(run_dir, config, resume, split)
    dataset = run.dataset()
    train_data = run.training_data(dataset)  # with the run's label noise; validation stays clean
    val_data = TrainingData.take(dataset, run.split.val) if run.split.val.size else None
    sim = compile_exact(run.model)
    optimiser = optax.adam(learning_rate_schedule(run.config))
    state = _initial_state(run, sim, optimiser, train_data)
    journal = JobJournal(run.checkpoint_dir / JOURNAL)
    with ExitStack() as stack:
        if executor is None:
            executor = stack.enter_context(open_executor(run.config.executor, run.model, cluster=cluster,
                                                         journal=journal, seed=run.config.seed, token=token))
        else:
            executor = executor.with_journal(journal)
        step_fn = executor.training_step(run_loss(run), optimiser, run.parameter_map, train_data)
        loop = _Loop(run, optimiser, step_fn, sim, val_data, progress, executor)
        return loop.execute(state, stop_after)


def _roll_back(state: TrainState, step: int) -> None:
    """The record of ``state`` as it was after ``step`` steps (an interrupt may land between its updates: a step
    recorded in some of the history's lists and not yet in others is dropped from all, so they stay aligned)."""
    state.step = step
    for keys, steps in ((HISTORY_KEYS, "step"), (VAL_KEYS, "val_step")):
        keep = min(sum(1 for s in state.history[steps] if s <= step), *(len(state.history[k]) for k in keys))
        for k in keys:
            del state.history[k][keep:]


def validate(sim: ExactSimulator, run: Run, opt_params: np.ndarray, val: TrainingData) -> tuple[float, dict]:
    """Validation loss (as in training) and error metrics at ``opt_params``."""
    e, f = sim.evaluate(run.parameter_map.theta(opt_params), val.positions_a)
    loss = run_loss(run).value(e, f, val.energies_ev, val.forces_ev_per_a)
    return float(loss), error_metrics(e, val.energies_ev, f, val.forces_ev_per_a)


@dataclass
class _Loop:
    """Steps from a state to the budget, an early stop or ``stop_after``, with validation and checkpoints.

    A step that fails for good on a remote executor checkpoints the steps done and raises
    ExecutionError; submitted jobs stay in the job journal for the resumed run.
    """

    run: Run
    optimiser: object
    step_fn: Callable
    sim: ExactSimulator
    val_data: TrainingData | None
    progress: ProgressFn | None
    executor: Executor
    t_start: float = field(default_factory=time.perf_counter)

    def execute(self, state: TrainState, stop_after: int | None) -> dict:
        import jax
        import jax.numpy as jnp

        run, cfg = self.run, self.run.config
        treedef = jax.tree_util.tree_structure(self.optimiser.init(jnp.zeros(run.model.n_parameters)))
        resumed_from = state.step
        # (parameters, optimiser state, step) replaced in one assignment: an interrupt between the statements of
        # a step never separates the parameters from the step they belong to.
        done = (jnp.asarray(state.opt_params),
                jax.tree_util.tree_unflatten(treedef, [jnp.asarray(x) for x in state.opt_state_leaves]), state.step)
        schedule = learning_rate_schedule(cfg)
        limit = cfg.steps if stop_after is None else min(cfg.steps, state.step + stop_after)

        def checkpoint() -> None:
            state.opt_params = np.asarray(done[0])
            state.opt_state_leaves = [np.asarray(x) for x in jax.tree_util.tree_leaves(done[1])]
            ckpt = state_to_checkpoint(state, run)
            ckpt.attrs["executor"] = self.executor.describe()
            write_checkpoint(run.checkpoint_dir, ckpt, keep=cfg.keep_checkpoints)

        try:
            while state.step < limit and state.stop_reason is None:
                raise_if_interrupted()  # a Ctrl-C that a finaliser swallowed still stops the run here
                idx = jnp.asarray(batch_indices(cfg.seed, state.step, run.split.train.size, cfg.batch_size))
                lr = float(schedule(state.step))
                try:
                    new_params, new_state, loss = self.step_fn(done[0], done[1], idx, state.step)
                except Exception as exc:
                    if executor_spec(self.executor.name).exact:
                        raise  # a bug of the exact simulator: nothing was submitted, nothing to re-attach
                    checkpoint()  # the steps done so far; the failed one changed nothing
                    raise self._failure(state.step, exc) from exc
                # A step's record (history, validation, best parameters) is written whole: Ctrl-C here is acted
                # on at the next step, else a resumed run would lack the record of the step it resumes from.
                with deferred_interrupts():
                    done = (new_params, new_state, state.step + 1)
                    state.step = done[2]
                    state.history["step"].append(state.step)
                    state.history["loss"].append(float(loss))
                    state.history["learning_rate"].append(lr)
                    if not np.isfinite(float(loss)):
                        state.stop_reason = "non-finite loss"
                    if state.step % cfg.eval_every == 0 or state.step == cfg.steps:
                        self._validate(state, np.asarray(done[0]), float(loss), lr, resumed_from, limit)
                if state.step % cfg.checkpoint_every == 0 and state.step < limit:
                    checkpoint()
        except KeyboardInterrupt:
            _roll_back(state, done[2])
            checkpoint()
            raise Interrupted(f"kept {state.step} of {cfg.steps} steps in {run.path} (checkpoint at step "
                              f"{state.step}); continue with `qff train --resume --run-dir "
                              f"{shlex.quote(str(run.path))}`") from None
        if state.stop_reason is None and state.step >= cfg.steps:
            state.stop_reason = "completed"
        checkpoint()
        return self._summary(state, resumed_from)

    def _failure(self, step: int, exc: Exception) -> ExecutionError:
        again = "retries ran out; " if isinstance(exc, TransientError) else ""
        run = self.run
        return ExecutionError(
            f"step {step + 1} failed on the {self.executor.name} executor ({again}{type(exc).__name__}: {exc}). "
            f"The run is checkpointed at step {step} in {run.checkpoint_dir}; fix the cause, then continue "
            f"with `qff train --resume --run-dir {shlex.quote(str(run.path))}` (jobs already submitted are "
            "re-attached, not paid again)")

    def _validate(self, state: TrainState, params_now: np.ndarray, loss: float, lr: float, resumed_from: int,
                  limit: int) -> None:
        """Validation at ``params_now``: history, best parameters, early stopping, a progress report."""
        cfg = self.run.config
        if self.val_data is not None:
            val_loss, metrics = validate(self.sim, self.run, params_now, self.val_data)
        else:  # no validation split: the last parameters are the best we know
            val_loss, metrics = -float(state.step), {}
        state.history["val_step"].append(state.step)
        state.history["val_loss"].append(val_loss if self.val_data is not None else math.nan)
        state.history["val_energy_mae_kcal_mol"].append(metrics.get("energy_mae_kcal_mol", math.nan))
        state.history["val_forces_mae_kcal_mol_a"].append(metrics.get("forces_mae_kcal_mol_a", math.nan))
        if val_loss < state.best_val_loss:
            state.best_val_loss, state.best_step, state.evals_since_best = val_loss, state.step, 0
            state.best_params = self.run.parameter_map.theta(params_now)
        else:
            state.evals_since_best += 1
            if cfg.patience is not None and state.evals_since_best >= cfg.patience:
                state.stop_reason = f"early stop: no validation improvement in {cfg.patience} evaluations"
        if self.progress is not None:
            elapsed = time.perf_counter() - self.t_start
            per_step = elapsed / max(state.step - resumed_from, 1)
            self.progress({"step": state.step, "steps": cfg.steps, "loss": loss, "learning_rate": lr,
                           "val_energy_mae_kcal_mol": metrics.get("energy_mae_kcal_mol"),
                           "val_forces_mae_kcal_mol_a": metrics.get("forces_mae_kcal_mol_a"),
                           "seconds_per_step": per_step, "eta_s": per_step * (limit - state.step)})

    def _summary(self, state: TrainState, resumed_from: int) -> dict:
        run, cfg = self.run, self.run.config
        summary = {
            "run_dir": str(run.path),
            "step": state.step,
            "steps": cfg.steps,
            "resumed_from": resumed_from,
            "stop_reason": state.stop_reason,
            "best_step": state.best_step,
            "best_val_loss": state.best_val_loss if self.val_data is not None else None,
            "final_loss": state.history["loss"][-1] if state.history["loss"] else None,
            "wall_time_s": time.perf_counter() - self.t_start,
            "split": run.split.counts(),
            "n_parameters": run.model.n_parameters,
            "executor": self.executor.describe(),
        }
        return summary


__all__ = ["JOURNAL", "batch_indices", "format_progress", "initial_parameters", "learning_rate_schedule", "run_loss",
           "train", "validate"]
