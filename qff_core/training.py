"""Training: Adam on minibatches of a reference dataset, checkpointed, resumable bit for bit.

The loss is ``w_E * mean(((E - E_ref) / sigma_E)^2) + w_F * mean(((F - F_ref) / sigma_F)^2)``
with sigma_E the training energies' standard deviation and sigma_F the RMS training force
component, so both terms are dimensionless. The optimiser sees the output scale and offset in
those units too (``s = sigma_E * s'``, ``e0 = mu_E + sigma_E * e0'``): one learning rate fits
all parameters although the absolute energies are ~1e3 eV.

A run directory holds ``run.json`` (configuration, model, data, normalisation), ``split.zarr``
(dataset indices of the train/validation/test samples) and ``checkpoints/`` (Zarr, atomic).
Minibatches are a pure function of (seed, step), and the whole state (parameters, optimiser
state, best-so-far, metrics history) is in each checkpoint: a resumed run continues exactly as
an uninterrupted one would.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from qff_core.errors import ExecutionError, InputError, QffError, TransientError
from qff_core.execution.settings import ExecutorSettings, open_executor
from qff_core.models import InitStrategy, ModelConfig, build_model, init_parameters
from qff_core.models.fragment import EXACT_ONLY, AnyModel
from qff_core.store.checkpoint import Checkpoint, latest_checkpoint, read_checkpoint, write_checkpoint
from qff_core.store.dataset import DONE, Dataset
from qff_core.units import EV_KCAL_PER_MOL

if TYPE_CHECKING:
    from qff_core.execution.journal import JobJournal

RUN_SCHEMA = 1


class TrainingError(QffError):
    """A run cannot start or continue as asked (existing run without --resume, changed settings)."""


class TrainConfig(BaseModel):
    """Everything that determines a training run (``qff train`` flags or YAML)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset: str
    molecule: str | None = Field(None, description="molecule spec (built-in or file); default: the dataset's")
    model: ModelConfig = Field(default_factory=ModelConfig)
    executor: ExecutorSettings = Field(default_factory=ExecutorSettings,
                                       description="where circuits run: exact, aer or ibm, with their options")
    steps: int = Field(2000, ge=1, description="Adam steps in total (a resumed run continues to this)")
    batch_size: int = Field(128, ge=1)
    learning_rate: float = Field(1e-2, gt=0)
    final_learning_rate: float = Field(1e-4, gt=0)
    schedule: Literal["exponential", "cosine", "constant"] = "exponential"
    energy_weight: float = Field(1.0, ge=0)
    force_weight: float = Field(10.0, ge=0)
    test_size: float = Field(0.2, ge=0, description="fraction (< 1) or number of samples held out for testing")
    val_size: float = Field(0.1, ge=0, description="fraction of the rest (< 1) or number, for early stopping")
    n_train: int | None = Field(None, ge=1, description="use only the first n_train training samples")
    seed: int = 0
    init: InitStrategy = "near_identity"
    eval_every: int = Field(250, ge=1, description="steps between validation evaluations")
    checkpoint_every: int = Field(250, ge=1)
    patience: int | None = Field(None, ge=1, description="validations without improvement before stopping")
    keep_checkpoints: int = Field(3, ge=1)

    def fingerprint(self) -> dict:
        """The settings a resumed run must share with the original (all but the step budget)."""
        d = self.model_dump()
        for k in ("steps", "patience", "keep_checkpoints", "checkpoint_every", "eval_every"):
            d.pop(k)
        d["executor"] = self.executor.fingerprint()
        return d

    @model_validator(mode="after")
    def _fragment_models_run_exactly(self) -> TrainConfig:
        if self.model.model == "fragment" and self.executor.name != "exact":
            raise ValueError(EXACT_ONLY)
        return self


