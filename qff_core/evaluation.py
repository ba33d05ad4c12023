"""Evaluation of a trained run: test errors, the same on transformed test sets, baselines, plots.

The transformed test sets apply one random symmetry operation per geometry to positions and
reference forces together: a proper rotation, a translation, a permutation from the molecule's
group, and the inversion x -> -x. Physics is unchanged by each, so a model that respects the
symmetry scores the same on every set; a model that does not is exposed. Force components
change under rotation, so compare ``forces_err_norm_kcal_mol_a`` (the mean norm of the
per-atom error vector) across sets, or the component MAE on the rotated set.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from qff_core.cost import RunCost, check_evaluation_budget, plan_cost
from qff_core.errors import InputError
from qff_core.execution.config import ExecutorConfig
from qff_core.execution.shift.journal import ChunkResults, JobJournal
from qff_core.metrics import METRIC_KEYS, error_metrics, relative_change
from qff_core.run import Run, TrainingData, open_run
from qff_core.symmetry import permute_atoms, random_rotation

if TYPE_CHECKING:
    from qff_core.distributed import ClusterConfig
    from qff_core.execution.exact import ExactSimulator

logger = logging.getLogger(__name__)

TRANSFORMS = ("rotated", "translated", "permuted", "inverted")

EVALUATION_CHUNKS = "evaluation_chunks"
"""Inside a run directory: the finished chunks of a circuit evaluation that has not completed (a rerun with the same
settings runs only the rest); removed once its evaluation file is written."""


def transformed_sets(run: Run, data: TrainingData, seed: int) -> dict[str, TrainingData]:
    """The test set under a random rotation, translation, permutation and inversion per geometry."""
    rng = np.random.default_rng([seed, 104729])
    X, E, F = data.positions_a, data.energies_ev, data.forces_ev_per_a
    n = len(X)
    R = np.stack([random_rotation(rng) for _ in range(n)])
    shifts = rng.uniform(-5.0, 5.0, (n, 1, 3))
    group = run.model.molecule.group
    perms = [group.random_element(rng) for _ in range(n)]
    return {
        "rotated": TrainingData(np.einsum("nij,naj->nai", R, X), E, np.einsum("nij,naj->nai", R, F)),
        "translated": TrainingData(X + shifts, E, F),
        "permuted": TrainingData(np.stack([permute_atoms(x, p) for x, p in zip(X, perms, strict=True)]), E,
                                 np.stack([permute_atoms(f, p) for f, p in zip(F, perms, strict=True)])),
        "inverted": TrainingData(-X, E, -F),
    }


SetName = Literal["test", "rotated", "translated", "permuted", "inverted"]


class EvaluateConfig(BaseModel):
    """What ``qff evaluate`` computes and where: the ``evaluate:`` section of a config, flags on top.

    On a quantum executor every geometry costs circuits (energies and forces by parameter
    shift), so ``sets`` and ``max_test`` bound the work; ``qff cost`` prices it first.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    run_dir: str = Field(description="the trained run to evaluate")
    executor: ExecutorConfig = Field(default_factory=ExecutorConfig)
    sets: tuple[SetName, ...] = Field(("test", *TRANSFORMS), description="test set and transformed copies to score")
    max_test: int | None = Field(None, ge=1, description="score the first N test geometries only (default: all)")
    seed: int = Field(0, description="seed of the random symmetry operations (and of shot noise, unless the "
                                     "executor sets one)")
    max_qpu_seconds: float | None = Field(None, ge=0, description="refuse to submit when the estimated QPU time "
                                                                  "exceeds this")
    recalibrate: int | None = Field(None, ge=2, description="refit the output scale and offset on this many "
                                                            "training/validation geometries run on the executor")
    energies_only: bool = Field(False, description="score energies alone: on a circuit executor one parameter "
                                                   "binding per geometry instead of one per force shift (157 for "
                                                   "H2O D=6); force metrics are null, a recalibration fits energies")

    @model_validator(mode="after")
    def _sets_hold_the_test_set(self) -> EvaluateConfig:
        if "test" not in self.sets or len(set(self.sets)) != len(self.sets):
            raise ValueError(f"sets must name each set once and include 'test' (the reference of the "
                             f"invariance check); got {list(self.sets)}")
        return self

    @model_validator(mode="after")
    def _recalibration_needs_a_device(self) -> EvaluateConfig:
        noiseless = self.executor.spec.exact or (self.executor.name == "aer" and self.executor.shots is None
                                                  and self.executor.noise_backend is None)
        if self.recalibrate is not None and noiseless:
            raise ValueError("recalibrate refits the readout of a noisy executor; an exact one (the exact simulator, "
                             "aer without shots or noise) needs none")
        return self

    def n_geometries(self, n_test: int) -> int:
        """Geometries run: the (capped) test set once per set, and the calibration geometries."""
        return min(n_test, self.max_test or n_test) * len(self.sets) + (self.recalibrate or 0)


