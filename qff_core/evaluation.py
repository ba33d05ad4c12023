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
import os
from pathlib import Path

import numpy as np

from qff_core.symmetry import permute_atoms, random_rotation
from qff_core.training import Run, TrainingData, error_metrics, open_run

TRANSFORMS = ("rotated", "translated", "permuted", "inverted")
METRIC_KEYS = ("energy_mae_kcal_mol", "energy_rmse_kcal_mol", "forces_mae_kcal_mol_a", "forces_rmse_kcal_mol_a",
               "forces_err_norm_kcal_mol_a")


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


def evaluate_run(run_dir: str | Path, *, seed: int = 0, plots: bool = True, audit: bool = True,
                 krr: bool = False) -> dict:
    """Metrics of the run's best parameters on its test set (and transformed copies); writes
    ``evaluation.json`` and, with ``plots``, PNG files into the run directory."""
    from qff_core.execution.exact import compile_exact

    run = open_run(run_dir)
    theta, ckpt = run.final_parameters()
    dataset = run.dataset()
    test = TrainingData.take(dataset, run.split.test)
    if test.energies_ev.size == 0:
        from qff_core.errors import InputError

        raise InputError(f"the run in {run.path} has no test samples (it was trained with --test-size 0)")
    sim = compile_exact(run.model)
    sets = {"test": test, **transformed_sets(run, test, seed)}
    # One batched call for all sets: a single compiled shape.
    X = np.concatenate([s.positions_a for s in sets.values()])
    E_all, F_all = sim.evaluate(theta, X)
    n = len(test.energies_ev)
    summary: dict = {}
    predictions = {}
    for k, (name, data) in enumerate(sets.items()):
        e, f = E_all[k * n:(k + 1) * n], F_all[k * n:(k + 1) * n]
        predictions[name] = (e, f)
        summary[name] = error_metrics(e, data.energies_ev, f, data.forces_ev_per_a)
    mean_e = run.norm.energy_mean_ev
    summary["baselines"] = {
        "constant_energy_zero_forces": error_metrics(np.full(n, mean_e), test.energies_ev,
                                                     np.zeros_like(test.forces_ev_per_a), test.forces_ev_per_a),
        "constant_energy_zero_forces_rotated": error_metrics(
            np.full(n, mean_e), sets["rotated"].energies_ev, np.zeros_like(test.forces_ev_per_a),
            sets["rotated"].forces_ev_per_a),
    }
    if krr:
        summary["baselines"]["krr_inverse_distances"] = krr_baseline(run, sets)
    summary["invariance"] = {
        name: {"energy_mae_rel_change": _rel(summary[name]["energy_mae_kcal_mol"],
                                             summary["test"]["energy_mae_kcal_mol"]),
               "forces_err_norm_rel_change": _rel(summary[name]["forces_err_norm_kcal_mol_a"],
                                                  summary["test"]["forces_err_norm_kcal_mol_a"])}
        for name in TRANSFORMS
    }
    if audit:
        from qff_core.audit import audit_model

        centred = np.array(theta, dtype=float)
        centred[run.model.offset] = 0.0  # invariance of E - e0: not flattered by a huge constant offset
        summary["audit"] = audit_model(run.model, seed=seed, theta=centred, simulator=sim).max_rel_error
    summary["run"] = {
        "run_dir": str(run.path), "model": run.config.model.model, "molecule": run.model.molecule.name,
        "n_parameters": run.model.n_parameters, "n_qubits": run.model.n_qubits, "depth": run.config.model.depth,
        "split": run.split.counts(), "step": ckpt.step, "best_step": ckpt.attrs["best"]["step"],
        "stop_reason": ckpt.attrs.get("stop_reason"), "dataset": run.info["dataset"],
    }
    if plots:
        summary["plots"] = write_plots(run, ckpt.arrays, sets, predictions)
    tmp = run.path / "evaluation.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2))
    os.replace(tmp, run.path / "evaluation.json")
    return summary