@dataclass(frozen=True)
class Split:
    """Dataset indices of the training, validation and test samples."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray

    def counts(self) -> dict[str, int]:
        """Samples per part."""
        return {"train": int(self.train.size), "val": int(self.val.size), "test": int(self.test.size)}


def _count(size: float, n: int) -> int:
    return round(size * n) if size < 1 else int(size)


def make_split(status: np.ndarray, config: TrainConfig) -> Split:
    """A seeded split of the finished samples; nested in ``n_train`` (learning curves share test and val)."""
    done = np.flatnonzero(status == DONE)
    if done.size < 3:
        raise InputError(f"the dataset has {done.size} finished samples; training needs at least 3")
    order = np.random.default_rng([config.seed, 7919]).permutation(done)
    n_test = _count(config.test_size, done.size)
    n_val = _count(config.val_size, done.size - n_test)
    if n_test + n_val >= done.size:
        raise InputError(f"test ({n_test}) and validation ({n_val}) samples leave nothing of the "
                         f"{done.size} finished samples to train on; lower --test-size/--val-size")
    test, val, train = order[:n_test], order[n_test:n_test + n_val], order[n_test + n_val:]
    if config.n_train is not None:
        if config.n_train > train.size:
            raise InputError(f"--n-train {config.n_train} exceeds the {train.size} samples left for training")
        train = train[:config.n_train]
    return Split(train=np.sort(train), val=np.sort(val), test=np.sort(test))


@dataclass(frozen=True)
class Normalisation:
    """Training-set statistics that make the loss dimensionless (eV, eV/Angstrom)."""

    energy_mean_ev: float
    energy_std_ev: float
    force_rms_ev_per_a: float

    @classmethod
    def from_data(cls, energies_ev: np.ndarray, forces_ev_per_a: np.ndarray) -> Normalisation:
        """Statistics of a training set; a single sample or constant energies get unit spread."""
        std = float(np.std(energies_ev))
        rms = float(np.sqrt(np.mean(forces_ev_per_a**2)))
        return cls(float(np.mean(energies_ev)), std if std > 1e-12 else 1.0, rms if rms > 1e-12 else 1.0)


def parameter_map(model: AnyModel, norm: Normalisation) -> tuple[np.ndarray, np.ndarray]:
    """(multiplier, shift) with theta_model = multiplier * theta_opt + shift.

    ``model.scale`` may be an index array (a fragment model has one s per sub-model).
    """
    mult = np.ones(model.n_parameters)
    shift = np.zeros(model.n_parameters)
    mult[model.scale] = mult[model.offset] = norm.energy_std_ev
    shift[model.offset] = norm.energy_mean_ev
    return mult, shift


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


@dataclass(frozen=True)
class TrainingData:
    """Positions (Angstrom), energies (eV) and forces (eV/Angstrom) of one part of the split."""

    positions_a: np.ndarray
    energies_ev: np.ndarray
    forces_ev_per_a: np.ndarray

    @classmethod
    def take(cls, dataset: Dataset, indices: np.ndarray) -> TrainingData:
        """The samples ``indices`` of ``dataset``."""
        g = dataset.group
        idx = np.asarray(indices)
        return cls(np.asarray(g["positions"].oindex[idx]), np.asarray(g["energies"].oindex[idx]),
                   np.asarray(g["forces"].oindex[idx]))


def error_metrics(e_pred: np.ndarray, e_ref: np.ndarray, f_pred: np.ndarray, f_ref: np.ndarray) -> dict[str, float]:
    """MAE/RMSE of energies (kcal/mol, meV) and force components (kcal/mol/A, meV/A), and the
    mean norm of the per-atom force error vector (kcal/mol/A; unchanged by rotations)."""
    de = (np.asarray(e_pred) - np.asarray(e_ref))
    df = (np.asarray(f_pred) - np.asarray(f_ref))
    out = {
        "energy_mae_kcal_mol": float(np.mean(np.abs(de))) * EV_KCAL_PER_MOL,
        "energy_rmse_kcal_mol": float(np.sqrt(np.mean(de**2))) * EV_KCAL_PER_MOL,
        "forces_mae_kcal_mol_a": float(np.mean(np.abs(df))) * EV_KCAL_PER_MOL,
        "forces_rmse_kcal_mol_a": float(np.sqrt(np.mean(df**2))) * EV_KCAL_PER_MOL,
        "forces_err_norm_kcal_mol_a": float(np.mean(np.linalg.norm(df, axis=-1))) * EV_KCAL_PER_MOL,
    }
    out.update({
        "energy_mae_mev": out["energy_mae_kcal_mol"] / EV_KCAL_PER_MOL * 1e3,
        "energy_rmse_mev": out["energy_rmse_kcal_mol"] / EV_KCAL_PER_MOL * 1e3,
        "forces_mae_mev_a": out["forces_mae_kcal_mol_a"] / EV_KCAL_PER_MOL * 1e3,
        "forces_rmse_mev_a": out["forces_rmse_kcal_mol_a"] / EV_KCAL_PER_MOL * 1e3,
        "n_geometries": int(np.asarray(e_ref).size),
    })
    return out


# ---------------------------------------------------------------------------- the run directory


@dataclass(frozen=True)
class Run:
    """A run directory: its configuration, model, split and normalisation."""

    path: Path
    config: TrainConfig
    model: AnyModel
    split: Split
    norm: Normalisation
    info: dict

    @property
    def checkpoint_dir(self) -> Path:
        """Where the checkpoints live."""
        return self.path / "checkpoints"

    def dataset(self) -> Dataset:
        """The run's dataset."""
        return Dataset.open(self.config.dataset)

    def final_parameters(self) -> tuple[np.ndarray, Checkpoint]:
        """Model parameters to use: the best on validation (or the last, without validation)."""
        ckpt_path = latest_checkpoint(self.checkpoint_dir)
        if ckpt_path is None:
            raise InputError(f"{self.path} has no checkpoint yet; train it first (`qff train --run-dir {self.path}`)")
        ckpt = read_checkpoint(ckpt_path)
        return np.asarray(ckpt.arrays["best_params"]), ckpt


