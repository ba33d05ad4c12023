"""Symmetry audit: how much a model's energies and forces change under the symmetries of physics.

Random parameters, random geometries near the reference; each symmetry operation g is applied
to every geometry and E(gX) is compared with E(X), and the forces of gX, mapped back, with
F(X). Errors are relative to the RMS energy (RMS force component) of the sample, so they are
comparable across models and units. Translation, proper rotation and permutation must hold to
round-off for an invariant model; inversion only for planar molecules or with symmetrisation.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from qff_core.execution.exact import ExactSimulator, compile_exact
from qff_core.models import AnyModel, init_parameters
from qff_core.symmetry import permute_atoms, random_rotation

OPERATIONS = ("rotation", "translation", "permutation", "inversion")


@dataclass(frozen=True)
class AuditReport:
    """Largest relative changes per operation: ``max_rel_error`` = max over energy and forces.

    ``inversion_guaranteed``: every geometry of at most three atoms is planar, so rotation
    invariance implies inversion invariance; otherwise only symmetrisation guarantees it.
    """

    molecule: str
    model: str
    seed: int
    n_geometries: int
    n_parameters: int
    symmetrize_inversion: bool
    permutation_group_order: int | None
    inversion_guaranteed: bool
    max_rel_error: dict[str, float]
    energy_rel_error: dict[str, float]
    forces_rel_error: dict[str, float]
    energy_rms_ev: float
    forces_rms_ev_per_a: float

    def to_dict(self) -> dict:
        """JSON-ready form."""
        return asdict(self)

    def passed(self, tol: float = 1e-10, operations: tuple[str, ...] = OPERATIONS) -> bool:
        """True when every listed operation changed the model by less than ``tol`` (relative)."""
        return all(self.max_rel_error[op] < tol for op in operations)


def random_geometries(model: AnyModel, n: int, rng: np.random.Generator, sigma_a: float = 0.1) -> np.ndarray:
    """``n`` geometries: the reference with Gaussian displacements (Angstrom), shuffled in space.

    Each gets a random rotation and offset so the audit never relies on the reference frame.
    """
    ref = model.molecule.positions_a
    out = ref + sigma_a * rng.standard_normal((n, *ref.shape))
    for i in range(n):
        out[i] = out[i] @ random_rotation(rng).T + rng.normal(0.0, 1.0, 3)
    return out


def audit_model(
    model: AnyModel,
    *,
    seed: int = 0,
    n_geometries: int = 8,
    theta: np.ndarray | None = None,
    simulator: ExactSimulator | None = None,
) -> AuditReport:
    """Audit ``model`` at random (or given) parameters on random geometries."""
    rng = np.random.default_rng(seed)
    sim = simulator or compile_exact(model)
    theta = init_parameters(model, seed=seed, strategy="random") if theta is None else np.asarray(theta)
    X = random_geometries(model, n_geometries, rng)
    group = model.molecule.group

    rotations = np.stack([random_rotation(rng) for _ in range(n_geometries)])
    shifts = rng.uniform(-5.0, 5.0, (n_geometries, 1, 3))
    perms = [group.random_element(rng) for _ in range(n_geometries)]
    transformed = {
        "rotation": np.einsum("nij,naj->nai", rotations, X),
        "translation": X + shifts,
        "permutation": np.stack([permute_atoms(x, p) for x, p in zip(X, perms, strict=True)]),
        "inversion": -X,
    }
    # One batched call for the reference and all transformed copies.
    batch = np.concatenate([X, *transformed.values()])
    E_all, F_all = sim.evaluate(theta, batch)
    E0, F0 = E_all[:n_geometries], F_all[:n_geometries]
    e_scale = max(float(np.sqrt(np.mean(E0**2))), 1e-300)
    f_scale = max(float(np.sqrt(np.mean(F0**2))), 1e-300)
    e_err, f_err = {}, {}
    for k, op in enumerate(OPERATIONS):
        sl = slice((k + 1) * n_geometries, (k + 2) * n_geometries)
        E, F = E_all[sl], F_all[sl]
        if op == "rotation":
            F_back = np.einsum("nji,naj->nai", rotations, F)  # R^T F
        elif op == "permutation":
            F_back = np.stack([f[list(p)] for f, p in zip(F, perms, strict=True)])
        elif op == "inversion":
            F_back = -F
        else:
            F_back = F
        e_err[op] = float(np.max(np.abs(E - E0)) / e_scale)
        f_err[op] = float(np.max(np.abs(F_back - F0)) / f_scale)
    return AuditReport(
        molecule=model.molecule.name,
        model=model.kind,
        seed=seed,
        n_geometries=n_geometries,
        n_parameters=model.n_parameters,
        symmetrize_inversion=model.symmetrize_inversion,
        permutation_group_order=group.order(),
        inversion_guaranteed=model.symmetrize_inversion or model.molecule.n_atoms <= 3,
        max_rel_error={op: max(e_err[op], f_err[op]) for op in OPERATIONS},
        energy_rel_error=e_err,
        forces_rel_error=f_err,
        energy_rms_ev=e_scale,
        forces_rms_ev_per_a=f_scale,
    )
