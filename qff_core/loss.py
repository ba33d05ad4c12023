"""The training loss, defined once, and its parameter-shift gradient that mirrors it.

    loss = w_E * mean(((E - (E_ref - shift_E)) / sigma_E)^2) + w_F * mean(((F - F_ref) / sigma_F)^2)

means over geometries and over all force components; energies in eV, forces in eV/Angstrom,
so the scales make both terms dimensionless. ``Loss.value`` is the one definition: the exact
executor differentiates it with JAX (mixed second derivatives when forces are in the loss),
validation evaluates it on numpy arrays, and ``Loss.from_shifts`` reassembles the same value
and its gradient from a parameter-shift result (energy Jacobian, force second-order shifts),
term by term, so the two paths agree to rounding (tested on exact Aer to 1e-8).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from qff_core.errors import InputError

if TYPE_CHECKING:
    from qff_core.execution.shift.planner import ShiftResult


@dataclass(frozen=True)
class Loss:
    """The loss's weights and scales (``energy_scale_ev`` = sigma_E, ``force_scale_ev_per_a`` = sigma_F)."""

    w_energy: float
    w_forces: float
    energy_scale_ev: float = 1.0
    force_scale_ev_per_a: float = 1.0
    energy_shift_ev: float = 0.0

    def __post_init__(self) -> None:
        if self.energy_scale_ev <= 0 or self.force_scale_ev_per_a <= 0:
            raise InputError("energy_scale_ev and force_scale_ev_per_a must be positive")
        if self.w_energy < 0 or self.w_forces < 0:
            raise InputError("loss weights must be non-negative")

    @property
    def needs_forces(self) -> bool:
        """Forces enter the loss (its gradient then needs mixed second derivatives)."""
        return self.w_forces > 0

    def value(self, energies_ev, forces_ev_per_a, energies_ref_ev, forces_ref_ev_per_a):
        """The loss of predictions against references; JAX- and numpy-traceable (``forces`` may be None
        when ``w_forces`` is 0)."""
        residual = energies_ev - energies_ref_ev
        if self.energy_shift_ev:
            residual = residual + self.energy_shift_ev
        value = self.w_energy * ((residual / self.energy_scale_ev) ** 2).mean()
        if self.needs_forces:
            value = value + self.w_forces * (((forces_ev_per_a - forces_ref_ev_per_a)
                                              / self.force_scale_ev_per_a) ** 2).mean()
        return value

    def from_shifts(self, result: ShiftResult, energies_ref_ev: np.ndarray,
                    forces_ref_ev_per_a: np.ndarray) -> tuple[float, np.ndarray]:
        """``value`` and its gradient with respect to theta from a reassembled parameter-shift plan.

        The energy term's gradient chains the residuals through the energy Jacobian; the force
        term's through the force second-order shifts (F = -dE/dr, so dLoss/d(dE/dr) =
        -2 w_F (F - F_ref) / (N sigma_F^2)).
        """
        n = len(result.energies)
        e_res = result.energies - (np.asarray(energies_ref_ev) - self.energy_shift_ev)
        loss = self.w_energy * float(np.mean((e_res / self.energy_scale_ev) ** 2))
        grad = np.zeros(result.plan.qmodel.model.n_parameters)
        if self.w_energy:
            grad += (2 * self.w_energy / (n * self.energy_scale_ev**2)) * (e_res @ result.energy_jacobian)
        if self.needs_forces:
            f_res = result.forces - np.asarray(forces_ref_ev_per_a)
            loss += self.w_forces * float(np.mean((f_res / self.force_scale_ev_per_a) ** 2))
            cotangent = -2 * self.w_forces * f_res / (f_res.size * self.force_scale_ev_per_a**2)
            grad += result.force_gradient(cotangent)
        return loss, grad


__all__ = ["Loss"]