def _molecule_of(dataset: Dataset, spec: str | None = None):
    """The run's molecule: ``spec`` if given, else the dataset's (built-in) one; checked against the data."""
    from qff_core.molecules import load_molecule

    stored = dataset.group.attrs["molecule"]
    molecule = load_molecule(spec or stored["name"])
    if list(molecule.symbols) != list(stored["symbols"]):
        raise InputError(f"molecule {molecule.name} has atoms {' '.join(molecule.symbols)} but the dataset holds "
                         f"{' '.join(stored['symbols'])}; pass the dataset's molecule with --molecule")
    return molecule


def open_run(path: str | Path) -> Run:
    """An existing run directory (written by ``qff train``)."""
    import zarr

    path = Path(path)
    try:
        info = json.loads((path / "run.json").read_text())
    except FileNotFoundError:
        raise InputError(f"{path} is not a qff run directory (no run.json); create one with `qff train`") from None
    config = TrainConfig.model_validate(info["config"])
    dataset = Dataset.open(config.dataset)
    model = build_model(_molecule_of(dataset, config.molecule), config.model)
    g = zarr.open_group(str(path / "split.zarr"), mode="r")
    split = Split(train=g["train"][:], val=g["val"][:], test=g["test"][:])
    return Run(path, config, model, split, Normalisation(**info["normalisation"]), info)