def evaluate_run(run_dir: str | Path, *, seed: int = 0, plots: bool = True, audit: bool = True,
                 krr: bool = False, executor: ExecutorConfig | None = None,
                 sets: tuple[str, ...] | None = None, max_test: int | None = None,
                 cluster: ClusterConfig | None = None, token: str | None = None,
                 max_qpu_seconds: float | None = None, recalibrate: int | None = None,
                 energies_only: bool = False) -> dict:
    """Metrics of the run's best parameters on its test set (and transformed copies).

    ``executor``: where the predictions are computed (default exact; aer and ibm by parameter
    shift, a remote executor inside a Runtime Batch, aer fanned out on ``cluster``). Writes
    ``evaluation.json`` (``evaluation_<executor>.json`` for other executors, which also report
    their deviation from the exact simulator; ``..._first<N>.json`` when ``max_test`` leaves test
    geometries out, so a partial score never replaces the full one) and, with ``plots``, PNG files. With
    ``max_qpu_seconds``, an evaluation estimated to take longer on a QPU is refused before
    anything is submitted (``BudgetError``). ``recalibrate``: refit the output scale and offset on that many
    training/validation geometries run on the executor (``qff_core.recalibration``), and score with them.
    ``energies_only``: no forces (force metrics null; the file name ends in ``_energies``). An earlier evaluation
    file of other settings is kept, renamed with its time (``keep_other_evaluation``).
    """
    from qff_core.execution.exact import compile_exact

    config = EvaluateConfig(run_dir=str(run_dir), executor=executor or ExecutorConfig(),
                            sets=tuple(sets) if sets else ("test", *TRANSFORMS), max_test=max_test, seed=seed,
                            max_qpu_seconds=max_qpu_seconds, recalibrate=recalibrate, energies_only=energies_only)
    config.executor.spec.preflight(config.executor, token)  # credentials, before anything is written
    run = open_run(run_dir)
    if config.max_qpu_seconds is not None:
        check_evaluation_budget(evaluation_cost(config, run), config.max_qpu_seconds)
    theta, ckpt = run.final_parameters()
    test_idx = run.split.test[: config.max_test] if config.max_test else run.split.test
    test = TrainingData.take(run.dataset(), test_idx)
    if test.energies_ev.size == 0:
        raise InputError(f"the run in {run.path} has no test samples (it was trained with --test-size 0)")
    every = {"test": test, **transformed_sets(run, test, seed)}
    sets_ = {name: every[name] for name in config.sets}
    sim = compile_exact(run.model)
    chunks = evaluation_chunks(config, run)
    try:
        predictions, exact, executor_info, recal = _predict(config, run, sim, theta, sets_, cluster=cluster,
                                                            token=token, chunks=chunks)
    except KeyboardInterrupt:
        from qff_core.errors import Interrupted

        kept = chunks.stats["saved"] + chunks.stats["reused"]
        raise Interrupted((f"kept {kept} finished chunks of circuits in {chunks.folder}; run the same qff evaluate "
                           "again: it reuses them and runs the rest") if kept else
                          "no chunk of circuits had finished: nothing was kept; run the same qff evaluate again to "
                          "start over") from None
    summary: dict = {name: error_metrics(e, sets_[name].energies_ev, f, sets_[name].forces_ev_per_a)
                     for name, (e, f) in predictions.items()}
    summary["baselines"] = _baselines(run, sets_, krr)
    summary["invariance"] = {
        name: {"energy_mae_rel_change": relative_change(summary[name]["energy_mae_kcal_mol"],
                                                        summary["test"]["energy_mae_kcal_mol"]),
               "forces_err_norm_rel_change": relative_change(summary[name]["forces_err_norm_kcal_mol_a"],
                                                             summary["test"]["forces_err_norm_kcal_mol_a"])}
        for name in TRANSFORMS if name in sets_
    }
    on_exact = config.executor.spec.exact
    summary["executor"] = executor_info if on_exact else {**config.executor.model_dump(exclude_none=True),
                                                          **executor_info}
    if not on_exact:  # what the executor costs in accuracy: its predictions against the exact ones
        summary["deviation_from_exact"] = error_metrics(*exact)
    if recal is not None:
        summary["recalibration"] = recal
    if audit:
        from qff_core.audit import audit_model

        centred = np.array(theta, dtype=float)
        centred[run.model.offset] = 0.0  # invariance of E - e0: not flattered by a huge constant offset
        summary["audit"] = audit_model(run.model, seed=seed, theta=centred, simulator=sim).max_rel_error
    summary["run"] = {
        "run_dir": str(run.path), "model": run.config.model.model, "molecule": run.model.molecule.name,
        "n_parameters": run.model.n_parameters, "n_qubits": run.model.n_qubits, "depth": run.config.model.depth,
        "split": run.split.counts(), "n_test_scored": len(test_idx), "step": ckpt.step,
        "best_step": ckpt.attrs["best"]["step"], "stop_reason": ckpt.attrs.get("stop_reason"),
        "dataset": run.info["dataset"],
        "label_noise": {"energy_ev": run.config.label_noise_energy_ev,  # training labels only; scored on clean ones
                        "forces_ev_per_a": run.config.label_noise_forces_ev_per_a},
    }
    # A partial evaluation (--max-test) gets its own file, so it never replaces the run's full one.
    partial = len(test_idx) < len(run.split.test)
    suffix = (("" if on_exact else f"_{config.executor.name}") + (f"_first{len(test_idx)}" if partial else "")
              + ("_energies" if config.energies_only else ""))
    summary["settings"] = {"sets": list(config.sets), "seed": config.seed, "krr": krr,
                           "recalibrate": config.recalibrate, "energies_only": config.energies_only,
                           "n_test_scored": len(test_idx), "checkpoint_step": ckpt.step,
                           "executor": json.loads(json.dumps(config.executor.fingerprint(), default=str)),
                           "min_chunks": executor_info.get("min_chunks")}  # set when shots are seeded per job
    out = run.path / f"evaluation{suffix}.json"
    kept = keep_other_evaluation(out, summary["settings"])
    if kept is not None:
        summary["replaced"] = str(kept)
    if plots:
        summary["plots"] = write_plots(run, ckpt.arrays, sets_, predictions, suffix=suffix)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(summary, indent=2))
    os.replace(tmp, out)
    chunks.clear()  # recorded in the evaluation file now
    return summary


