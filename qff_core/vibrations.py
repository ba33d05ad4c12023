"""Harmonic wavenumbers of a learned surface (``qff vibrations``), against the reference engine's.

The model's own minimum is found with ASE's BFGS from the dataset's minimum, then ASE's
``Vibrations`` (central differences, four displacements per coordinate) gives the Hessian's
normal modes. The 3N-6 (3N-5 when linear) vibrational wavenumbers are compared with those the
dataset's sampler computed at the reference engine's minimum (``sampler.minimum.frequencies_cm1``).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from warnings import catch_warnings, simplefilter

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from qff_core.domain import ExtrapolationWarning
from qff_core.errors import InputError


class VibrationsConfig(BaseModel):
    """What ``qff vibrations`` computes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    run_dir: str = Field(description="the trained run")
    fmax_ev_per_a: float = Field(1e-5, gt=0, description="force threshold of the minimisation (eV/Angstrom)")
    max_steps: int = Field(1000, ge=1, description="optimiser steps at most")
    delta_a: float = Field(5e-3, gt=0, description="finite-difference displacement (Angstrom)")
    checkpoint: int | None = Field(None, description="a checkpoint step of the run (default: best parameters)")


def _is_linear(positions_a: np.ndarray) -> bool:
    centred = positions_a - positions_a.mean(axis=0)
    return len(positions_a) == 2 or np.linalg.svd(centred, compute_uv=False)[1] < 1e-6


ZERO_MODE_WARNING_CM1 = 50.0
"""Translations and rotations of an invariant surface have zero frequency (a few cm^-1 from finite differences);
larger ones mean the surface is not invariant and its "vibrations" mix with rotations."""
MINIMUM_SHIFT_WARNING = 0.1
"""A model minimum whose interatomic distances differ from the reference minimum's by more than this fraction is not
the reference's minimum: its wavenumbers compare different structures."""


def _signed(frequencies: np.ndarray) -> np.ndarray:
    f = np.asarray(frequencies)
    return np.where(np.abs(f.imag) > np.abs(f.real), -np.abs(f.imag), np.abs(f.real))


def vibrational_wavenumbers(frequencies: np.ndarray, linear: bool) -> np.ndarray:
    """The vibrational wavenumbers (cm^-1, imaginary ones as negative) of all 3N from ASE: the 5 or 6
    of smallest magnitude (translations, rotations) dropped, sorted ascending."""
    signed = _signed(frequencies)
    keep = np.argsort(np.abs(signed))[5 if linear else 6:]
    return np.sort(signed[keep])


def zero_modes(frequencies: np.ndarray, linear: bool) -> np.ndarray:
    """The 5 or 6 wavenumbers ``vibrational_wavenumbers`` drops (cm^-1): near zero on an invariant surface."""
    signed = _signed(frequencies)
    return np.sort(signed[np.argsort(np.abs(signed))[:5 if linear else 6]])


def _distance_shift(positions_a: np.ndarray, reference_a: np.ndarray) -> float:
    """Largest relative change of an interatomic distance between two geometries of one molecule."""
    iu = np.triu_indices(len(positions_a), 1)
    d = np.linalg.norm(positions_a[:, None] - positions_a[None], axis=-1)[iu]
    r = np.linalg.norm(reference_a[:, None] - reference_a[None], axis=-1)[iu]
    return float(np.max(np.abs(d - r) / r))