def create_run(path: str | Path, config: TrainConfig) -> Run:
    """Write ``run.json`` and ``split.zarr`` for a new run (atomically, so a killed start leaves none)."""
    import zarr

    from qff_core.store.catalog import dataset_checksum

    path = Path(path)
    dataset = Dataset.open(config.dataset)
    molecule = _molecule_of(dataset, config.molecule)
    model = build_model(molecule, config.model)
    split = make_split(dataset.status(), config)
    train = TrainingData.take(dataset, split.train)
    norm = Normalisation.from_data(train.energies_ev, train.forces_ev_per_a)
    path.mkdir(parents=True, exist_ok=True)
    g = zarr.open_group(str(path / "split.zarr"), mode="w", zarr_format=3)
    for name, idx in (("train", split.train), ("val", split.val), ("test", split.test)):
        g.create_array(name, data=np.asarray(idx, dtype=np.int64))
    info = {
        "schema_version": RUN_SCHEMA,
        "kind": "qff-training-run",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "config": config.model_dump(),
        "model": model.summary(),
        "dataset": {"path": str(Path(config.dataset).resolve()), "checksum": dataset_checksum(dataset),
                    "molecule": molecule.name, "level_of_theory": dataset.group.attrs.get("level_of_theory")},
        "split": split.counts(),
        "normalisation": norm.__dict__,
    }
    tmp = path / "run.json.tmp"
    tmp.write_text(json.dumps(info, indent=2))
    os.replace(tmp, path / "run.json")
    return Run(path, config, model, split, norm, info)


# ---------------------------------------------------------------------------- the loop


@dataclass
class TrainState:
    """What a checkpoint holds."""

    step: int
    opt_params: np.ndarray
    opt_state_leaves: list[np.ndarray]
    best_params: np.ndarray
    best_val_loss: float
    best_step: int
    evals_since_best: int
    history: dict[str, list]
    stop_reason: str | None = None


HISTORY_KEYS = ("step", "loss", "learning_rate")
VAL_KEYS = ("val_step", "val_loss", "val_energy_mae_kcal_mol", "val_forces_mae_kcal_mol_a")


def _exact_functions(run: Run, train: TrainingData):
    """Jitted (step, validation loss) for the exact executor; the batch is gathered on the device."""
    import jax
    import jax.numpy as jnp
    import optax

    from qff_core.execution.exact import compile_exact

    sim = compile_exact(run.model)
    cfg, norm = run.config, run.norm
    mult, shift = (jnp.asarray(a) for a in parameter_map(run.model, norm))
    optimiser = optax.adam(learning_rate_schedule(cfg))
    X, E, F = (jnp.asarray(a) for a in (train.positions_a, train.energies_ev, train.forces_ev_per_a))
    w_e, w_f = cfg.energy_weight, cfg.force_weight
    trainable = jnp.asarray(run.model.trainable_mask(), dtype=jnp.float64)  # frozen parameters get no update

    def loss_fn(opt_params, pos, e_ref, f_ref):
        theta = opt_params * mult + shift
        if w_f > 0:
            e, f = sim.energies_forces_fn(theta, pos)
            force_term = jnp.mean(((f - f_ref) / norm.force_rms_ev_per_a) ** 2)
        else:
            e, force_term = sim.batch_energies_fn(theta, pos), 0.0
        return w_e * jnp.mean(((e - e_ref) / norm.energy_std_ev) ** 2) + w_f * force_term

    @jax.jit
    def step(opt_params, opt_state, idx):
        value, grad = jax.value_and_grad(loss_fn)(opt_params, X[idx], E[idx], F[idx])
        grad = grad * trainable
        updates, opt_state = optimiser.update(grad, opt_state, opt_params)
        return optax.apply_updates(opt_params, updates), opt_state, value

    return sim, optimiser, step


def _validate(sim, run: Run, opt_params: np.ndarray, val: TrainingData) -> tuple[float, dict]:
    """Validation loss (as in training) and error metrics at ``opt_params``."""
    mult, shift = parameter_map(run.model, run.norm)
    e, f = sim.evaluate(opt_params * mult + shift, val.positions_a)
    cfg, norm = run.config, run.norm
    loss = (cfg.energy_weight * np.mean(((e - val.energies_ev) / norm.energy_std_ev) ** 2)
            + cfg.force_weight * np.mean(((f - val.forces_ev_per_a) / norm.force_rms_ev_per_a) ** 2))
    return float(loss), error_metrics(e, val.energies_ev, f, val.forces_ev_per_a)