def keep_other_evaluation(out: Path, settings: dict) -> Path | None:
    """Move an evaluation at ``out`` made with other settings (sets, executor and shots, seed, KRR, recalibration,
    checkpoint) aside to ``<name>.<its time>.json``, so a new evaluation never replaces it; returns where it went
    (None when there was none, or it had the same settings and is superseded)."""
    from datetime import UTC, datetime

    if not out.exists():
        return None
    try:
        before = json.loads(out.read_text()).get("settings")
    except (OSError, json.JSONDecodeError, AttributeError):
        before = None
    if before == settings:
        return None
    stamp = datetime.fromtimestamp(out.stat().st_mtime, UTC).strftime("%Y%m%dT%H%M%S")
    kept = out.with_name(f"{out.stem}.{stamp}.json")
    n = 1
    while kept.exists():
        n += 1
        kept = out.with_name(f"{out.stem}.{stamp}-{n}.json")
    os.replace(out, kept)
    logger.warning(f"{out.name} held an evaluation with other settings; kept it as {kept.name}")
    return kept


def evaluation_chunks(config: EvaluateConfig, run: Run) -> ChunkResults:
    """Where an evaluation with these settings keeps finished chunks until it completes: a folder per executor
    fingerprint (noise, shots, mitigation, seed...) and evaluation seed, so other settings never reuse them."""
    namespace = json.dumps({"executor": config.executor.fingerprint(), "seed": config.seed}, sort_keys=True,
                           default=str)
    return ChunkResults(run.path / EVALUATION_CHUNKS, namespace)