def vibrations(config: VibrationsConfig, *, calc=None) -> dict:
    """The model's minimum (positions, energy, residual force) and wavenumbers, with the reference's and the
    relative differences when the dataset recorded them."""
    from ase.optimize import BFGS
    from ase.vibrations import Vibrations

    from qff_core.calculator import QFFCalculator

    calc = calc or QFFCalculator(config.run_dir, checkpoint=config.checkpoint)
    atoms = calc.reference_atoms()
    atoms.calc = calc
    opt = BFGS(atoms, logfile=None)
    with catch_warnings():
        simplefilter("ignore", ExtrapolationWarning)  # the optimiser's path may leave the domain: the minimum is judged
        converged = opt.run(fmax=config.fmax_ev_per_a, steps=config.max_steps)
        fmax = float(np.abs(atoms.get_forces()).max())
        outside = list(calc.last_outside)  # at the minimum
    if not converged:
        raise InputError(f"the model's minimum was not found within {config.max_steps} BFGS steps (largest force "
                         f"{fmax:.2e} eV/A); raise --max-steps, or, if it was generous, its surface may have no "
                         "minimum near the dataset's: train longer")
    work = Path(tempfile.mkdtemp(prefix="qff-vib-"))
    try:
        vib = Vibrations(atoms, name=str(work / "vib"), delta=config.delta_a, nfree=4)
        with catch_warnings():
            simplefilter("ignore", ExtrapolationWarning)  # displacements about the minimum, judged above
            vib.run()
        linear = _is_linear(atoms.positions)
        frequencies = vib.get_frequencies()
        model = vibrational_wavenumbers(frequencies, linear)
        zeros = zero_modes(frequencies, linear)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    sampler = calc.run.dataset().group.attrs.get("sampler", {}) or {}
    reference = sampler.get("minimum", {}).get("frequencies_cm1")
    reference_minimum = sampler.get("minimum", {}).get("positions_a")
    level = calc.run.dataset().group.attrs.get("level_of_theory", {})
    warnings: list[str] = []
    if np.max(np.abs(zeros)) > ZERO_MODE_WARNING_CM1 and not calc.rotation_invariant:
        warnings.append(f"the translations and rotations are not at zero frequency ({np.max(np.abs(zeros)):.0f} "
                        f"cm-1): the {calc.run.model.kind} model's surface is not rotation-invariant, and its "
                        "wavenumbers mix vibrations with rotations")
    elif np.max(np.abs(zeros)) > ZERO_MODE_WARNING_CM1:  # an invariant surface: the point or the step is at fault
        warnings.append(f"the translations and rotations are not at zero frequency ({np.max(np.abs(zeros)):.0f} "
                        f"cm-1) although the model is rotation-invariant: the geometry is not a stationary point to "
                        f"the accuracy needed (largest force {fmax:.1e} eV/A: lower --fmax-ev-per-a), or --delta-a "
                        f"({config.delta_a} A) is too large for a harmonic estimate")
    if outside:
        warnings.append(f"the model's minimum lies outside its training domain ({'; '.join(outside)}): its surface "
                        "there is extrapolated")
    shift = None
    if reference_minimum is not None:
        # reference_atoms() are in the molecule's order, as the sampler's minimum is
        shift = _distance_shift(atoms.positions, np.asarray(reference_minimum, dtype=float))
        if shift > MINIMUM_SHIFT_WARNING:
            warnings.append(f"the model's minimum is not the reference's: an interatomic distance differs by "
                            f"{100 * shift:.0f} %, so the wavenumbers compare different structures")
    out: dict = {
        "run_dir": config.run_dir, "molecule": calc.molecule.name,
        "minimum": {"positions_a": atoms.positions.tolist(), "energy_ev": float(atoms.get_potential_energy()),
                    "max_force_ev_per_a": fmax, "optimiser_steps": int(opt.nsteps),
                    "max_distance_change_from_reference": shift},
        "wavenumbers_cm1": [round(float(w), 2) for w in model],
        "zero_modes_cm1": [round(float(w), 2) for w in zeros],
        "warnings": warnings,
        "reference": None,
    }
    if reference is not None and len(reference) == len(model):
        ref = np.sort(np.asarray(reference, dtype=float))
        out["reference"] = {
            "engine": f"{level.get('engine')} {level.get('method')}/{level.get('basis')}",
            "wavenumbers_cm1": [float(r) for r in ref],
            "relative_difference": [round(float(d), 5) for d in (model - ref) / ref],
            "max_abs_relative_difference": float(np.max(np.abs((model - ref) / ref))),
        }
    return out


def vibrations_table(summary: dict) -> str:
    """Human lines: mode, model, reference and difference."""
    lines = [f"{summary['molecule']}: model minimum E = {summary['minimum']['energy_ev']:.6f} eV "
             f"(max force {summary['minimum']['max_force_ev_per_a']:.1e} eV/A)"]
    ref = summary["reference"]
    lines.append(f"{'mode':>4} {'model (cm-1)':>13}" + (f" {'reference':>10} {'diff':>8}" if ref else ""))
    for k, w in enumerate(summary["wavenumbers_cm1"]):
        extra = f" {ref['wavenumbers_cm1'][k]:>10.1f} {100 * ref['relative_difference'][k]:>+7.2f}%" if ref else ""
        lines.append(f"{k + 1:>4} {w:>13.1f}{extra}")
    if ref is not None:
        lines.append(f"reference: {ref['engine']}, harmonic at its own minimum (the dataset's sampler)")
    else:
        lines.append("(the dataset records no reference wavenumbers: generated with the normal_modes sampler only)")
    lines.extend(f"WARNING: {w}" for w in summary.get("warnings", []))
    return "\n".join(lines)


__all__ = ["VibrationsConfig", "vibrational_wavenumbers", "vibrations", "vibrations_table"]