def _initial_opt_params(run: Run, sim, train: TrainingData) -> np.ndarray:
    """Builder initialisation, with s = sigma_E and e0 so the mean prediction is the training mean."""
    theta = init_parameters(run.model, seed=run.config.seed, strategy=run.config.init)
    probe = train.positions_a[: min(len(train.positions_a), 256)]
    expectation, _ = sim.evaluate(theta, probe)  # s = 1, e0 = 0: the bare expectation value
    opt = theta.copy()
    opt[run.model.scale] = 1.0
    opt[run.model.offset] = -float(np.mean(expectation))
    return opt


def _state_to_checkpoint(state: TrainState, run: Run) -> Checkpoint:
    mult, shift = parameter_map(run.model, run.norm)
    arrays = {
        "params": state.opt_params * mult + shift,
        "opt_params": state.opt_params,
        "best_params": state.best_params,
        **{f"opt_state/{i:03d}": np.asarray(leaf) for i, leaf in enumerate(state.opt_state_leaves)},
        **{f"history/{k}": np.asarray(v) for k, v in state.history.items()},
    }
    b = min(run.config.batch_size, run.split.train.size)
    per_epoch = run.split.train.size // b
    attrs = {
        "rng": {"kind": "numpy-pcg64-per-epoch", "seed": run.config.seed, "epoch": state.step // per_epoch,
                "position_in_epoch": state.step % per_epoch},
        "best": {"val_loss": state.best_val_loss, "step": state.best_step,
                 "evals_since_best": state.evals_since_best},
        "stop_reason": state.stop_reason,
        "config_steps": run.config.steps,
    }
    return Checkpoint(step=state.step, arrays=arrays, attrs=attrs)


def _state_from_checkpoint(ckpt: Checkpoint) -> TrainState:
    a = ckpt.arrays
    leaves = [a[k] for k in sorted(k for k in a if k.startswith("opt_state/"))]
    history = {k.split("/", 1)[1]: a[k].tolist() for k in a if k.startswith("history/")}
    for k in (*HISTORY_KEYS, *VAL_KEYS):
        history.setdefault(k, [])
    best = ckpt.attrs["best"]
    return TrainState(step=ckpt.step, opt_params=a["opt_params"], opt_state_leaves=leaves,
                      best_params=a["best_params"], best_val_loss=float(best["val_loss"]),
                      best_step=int(best["step"]), evals_since_best=int(best["evals_since_best"]),
                      history=history, stop_reason=ckpt.attrs.get("stop_reason"))


ProgressFn = Callable[[dict], None]


def format_progress(p: dict) -> str:
    """One line for a progress report of ``train``: step, loss, validation errors, speed, ETA."""
    val = ""
    if p.get("val_forces_mae_kcal_mol_a") is not None:
        val = (f", val E MAE {p['val_energy_mae_kcal_mol']:.3f} kcal/mol, "
               f"F MAE {p['val_forces_mae_kcal_mol_a']:.2f} kcal/mol/A")
    return (f"step {p['step']}/{p['steps']}, loss {p['loss']:.4g}, lr {p['learning_rate']:.1e}{val} "
            f"({p['seconds_per_step'] * 1e3:.0f} ms/step, ETA {p['eta_s']:.0f} s)")


def _open_or_create(run_dir: Path, config: TrainConfig, resume: bool) -> Run:
    """The run in ``run_dir`` (checked against ``config``) with ``resume``, else a new one."""
    if (run_dir / "run.json").exists():
        if not resume:
            raise TrainingError(f"{run_dir} already holds a run; pass --resume to continue it "
                                "or choose a new --run-dir")
        run = open_run(run_dir)
        if run.config.fingerprint() != config.fingerprint():
            changed = sorted(k for k, v in config.fingerprint().items() if run.config.fingerprint().get(k) != v)
            raise TrainingError(f"--resume with different settings ({', '.join(changed)}) than the run in {run_dir}; "
                                "resume with the original settings or start a new --run-dir")
        if config.steps != run.config.steps:
            raise TrainingError(f"the run in {run_dir} was planned for {run.config.steps} steps (its learning-rate "
                                f"schedule depends on it); resume with --steps {run.config.steps}")
        return run
    return create_run(run_dir, config)