def _predict(config: EvaluateConfig, run: Run, sim: ExactSimulator, theta: np.ndarray,
             sets: dict[str, TrainingData], *, cluster: ClusterConfig | None,
             token: str | None, chunks: ChunkResults | None = None) -> tuple[dict, tuple, dict]:
    """Predictions per set on the configured executor (one call for all sets: a single compiled shape, or a
    single parameter-shift plan), the exact simulator's (E, E_exact, F, F_exact) for comparison, and what
    ran them. ``chunks``: where a circuit executor keeps finished chunks (an interrupted evaluation resumes)."""
    from qff_core.execution import open_executor

    X = np.concatenate([s.positions_a for s in sets.values()])
    e_exact, f_exact = sim.evaluate(theta, X)
    recal = None
    if config.executor.spec.exact:
        e_all, f_all, info = e_exact, f_exact, {"name": config.executor.name}
    else:
        cal = None
        if config.recalibrate:
            from qff_core.recalibration import calibration_indices

            idx = calibration_indices(run.split.train, run.split.val, config.recalibrate, config.seed)
            cal = TrainingData.take(run.dataset(), idx)
            X = np.concatenate([X, cal.positions_a])
        with open_executor(config.executor, run.model, cluster=cluster, seed=config.seed, token=token,
                           runtime_mode="batch") as executor:
            if chunks is not None:
                executor = executor.with_results(chunks)
                if not config.executor.local:  # a device: jobs submitted before a crash are re-attached, not paid twice
                    executor = executor.with_journal(JobJournal(chunks.folder / "jobs.json"))
            if config.energies_only:
                e_all, f_all = np.asarray(executor.energies(theta, X)), None
            else:
                e_all, f_all = (np.asarray(a) for a in executor.energies_forces(theta, X))
            info = executor.describe()
        raw = (e_all[:len(e_exact)], None if f_all is None else f_all[:len(e_exact)])
        if cal is not None:
            e_all, f_all, recal = _recalibrated(run, theta, e_all, f_all, cal, idx)
    if config.energies_only:
        f_all = None
    n = len(next(iter(sets.values())).energies_ev)
    predictions = {name: (e_all[k * n:(k + 1) * n], None if f_all is None else f_all[k * n:(k + 1) * n])
                   for k, name in enumerate(sets)}
    if config.executor.spec.exact:
        return predictions, (e_all, e_exact, f_all, f_exact), info, recal
    # The executor's own deviation (shots, noise), before any refit: what the device costs in accuracy.
    return predictions, (raw[0], e_exact, None if config.energies_only else raw[1], f_exact), info, recal


