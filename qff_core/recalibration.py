"""Readout recalibration: refit the model's output scale s and offset e0 on a device.

The model's energy is E = s <O> + e0 and its forces F = -s d<O>/dx. Device noise mostly shrinks
and shifts <O> (depolarizing noise pulls it toward the maximally mixed value), so the learned
weights inside the circuit stay useful while s and e0 no longer fit. Given K calibration
geometries with reference energies (and forces), the device's <O> and d<O>/dx there (recovered
from its predictions with the trained s and e0), ``fit_readout`` refits s and e0, and only those,
by linear least squares; ``apply_readout`` corrects predictions with them. Calibration
geometries come from the training and validation splits, never the test split.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qff_core.errors import InputError


@dataclass(frozen=True)
class Readout:
    """Output scale (eV per unit <O>) and offset (eV)."""

    scale: float
    offset_ev: float


def fit_readout(trained: Readout, energies_ev: np.ndarray, forces_ev_per_a: np.ndarray | None,
                ref_energies_ev: np.ndarray, ref_forces_ev_per_a: np.ndarray | None,
                force_weight: float = 1.0) -> Readout:
    """The (s, e0) that best map the device's <O> (recovered from its predictions ``energies_ev`` and
    ``forces_ev_per_a`` made with ``trained``) onto the reference energies and, when given, forces (weighted by
    ``force_weight``; rows of eV and eV/Angstrom)."""
    if trained.scale == 0:
        raise InputError("the trained output scale is 0: there is no <O> to recalibrate")
    o = (np.asarray(energies_ev) - trained.offset_ev) / trained.scale
    rows = [np.column_stack([o, np.ones_like(o)])]
    rhs = [np.asarray(ref_energies_ev, dtype=float)]
    if forces_ev_per_a is not None and ref_forces_ev_per_a is not None and force_weight > 0:
        g = (np.asarray(forces_ev_per_a) / trained.scale).ravel()  # -d<O>/dx per component
        rows.append(force_weight * np.column_stack([g, np.zeros_like(g)]))
        rhs.append(force_weight * np.asarray(ref_forces_ev_per_a, dtype=float).ravel())
    a, b = np.concatenate(rows), np.concatenate(rhs)
    if not np.any(a[:, 0] != a[0, 0]) and not np.any(a[len(o):, 0]):  # s undetermined: no spread, no forces
        raise InputError("the calibration geometries do not determine both s and e0 (all <O> equal); use more or "
                         "more varied ones")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise InputError("the calibration predictions or references hold NaN or infinite values")
    scale, offset = np.linalg.solve(a.T @ a, a.T @ b)  # the 2x2 normal equations of the least-squares fit
    return Readout(float(scale), float(offset))


def apply_readout(trained: Readout, fitted: Readout, energies_ev: np.ndarray,
                  forces_ev_per_a: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Predictions made with ``trained`` (s, e0) as they are with ``fitted`` instead (forces may be None)."""
    o = (np.asarray(energies_ev) - trained.offset_ev) / trained.scale
    ratio = fitted.scale / trained.scale
    return fitted.scale * o + fitted.offset_ev, None if forces_ev_per_a is None else np.asarray(forces_ev_per_a) * ratio


def calibration_indices(train: np.ndarray, val: np.ndarray, k: int, seed: int) -> np.ndarray:
    """``k`` dataset indices from the training and validation splits (seeded); never test samples."""
    pool = np.concatenate([np.asarray(train), np.asarray(val)])
    if k > pool.size:
        raise InputError(f"--recalibrate {k} asks for more calibration geometries than the run has outside its test "
                         f"split ({pool.size})")
    return np.sort(np.random.default_rng([seed, 4099]).choice(pool, size=k, replace=False))


__all__ = ["Readout", "apply_readout", "calibration_indices", "fit_readout"]