def _initial_state(run: Run, sim, optimiser, train_data: TrainingData) -> TrainState:
    """The state of the latest checkpoint, or step 0."""
    import jax
    import jax.numpy as jnp

    ckpt_path = latest_checkpoint(run.checkpoint_dir)
    if ckpt_path is not None:
        return _state_from_checkpoint(read_checkpoint(ckpt_path))
    mult, shift = parameter_map(run.model, run.norm)
    opt0 = _initial_opt_params(run, sim, train_data)
    return TrainState(step=0, opt_params=opt0,
                      opt_state_leaves=[np.asarray(x) for x in jax.tree_util.tree_leaves(optimiser.init(
                          jnp.asarray(opt0)))],
                      best_params=opt0 * mult + shift, best_val_loss=math.inf, best_step=0, evals_since_best=0,
                      history={k: [] for k in (*HISTORY_KEYS, *VAL_KEYS)})


def train(run_dir: str | Path, config: TrainConfig, *, resume: bool = False,
          progress: ProgressFn | None = None, stop_after: int | None = None, cluster=None, executor=None,
          ibm_token: str | None = None) -> dict:
    """Train (or, with ``resume``, continue) the run in ``run_dir``; returns a summary.

    ``stop_after``: return after this many steps in this call (checkpointing first), to split a
    long run into pieces (Prefect tasks, batch jobs with a wall-time limit). ``cluster``: a
    ``ClusterConfig`` whose Dask workers run the aer executor's circuits. ``executor``: an
    executor already built for this run's model, used instead of the one ``config.executor``
    describes (tests; callers that hold their own Session). ``ibm_token``: an API key read from
    a secret store, handed to IBM Runtime and never stored.
    """
    import optax

    from qff_core.execution.exact import compile_exact
    from qff_core.execution.journal import JobJournal

    run_dir = Path(run_dir)
    if cluster is not None and config.executor.name != "aer":
        raise InputError(f"--cluster fans aer simulations out to Dask; the {config.executor.name} executor does not "
                         "use it: drop --cluster/--workers/--scheduler")
    run = _open_or_create(run_dir, config, resume)
    dataset = run.dataset()
    train_data = TrainingData.take(dataset, run.split.train)
    val_data = TrainingData.take(dataset, run.split.val) if run.split.val.size else None
    if executor is None and run.config.executor.name == "exact":
        sim, optimiser, exact_step = _exact_functions(run, train_data)
        state = _initial_state(run, sim, optimiser, train_data)
        return _loop(run, state, optimiser, lambda p, s, idx, _: exact_step(p, s, idx), sim, val_data, progress,
                     stop_after)
    # Quantum executors: the same loop, minibatches, optimiser and checkpoints; initialisation and
    # validation stay on the exact simulator (classical, free: they pick the best parameters).
    sim = compile_exact(run.model)
    optimiser = optax.adam(learning_rate_schedule(run.config))
    state = _initial_state(run, sim, optimiser, train_data)
    journal = JobJournal(run.checkpoint_dir / JOURNAL)
    with ExitStack() as stack:
        if executor is None:
            client = None
            if cluster is not None:
                from qff_core.distributed import dask_client

                client = stack.enter_context(dask_client(cluster))
            executor = stack.enter_context(open_executor(run.config.executor, run.model, client=client,
                                                         journal=journal, seed=run.config.seed, ibm_token=ibm_token))
        else:
            executor = _with_journal(executor, journal)
        step_fn = _executor_step(run, train_data, optimiser, executor)
        summary = _loop(run, state, optimiser, step_fn, sim, val_data, progress, stop_after, executor=executor,
                        journal=journal)
    return summary


JOURNAL = "jobs.json"
"""The job journal's file name inside ``checkpoints/``: remote job ids of every step, for re-attaching."""