def krr_baseline(run: Run, sets: dict[str, TrainingData]) -> dict:
    """Kernel ridge regression on inverse distances, fitted on the run's training split, scored like the model."""
    import time

    from qff_core.baselines import fit_kernel_ridge

    train = TrainingData.take(run.dataset(), run.split.train)
    t0 = time.perf_counter()
    krr = fit_kernel_ridge(run.model.molecule, train.positions_a, train.energies_ev)
    out: dict = {"gamma": krr.gamma, "alpha": krr.alpha, "fit_seconds": time.perf_counter() - t0,
                 "n_train": int(train.energies_ev.size)}
    for name, data in sets.items():
        e, f = krr.energies_forces(data.positions_a)
        out[name] = error_metrics(e, data.energies_ev, f, data.forces_ev_per_a)
    return out


def _rel(value: float, reference: float) -> float:
    return abs(value - reference) / max(abs(reference), 1e-300)


def write_plots(run: Run, arrays: dict, sets: dict[str, TrainingData], predictions: dict) -> dict[str, str]:
    """Parity plots (test and rotated test) and the learning curve, as PNG files in ``<run>/plots``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from qff_core.units import EV_KCAL_PER_MOL

    out = run.path / "plots"
    out.mkdir(exist_ok=True)
    paths: dict[str, str] = {}
    label = f"{run.config.model.model} D={run.config.model.depth} ({run.model.n_parameters} parameters)"
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.4))
    e_ref = (sets["test"].energies_ev - run.norm.energy_mean_ev) * EV_KCAL_PER_MOL
    e_pred = (predictions["test"][0] - run.norm.energy_mean_ev) * EV_KCAL_PER_MOL
    panels = [(axes[0], e_ref, e_pred, "energy - training mean (kcal/mol), test"),
              (axes[1], sets["test"].forces_ev_per_a.ravel() * EV_KCAL_PER_MOL,
               predictions["test"][1].ravel() * EV_KCAL_PER_MOL, "force components (kcal/mol/A), test"),
              (axes[2], sets["rotated"].forces_ev_per_a.ravel() * EV_KCAL_PER_MOL,
               predictions["rotated"][1].ravel() * EV_KCAL_PER_MOL, "force components (kcal/mol/A), rotated test")]
    for ax, ref, pred, title in panels:
        lo, hi = float(min(ref.min(), pred.min())), float(max(ref.max(), pred.max()))
        ax.plot([lo, hi], [lo, hi], color="0.6", lw=1)
        ax.scatter(ref, pred, s=4, alpha=0.5)
        ax.set_xlabel("reference")
        ax.set_ylabel("model")
        ax.set_title(title, fontsize=9)
    fig.suptitle(f"{run.model.molecule.name}: {label}")
    fig.tight_layout()
    paths["parity"] = str(out / "parity.png")
    fig.savefig(paths["parity"], dpi=110)
    plt.close(fig)

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    steps, loss = arrays.get("history/step", []), arrays.get("history/loss", [])
    if len(loss):
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


def summary_table(summaries: dict[str, dict]) -> str:
    """A plain-text comparison of evaluation summaries (columns: models)."""
    names = list(summaries)
    lines = [f"{'set':<11} {'metric':<28}" + "".join(f"{n:>14}" for n in names)]
    for part in ("test", *TRANSFORMS):
        for key in ("energy_mae_kcal_mol", "forces_mae_kcal_mol_a", "forces_err_norm_kcal_mol_a"):
            lines.append(f"{part:<11} {key:<28}" + "".join(f"{summaries[n][part][key]:>14.4f}" for n in names))
    base = next(iter(summaries.values()))["baselines"]["constant_energy_zero_forces"]
    lines.append(f"baseline (constant energy, zero forces): energy MAE {base['energy_mae_kcal_mol']:.3f} kcal/mol, "
                 f"force MAE {base['forces_mae_kcal_mol_a']:.2f} kcal/mol/A, "
                 f"error norm {base['forces_err_norm_kcal_mol_a']:.2f}")
    return "\n".join(lines)


__all__ = ["METRIC_KEYS", "TRANSFORMS", "evaluate_run", "summary_table", "transformed_sets", "write_plots"]
