"""Error metrics of predictions against reference data, in the units chemists report.

Energies in kcal/mol and meV, force components in kcal/mol/Angstrom and meV/Angstrom, and the
mean norm of the per-atom force error vector (unchanged by rotations, so it compares frames).
"""

from __future__ import annotations

import numpy as np

from qff_core.units import EV_KCAL_PER_MOL

METRIC_KEYS = ("energy_mae_kcal_mol", "energy_rmse_kcal_mol", "forces_mae_kcal_mol_a", "forces_rmse_kcal_mol_a",
               "forces_err_norm_kcal_mol_a")


def error_metrics(e_pred: np.ndarray, e_ref: np.ndarray, f_pred: np.ndarray | None,
                  f_ref: np.ndarray) -> dict[str, float | None]:
    """MAE/RMSE of energies (kcal/mol, meV) and force components (kcal/mol/A, meV/A), and the
    mean norm of the per-atom force error vector (kcal/mol/A; unchanged by rotations). Without
    predicted forces (``f_pred`` None: an energies-only evaluation) the force metrics are None."""
    de = (np.asarray(e_pred) - np.asarray(e_ref))
    if f_pred is None:
        out = error_metrics(e_pred, e_ref, np.asarray(f_ref), f_ref)
        return {k: (None if k.startswith("forces_") else v) for k, v in out.items()}
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


def relative_change(value: float | None, reference: float | None) -> float | None:
    """|value - reference| / |reference| (reference floored at 1e-300); None when either was not measured."""
    if value is None or reference is None:
        return None
    return abs(value - reference) / max(abs(reference), 1e-300)


__all__ = ["METRIC_KEYS", "error_metrics", "relative_change"]