def _with_journal(executor, journal: JobJournal):
    """``executor`` recording its remote jobs in ``journal`` (a parameter-shift executor with a remote
    evaluator and no Dask client); any other executor unchanged."""
    from qff_core.execution.executors import ShiftExecutor

    if (isinstance(executor, ShiftExecutor) and executor.journal is None and executor.client is None
            and hasattr(executor.evaluator, "submit")):
        return replace(executor, journal=journal)
    return executor


def step_seed(seed: int | None, step: int) -> int | None:
    """The shot-noise seed of training step ``step`` (None stays None): a resumed run draws the same shots."""
    return None if seed is None else int(np.random.SeedSequence([seed, step, 1]).generate_state(1)[0])


def _executor_step(run: Run, train: TrainingData, optimiser, executor) -> Callable:
    """A step on any executor: its loss and gradient with respect to theta, chained to the optimised
    parameters (theta = mult * opt + shift), then the optax update."""
    import jax.numpy as jnp
    import optax

    from qff_core.execution.executors import ShiftExecutor

    cfg, norm = run.config, run.norm
    mult, shift = parameter_map(run.model, norm)
    reseed = isinstance(executor, ShiftExecutor) and executor.seed is not None

    def step(opt_params, opt_state, idx, step_number: int):
        idx = np.asarray(idx)
        ex = replace(executor, seed=step_seed(executor.seed, step_number)) if reseed else executor
        loss, grad = ex.loss_and_grad(np.asarray(opt_params) * mult + shift, train.positions_a[idx],
                                      train.energies_ev[idx], train.forces_ev_per_a[idx],
                                      w_energy=cfg.energy_weight, w_forces=cfg.force_weight,
                                      energy_scale_ev=norm.energy_std_ev, force_scale_ev_per_a=norm.force_rms_ev_per_a)
        updates, opt_state = optimiser.update(jnp.asarray(grad * mult), opt_state, opt_params)
        return optax.apply_updates(opt_params, updates), opt_state, loss

    return step


def executor_info(executor, journal: JobJournal | None) -> dict:
    """What the summary and checkpoints say about a quantum executor: name, runtime mode, jobs."""
    if executor is None:
        return {}
    info: dict = {"name": executor.name}
    evaluator = getattr(executor, "evaluator", None)
    if getattr(evaluator, "mode", None) is not None:
        info["runtime_mode"] = type(evaluator.mode).__name__
    if getattr(evaluator, "job_ids", None) is not None:
        info["jobs_submitted"] = len(evaluator.job_ids)
    if journal is not None and Path(journal.path).exists():
        info["job_journal"] = {"file": Path(journal.path).name, "jobs": len(journal.load())}
    return info