def _recalibrated(run: Run, theta: np.ndarray, e_all: np.ndarray, f_all: np.ndarray | None, cal: TrainingData,
                  idx: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """The scored predictions (calibration rows removed) with the output scale and offset refitted on ``cal``
    (on energies alone when there are no forces)."""
    from qff_core.recalibration import Readout, apply_readout, fit_readout

    k = len(idx)
    trained = Readout(float(theta[run.model.scale]), float(theta[run.model.offset]))
    f_cal, f_scored = (None, None) if f_all is None else (f_all[-k:], f_all[:-k])
    fitted = fit_readout(trained, e_all[-k:], f_cal, cal.energies_ev, cal.forces_ev_per_a,
                         force_weight=run.config.force_weight ** 0.5)
    e, f = apply_readout(trained, fitted, e_all[:-k], f_scored)
    info = {"n_geometries": k, "dataset_indices": idx.tolist(), "fitted_on": "energies" if f_all is None
            else "energies and forces", "trained": {"scale": trained.scale, "offset_ev": trained.offset_ev},
            "fitted": {"scale": fitted.scale, "offset_ev": fitted.offset_ev},
            "calibration_before": error_metrics(e_all[-k:], cal.energies_ev, f_cal, cal.forces_ev_per_a)}
    warning = implausible_readout(trained, fitted, k)
    if warning is not None:
        info["warnings"] = [warning]
        logger.warning(warning)
    return e, f, info


def implausible_readout(trained, fitted, k: int) -> str | None:
    """Why a refitted readout is a fit to noise (a scale of the other sign, or more than 10x off the trained one:
    device noise shrinks the signal by a factor, it does not invert it), or None."""
    ratio = fitted.scale / trained.scale if trained.scale else math.nan
    if 0.1 <= ratio <= 10.0:
        return None
    return (f"the refitted scale {fitted.scale:.4g} is {ratio:.2g}x the trained {trained.scale:.4g}"
            f"{' (the other sign)' if ratio < 0 else ''}: {k} calibration geometries on this executor carry too "
            "little signal for the fit; raise --recalibrate (or the shots), or score without recalibration")


def _baselines(run: Run, sets: dict[str, TrainingData], krr: bool) -> dict:
    """The constant-energy/zero-force predictor on every scored set (``constant_energy_zero_forces`` on the test
    set, ``constant_energy_zero_forces_<set>`` on the others) and, with ``krr``, kernel ridge regression on
    inverse distances."""
    mean_e = run.norm.energy_mean_ev
    out = {}
    for name, data in sets.items():
        key = "constant_energy_zero_forces" + ("" if name == "test" else f"_{name}")
        out[key] = error_metrics(np.full(len(data.energies_ev), mean_e), data.energies_ev,
                                 np.zeros_like(data.forces_ev_per_a), data.forces_ev_per_a)
    if krr:
        out["krr_inverse_distances"] = krr_baseline(run, sets)
    return out


def score(run: Run, indices: np.ndarray, *, theta: np.ndarray | None = None,
          sets: tuple[str, ...] = ("test", "rotated"), seed: int = 0) -> dict[str, dict]:
    """Error metrics (the ``evaluate_run`` keys) of a run's model on the dataset samples ``indices`` and their
    transformed copies, on the exact simulator: how the registry and retraining compare models on one test set.
    ``theta``: parameters to score (default: the run's best)."""
    from qff_core.execution.exact import compile_exact

    theta = run.final_parameters()[0] if theta is None else theta
    data = TrainingData.take(run.dataset(), np.asarray(indices))
    every = {"test": data, **transformed_sets(run, data, seed)}
    chosen = {name: every[name] for name in sets}
    e_all, f_all = compile_exact(run.model).evaluate(theta, np.concatenate([d.positions_a for d in chosen.values()]))
    n = len(data.energies_ev)
    return {name: error_metrics(e_all[k * n:(k + 1) * n], d.energies_ev, f_all[k * n:(k + 1) * n], d.forces_ev_per_a)
            for k, (name, d) in enumerate(chosen.items())}


def evaluation_cost(config: EvaluateConfig, run: Run | None = None, *, qpu_time=None) -> RunCost:
    """What ``evaluate_run`` with ``config`` would submit: energies (and forces) of every scored geometry, one plan."""
    from qff_core.execution.shift.planner import Request

    run = run or open_run(config.run_dir)
    if config.recalibrate:  # refused by the evaluation itself: not priced either
        from qff_core.recalibration import calibration_indices

        calibration_indices(run.split.train, run.split.val, config.recalibrate, config.seed)
    request = Request(forces=not config.energies_only)
    return plan_cost(run.model, config.executor, config.n_geometries(len(run.split.test)), request,
                     kind="evaluation", steps=1, qpu_time=qpu_time)


def krr_baseline(run: Run, sets: dict[str, TrainingData]) -> dict:
    """Kernel ridge regression on inverse distances, fitted on the run's training split with the labels the model
    was trained on (noisy ones under label noise: the same data for both, an honest comparison), scored like the
    model on the clean sets."""
    import time

    from qff_core.baselines import fit_kernel_ridge

    train = run.training_data()
    t0 = time.perf_counter()
    krr = fit_kernel_ridge(run.model.molecule, train.positions_a, train.energies_ev)
    out: dict = {"gamma": krr.gamma, "alpha": krr.alpha, "fit_seconds": time.perf_counter() - t0,
                 "n_train": int(train.energies_ev.size)}
    for name, data in sets.items():
        e, f = krr.energies_forces(data.positions_a)
        out[name] = error_metrics(e, data.energies_ev, f, data.forces_ev_per_a)
    return out


def write_plots(run: Run, arrays: dict, sets: dict[str, TrainingData], predictions: dict,
                suffix: str = "") -> dict[str, str]:
    """Parity plots (test, and rotated test when scored) and the learning curve, as PNG files in
    ``<run>/plots`` (``parity<suffix>.png``: a suffix per executor)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from qff_core.units import EV_KCAL_PER_MOL

    out = run.path / "plots"
    out.mkdir(exist_ok=True)
    paths: dict[str, str] = {}
    label = f"{run.config.model.model} D={run.config.model.depth} ({run.model.n_parameters} parameters)"
    with_forces = predictions["test"][1] is not None
    second = "rotated" if "rotated" in sets and with_forces else None
    n_panels = 1 + with_forces + (second is not None)
    fig, axes = plt.subplots(1, n_panels, figsize=(4.7 * n_panels, 4.4), squeeze=False)
    axes = axes[0]
    e_ref = (sets["test"].energies_ev - run.norm.energy_mean_ev) * EV_KCAL_PER_MOL
    e_pred = (predictions["test"][0] - run.norm.energy_mean_ev) * EV_KCAL_PER_MOL
    panels = [(axes[0], e_ref, e_pred, "energy - training mean (kcal/mol), test")]
    if with_forces:
        panels.append((axes[1], sets["test"].forces_ev_per_a.ravel() * EV_KCAL_PER_MOL,
                       predictions["test"][1].ravel() * EV_KCAL_PER_MOL, "force components (kcal/mol/A), test"))
    if second:
        panels.append((axes[2], sets[second].forces_ev_per_a.ravel() * EV_KCAL_PER_MOL,
                       predictions[second][1].ravel() * EV_KCAL_PER_MOL, "force components (kcal/mol/A), rotated test"))
    for ax, ref, pred, title in panels:
        lo, hi = float(min(ref.min(), pred.min())), float(max(ref.max(), pred.max()))
        ax.plot([lo, hi], [lo, hi], color="0.6", lw=1)
        ax.scatter(ref, pred, s=4, alpha=0.5)
        ax.set_xlabel("reference")
        ax.set_ylabel("model")
        ax.set_title(title, fontsize=9)
    where = "" if not suffix else f", {suffix.lstrip('_')} executor"
    fig.suptitle(f"{run.model.molecule.name}: {label}{where}")
    fig.tight_layout()
    paths["parity"] = str(out / f"parity{suffix}.png")
    fig.savefig(paths["parity"], dpi=110)
    plt.close(fig)

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    steps, loss = arrays.get("history/step", []), arrays.get("history/loss", [])
    if len(loss) != len(steps):  # runs interrupted between the history's updates before that was rolled back
        logger.warning(f"the run's loss history has {len(loss)} entries for {len(steps)} steps (an interrupt landed "
                       "between its updates); the loss curve is left out of the plot")
    elif len(loss):
        ax1.semilogy(steps, loss, lw=0.5, alpha=0.5, label="minibatch loss")
        w = max(1, len(loss) // 100)
        smooth = np.convolve(loss, np.ones(w) / w, mode="valid")
        ax1.semilogy(np.asarray(steps)[w - 1:], smooth, lw=1.5, label=f"running mean ({w})")
        ax1.set_xlabel("step")
        ax1.set_ylabel("loss (dimensionless)")
        ax1.legend()
    vs = arrays.get("history/val_step", [])
    if len(vs) and np.isfinite(arrays["history/val_forces_mae_kcal_mol_a"]).any():
        ax2.semilogy(vs, arrays["history/val_energy_mae_kcal_mol"], "o-", ms=3,
                     label="validation energy MAE (kcal/mol)")
        ax2.semilogy(vs, arrays["history/val_forces_mae_kcal_mol_a"], "s-", ms=3,
                     label="validation force MAE (kcal/mol/A)")
        ax2.set_xlabel("step")
        ax2.legend()
    fig.suptitle(f"learning curve: {label}")
    fig.tight_layout()
    paths["learning_curve"] = str(out / "learning_curve.png")
    fig.savefig(paths["learning_curve"], dpi=110)
    plt.close(fig)
    return paths


def _cell(value: float | None) -> str:
    """A table cell: four decimals, or three significant digits below 0.01 (KRR's errors can be 1e-4)."""
    if value is None:
        return f"{'-':>14}"
    return f"{value:>14.4f}" if abs(value) >= 0.01 or value == 0 else f"{value:>14.2e}"


def summary_table(summaries: dict[str, dict]) -> str:
    """A plain-text comparison of evaluation summaries: a column per model, then the baselines of the first
    summary (kernel ridge regression when it was fitted, the constant-energy/zero-force predictor); "-" where a
    value was not computed."""
    names = list(summaries)
    baselines = next(iter(summaries.values()))["baselines"]
    columns = {name: summaries[name] for name in names}
    if "krr_inverse_distances" in baselines:
        columns["KRR"] = baselines["krr_inverse_distances"]
    columns["constant"] = {part: baselines.get("constant_energy_zero_forces" + ("" if part == "test" else f"_{part}"))
                           for part in ("test", *TRANSFORMS)}
    lines = [f"{'set':<11} {'metric':<28}" + "".join(f"{n:>14}" for n in columns)]
    for part in (p for p in ("test", *TRANSFORMS) if all(p in summaries[n] for n in names)):  # the sets scored
        for key in ("energy_mae_kcal_mol", "forces_mae_kcal_mol_a", "forces_err_norm_kcal_mol_a"):
            cells = ((column.get(part) or {}).get(key) for column in columns.values())
            lines.append(f"{part:<11} {key:<28}" + "".join(_cell(v) for v in cells))
    if "KRR" in columns:
        krr = columns["KRR"]
        lines.append(f"KRR: kernel ridge regression on inverse distances (gamma {krr['gamma']:g}, "
                     f"alpha {krr['alpha']:g}, {krr['n_train']} training geometries); "
                     "constant: the training mean energy and zero forces")
    else:
        lines.append("constant: the training mean energy and zero forces")
    return "\n".join(lines)


__all__ = ["METRIC_KEYS", "TRANSFORMS", "EvaluateConfig", "evaluate_run", "evaluation_cost", "score", "summary_table",
           "transformed_sets", "write_plots"]