def _loop(run: Run, state: TrainState, optimiser, step_fn: Callable, sim, val_data: TrainingData | None,
          progress: ProgressFn | None, stop_after: int | None, *, executor=None,
          journal: JobJournal | None = None) -> dict:
    """Steps from ``state`` to the budget, early stop or ``stop_after``, with validation and checkpoints.

    With an ``executor`` (quantum path), a step that fails for good checkpoints the steps done
    and raises ExecutionError; submitted jobs stay in ``journal`` for the resumed run.
    """
    import jax
    import jax.numpy as jnp

    template = optimiser.init(jnp.zeros(run.model.n_parameters))
    treedef = jax.tree_util.tree_structure(template)
    resumed_from = state.step
    opt_params = jnp.asarray(state.opt_params)
    opt_state = jax.tree_util.tree_unflatten(treedef, [jnp.asarray(x) for x in state.opt_state_leaves])
    schedule = learning_rate_schedule(run.config)
    mult, shift = parameter_map(run.model, run.norm)
    cfg = run.config
    n_train = run.split.train.size
    limit = cfg.steps if stop_after is None else min(cfg.steps, state.step + stop_after)
    t_start = time.perf_counter()

    def checkpoint() -> None:
        state.opt_params = np.asarray(opt_params)
        state.opt_state_leaves = [np.asarray(x) for x in jax.tree_util.tree_leaves(opt_state)]
        ckpt = _state_to_checkpoint(state, run)
        if executor is not None:
            ckpt.attrs["executor"] = executor_info(executor, journal)
        write_checkpoint(run.checkpoint_dir, ckpt, keep=cfg.keep_checkpoints)

    while state.step < limit and state.stop_reason is None:
        idx = jnp.asarray(batch_indices(cfg.seed, state.step, n_train, cfg.batch_size))
        lr = float(schedule(state.step))
        try:
            opt_params, opt_state, loss = step_fn(opt_params, opt_state, idx, state.step)
        except Exception as exc:
            if executor is None:
                raise
            checkpoint()  # the steps done so far; the failed one changed nothing
            again = "retries ran out; " if isinstance(exc, TransientError) else ""
            raise ExecutionError(
                f"step {state.step + 1} failed on the {executor.name} executor ({again}{type(exc).__name__}: {exc}). "
                f"The run is checkpointed at step {state.step} in {run.checkpoint_dir}; fix the cause, then continue "
                f"with `qff train --resume --run-dir {run.path}` (jobs already submitted are re-attached, "
                "not paid again)") from exc
        state.step += 1
        state.history["step"].append(state.step)
        state.history["loss"].append(float(loss))
        state.history["learning_rate"].append(lr)
        if not np.isfinite(float(loss)):
            state.stop_reason = "non-finite loss"
        at_eval = state.step % cfg.eval_every == 0 or state.step == cfg.steps
        if at_eval:
            params_now = np.asarray(opt_params)
            if val_data is not None:
                val_loss, metrics = _validate(sim, run, params_now, val_data)
            else:  # no validation split: the last parameters are the best we know
                val_loss, metrics = -float(state.step), {}
            state.history["val_step"].append(state.step)
            state.history["val_loss"].append(val_loss if val_data is not None else math.nan)
            state.history["val_energy_mae_kcal_mol"].append(metrics.get("energy_mae_kcal_mol", math.nan))
            state.history["val_forces_mae_kcal_mol_a"].append(metrics.get("forces_mae_kcal_mol_a", math.nan))
            if val_loss < state.best_val_loss:
                state.best_val_loss, state.best_step, state.evals_since_best = val_loss, state.step, 0
                state.best_params = params_now * mult + shift
            else:
                state.evals_since_best += 1
                if cfg.patience is not None and state.evals_since_best >= cfg.patience:
                    state.stop_reason = f"early stop: no validation improvement in {cfg.patience} evaluations"
            if progress is not None:
                elapsed = time.perf_counter() - t_start
                done = state.step - resumed_from
                progress({"step": state.step, "steps": cfg.steps, "loss": float(loss), "learning_rate": lr,
                          "val_energy_mae_kcal_mol": metrics.get("energy_mae_kcal_mol"),
                          "val_forces_mae_kcal_mol_a": metrics.get("forces_mae_kcal_mol_a"),
                          "seconds_per_step": elapsed / max(done, 1),
                          "eta_s": elapsed / max(done, 1) * (limit - state.step)})
        if state.step % cfg.checkpoint_every == 0 and state.step < limit:
            checkpoint()
    if state.stop_reason is None and state.step >= cfg.steps:
        state.stop_reason = "completed"
    checkpoint()
    summary = {
        "run_dir": str(run.path),
        "step": state.step,
        "steps": cfg.steps,
        "resumed_from": resumed_from,
        "stop_reason": state.stop_reason,
        "best_step": state.best_step,
        "best_val_loss": state.best_val_loss if val_data is not None else None,
        "final_loss": state.history["loss"][-1] if state.history["loss"] else None,
        "wall_time_s": time.perf_counter() - t_start,
        "split": run.split.counts(),
        "n_parameters": run.model.n_parameters,
    }
    if executor is not None:
        summary["executor"] = executor_info(executor, journal)
    return summary


__all__ = ["Run", "Split", "TrainConfig", "TrainingError", "batch_indices", "create_run", "error_metrics",
           "make_split", "open_run", "train"]
