"""Geometry samplers, seeded and reproducible: thermal normal modes, bond scans, rigid rotations.

Units: Angstrom, eV, amu, K. The normal-mode sampler draws from the classical harmonic
distribution at temperature T around a minimum: each mass-weighted vibrational coordinate
q_k ~ N(0, kT / omega_k^2); translations and rotations are projected out, so samples carry
no net translation and satisfy the Eckart rotation condition to first order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from ase.data import atomic_masses, atomic_numbers

from qff_core.errors import ConvergenceError, InputError
from qff_core.molecules import MoleculeSpec, validate_positions
from qff_core.symmetry import random_rotation
from qff_core.units import BOLTZMANN_EV_PER_K

OMEGA2_TO_CM1 = 521.4709  # sqrt(eV / (Angstrom^2 amu)) expressed in cm^-1

MAX_DRAWS_PER_SAMPLE = 50
"""``thermal_samples`` gives up when fewer than 1 in this many draws keep the distance bound."""
HESSIAN_STEP_A = 5e-3
"""Cartesian step (Angstrom) of the finite-difference Hessian."""
DEGENERACY_RTOL = 1e-3
"""Modes whose omega^2 agree to this relative tolerance span one degenerate subspace (finite-difference
Hessians split exact degeneracies by about 1e-4: NH3's E modes by 0.08 cm^-1 of 1727)."""
REFERENCE_SEED = 20261204
"""Seed of the fixed reference directions that pick the sign and degenerate basis of every mode."""
SIDE_TIE_EV = 1e-5
"""Two sides of a saddle closer in energy than this are a tie (mirror images, equal up to SCF noise)."""

EnergyGradient = Callable[[np.ndarray], tuple[float, np.ndarray]]
"""positions (atoms, 3) Angstrom -> (energy eV, gradient eV/Angstrom)."""


def masses_amu(symbols: tuple[str, ...]) -> np.ndarray:
    """Standard atomic masses (ASE's table)."""
    return np.array([atomic_masses[atomic_numbers[s]] for s in symbols])


def rigid_rotations(positions_a: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` copies of one geometry, each turned by a uniformly random rotation about its centroid."""
    x = validate_positions(positions_a)
    rng = np.random.default_rng(seed)
    c = x.mean(axis=0)
    return np.stack([(x - c) @ random_rotation(rng).T + c for _ in range(n)])


def bond_scan(molecule: MoleculeSpec, r_min_a: float, r_max_a: float, n: int) -> np.ndarray:
    """A diatomic at ``n`` bond lengths from r_min to r_max (Angstrom), along its reference axis."""
    if molecule.n_atoms != 2:
        raise InputError(f"a bond scan needs a diatomic; {molecule.name} has {molecule.n_atoms} atoms")
    if not 0.1 <= r_min_a < r_max_a:
        raise InputError(f"bond scan range must satisfy 0.1 <= r_min < r_max (Angstrom); got {r_min_a}, {r_max_a}")
    a, b = molecule.positions_a
    axis = (b - a) / np.linalg.norm(b - a)
    return np.stack([np.stack([a, a + r * axis]) for r in np.linspace(r_min_a, r_max_a, n)])


def _rigid_motions(positions_a: np.ndarray, masses: np.ndarray) -> np.ndarray:
    """Orthonormal basis (3N, k) of mass-weighted translations and rotations (k = 5 or 6)."""
    sqrt_m = np.sqrt(masses)
    com = (masses[:, None] * positions_a).sum(axis=0) / masses.sum()
    r = positions_a - com
    vectors = []
    for k in range(3):
        t = np.zeros_like(r)
        t[:, k] = 1.0
        vectors.append((t * sqrt_m[:, None]).ravel())
    for k in range(3):
        axis = np.zeros(3)
        axis[k] = 1.0
        vectors.append((np.cross(axis, r) * sqrt_m[:, None]).ravel())
    u, s, _ = np.linalg.svd(np.array(vectors).T, full_matrices=False)
    return u[:, s > 1e-6 * s.max()]


@dataclass(frozen=True)
class NormalModes:
    """Vibrational modes of a minimum: omega^2 (eV/(Angstrom^2 amu)) and Cartesian displacement vectors."""

    positions_a: np.ndarray
    masses_amu: np.ndarray
    omega2: np.ndarray
    mass_weighted_modes: np.ndarray  # (3N, n_vib), orthonormal

    @property
    def frequencies_cm1(self) -> np.ndarray:
        """Harmonic wavenumbers (cm^-1); an imaginary one (within the minimum's tolerance) is negative."""
        return OMEGA2_TO_CM1 * np.sign(self.omega2) * np.sqrt(np.abs(self.omega2))


def vibrations(positions_a: np.ndarray, masses: np.ndarray,
               hessian_ev_per_a2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """omega^2 (ascending, negative for imaginary modes) and orthonormal mass-weighted modes (3N, n_vib)
    of a Cartesian Hessian, translations and rotations projected out."""
    x = validate_positions(positions_a)
    n3 = x.size
    h = np.asarray(hessian_ev_per_a2, dtype=float)
    if h.shape != (n3, n3):
        raise InputError(f"Hessian must be ({n3}, {n3}) for {len(x)} atoms; got {h.shape}")
    h = 0.5 * (h + h.T)
    inv_sqrt_m = np.repeat(1.0 / np.sqrt(masses), 3)
    hm = h * inv_sqrt_m[:, None] * inv_sqrt_m[None, :]
    rigid = _rigid_motions(x, masses)
    q, _ = np.linalg.qr(np.hstack([rigid, np.eye(n3)]))
    vib = q[:, rigid.shape[1] : n3]  # orthonormal complement of the rigid motions
    omega2, local = np.linalg.eigh(vib.T @ hm @ vib)
    return canonical_modes(omega2, vib @ local)


def canonical_modes(omega2: np.ndarray, modes: np.ndarray,
                    rtol: float = DEGENERACY_RTOL) -> tuple[np.ndarray, np.ndarray]:
    """The same modes in a basis fixed by the Hessian alone, not by the eigensolver.

    An eigensolver may return either sign of a mode and any basis of a degenerate subspace, and
    which one differs between LAPACK builds, i.e. between machines: the same seed then drew other
    geometries (psi4 water dimers generated on two CPUs were mirror images). Here each degenerate
    subspace (``omega2`` equal within ``rtol``, relative) is spanned by the projections of fixed
    pseudo-random reference directions, orthonormalised in order, and every mode has a positive
    overlap with its reference. Within a subspace omega^2 becomes each vector's Rayleigh quotient
    (so they stay equal within ``rtol``). ``omega2`` ascending, ``modes`` (3N, n) orthonormal columns.
    """
    omega2, modes = np.asarray(omega2, dtype=float), np.asarray(modes, dtype=float)
    reference = np.random.default_rng(REFERENCE_SEED).standard_normal(modes.shape)
    out_omega2, out_modes = omega2.copy(), modes.copy()
    start = 0
    while start < omega2.size:
        stop = start + 1
        while stop < omega2.size and abs(omega2[stop] - omega2[start]) <= rtol * max(abs(omega2[stop]),
                                                                                       abs(omega2[start])):
            stop += 1
        v = modes[:, start:stop]
        q, r = np.linalg.qr(v @ (v.T @ reference[:, start:stop]))
        q = q * np.where(np.diag(r) < 0, -1.0, 1.0)
        out_modes[:, start:stop] = q
        out_omega2[start:stop] = ((v.T @ q) ** 2 * omega2[start:stop, None]).sum(axis=0)
        start = stop
    return out_omega2, out_modes


def _is_imaginary(omega2: np.ndarray) -> bool:
    return bool(omega2[0] < -1e-6 * max(abs(omega2).max(), 1e-12))


def _wavenumber(omega2: float) -> str:
    """``"58i"`` or ``"58"`` (cm^-1)."""
    return f"{OMEGA2_TO_CM1 * np.sqrt(abs(omega2)):.0f}" + ("i" if omega2 < 0 else "")


def normal_modes(positions_a: np.ndarray, masses: np.ndarray, hessian_ev_per_a2: np.ndarray) -> NormalModes:
    """Vibrational modes from a Cartesian Hessian, translations and rotations projected out."""
    x = validate_positions(positions_a)
    omega2, modes = vibrations(x, masses, hessian_ev_per_a2)
    if _is_imaginary(omega2):
        raise InputError(f"the geometry is not a minimum (imaginary mode of {_wavenumber(omega2[0])} cm^-1); "
                         "optimise it first")
    return NormalModes(x, np.asarray(masses, float), np.clip(omega2, 1e-12, None), modes)


def thermal_samples(modes: NormalModes, temperature_k: float, n: int, seed: int, *,
                    max_distance_change: float | None = None) -> np.ndarray:
    """``n`` geometries from the classical harmonic distribution at ``temperature_k``.

    ``max_distance_change``: redraw (from the same seeded stream) every sample that changes an
    interatomic distance by more than this fraction of its value at the minimum. Displacements
    along rectilinear normal modes are straight lines, so a soft libration (a water dimer's
    30-200 cm^-1 modes at 300 K) can stretch a bond to 5 A or push atoms together; the bound
    truncates that tail. Samples that keep it are returned unchanged and in order.
    """
    if temperature_k <= 0:
        raise InputError(f"temperature must be positive (K); got {temperature_k}")
    rng = np.random.default_rng(seed)
    kt = BOLTZMANN_EV_PER_K * temperature_k
    inv_sqrt_m = np.repeat(1.0 / np.sqrt(modes.masses_amu), 3)

    def draw(k: int) -> np.ndarray:
        q = rng.standard_normal((k, modes.omega2.size)) * np.sqrt(kt / modes.omega2)
        return modes.positions_a + ((q @ modes.mass_weighted_modes.T) * inv_sqrt_m).reshape(k, *modes.positions_a.shape)

    if max_distance_change is None:
        return draw(n)
    ref = _pair_distances(modes.positions_a)
    kept, drawn = [], 0
    while sum(len(k) for k in kept) < n:
        if drawn >= MAX_DRAWS_PER_SAMPLE * n:
            raise InputError(
                f"only {sum(len(k) for k in kept)} of {drawn} thermal samples at {temperature_k:g} K keep every "
                f"interatomic distance within {max_distance_change:.0%} of the minimum's: the harmonic picture fails "
                f"for its soft modes (lowest {modes.frequencies_cm1[0]:.0f} cm^-1); lower the temperature")
        batch = draw(n if drawn == 0 else max(n, 64))
        drawn += len(batch)
        change = np.abs(_pair_distances(batch) / ref - 1.0).max(axis=-1)
        kept.append(batch[change <= max_distance_change])
    return np.concatenate(kept)[:n]


def _pair_distances(positions_a: np.ndarray) -> np.ndarray:
    """Distances of every atom pair i < j, for one geometry or a batch (last axis: pairs)."""
    i, j = np.triu_indices(positions_a.shape[-2], k=1)
    return np.linalg.norm(positions_a[..., i, :] - positions_a[..., j, :], axis=-1)


def finite_difference_hessian(energy_gradient: EnergyGradient, positions_a: np.ndarray,
                              step_a: float = HESSIAN_STEP_A) -> np.ndarray:
    """Cartesian Hessian (eV/Angstrom^2) by central differences of analytic gradients (6N calls)."""
    x = validate_positions(positions_a)
    n3 = x.size
    h = np.zeros((n3, n3))
    for k in range(n3):
        d = np.zeros(n3)
        d[k] = step_a
        _, gp = energy_gradient(x + d.reshape(x.shape))
        _, gm = energy_gradient(x - d.reshape(x.shape))
        h[k] = (np.asarray(gp) - np.asarray(gm)).ravel() / (2 * step_a)
    return 0.5 * (h + h.T)


def optimize_geometry(energy_gradient: EnergyGradient, positions_a: np.ndarray, *,
                      fmax_ev_per_a: float = 1e-4, max_steps: int = 200,
                      max_step_a: float = 0.05) -> np.ndarray:
    """A local minimum by gradient-only BFGS (as ASE's ``BFGS``); ConvergenceError if fmax is not reached.

    Steps use gradients only, never energy line searches: DFT energies on atom-centred grids
    carry ~1e-7 Eh of grid noise that stalls line searches long before the forces are small.
    The inverse Hessian starts at 1/70 A^2/eV (a typical bond stiffness); steps are capped at
    ``max_step_a`` per atom. Net force and torque are projected out of every gradient: they
    only move the molecule rigidly, and a DFT grid that moves with the atoms leaves a spurious
    net force (~1e-3 eV/A in psi4's default grid) that would otherwise drive it away forever.
    """
    x = validate_positions(positions_a).copy()
    shape = x.shape
    unit_masses = np.ones(shape[0])

    def gradient(flat: np.ndarray) -> np.ndarray:
        g = np.asarray(energy_gradient(flat.reshape(shape))[1], dtype=float).ravel()
        rigid = _rigid_motions(flat.reshape(shape), unit_masses)
        return g - rigid @ (rigid.T @ g)

    flat = x.ravel()
    g = gradient(flat)
    inv_h = np.eye(flat.size) / 70.0
    for _ in range(max_steps):
        if np.abs(g).max() <= fmax_ev_per_a:
            return flat.reshape(shape)
        step = -inv_h @ g
        longest = np.linalg.norm(step.reshape(shape), axis=1).max()
        if longest > max_step_a:
            step *= max_step_a / longest
        new = flat + step
        g_new = gradient(new)
        s, y = new - flat, g_new - g
        sy = float(s @ y)
        if sy > 1e-12:  # curvature condition; otherwise keep the old inverse Hessian
            rho = 1.0 / sy
            v = np.eye(flat.size) - rho * np.outer(s, y)
            inv_h = v @ inv_h @ v.T + rho * np.outer(s, s)
        flat, g = new, g_new
    fmax = float(np.abs(g).max())
    if fmax > fmax_ev_per_a:
        raise ConvergenceError(f"geometry optimisation stopped at max force {fmax:.2e} eV/A after {max_steps} "
                               "steps; raise max_steps or start nearer a minimum")
    return flat.reshape(shape)


def minimum_normal_modes(energy_gradient: EnergyGradient, positions_a: np.ndarray, masses: np.ndarray, *,
                         hessian_step_a: float = HESSIAN_STEP_A, max_restarts: int = 2, kick_a: float = 0.1,
                         fmax_ev_per_a: float = 1e-4) -> NormalModes:
    """Optimise, then the normal modes of the finite-difference Hessian; at a saddle point, step
    along the imaginary mode (largest atom displacement ``kick_a``, to the side of lower energy;
    on a tie, as between mirror images, to the side of the mode's canonical sign) and optimise
    again, at most ``max_restarts`` times, before giving up with InputError.

    Gradient-only BFGS keeps any symmetry the start has, so from a symmetric start it can stop
    on a saddle that only a symmetry-breaking step leaves: the S22 water dimer is Cs, and at
    B3LYP/6-31G* its Cs optimum has an imaginary A'' mode (~55i cm^-1, on finer grids too).
    """
    masses = np.asarray(masses, dtype=float)
    x = optimize_geometry(energy_gradient, positions_a, fmax_ev_per_a=fmax_ev_per_a)
    history = []
    for _ in range(max_restarts + 1):
        hessian = finite_difference_hessian(energy_gradient, x, step_a=hessian_step_a)
        omega2, modes = vibrations(x, masses, hessian)
        if not _is_imaginary(omega2):
            return NormalModes(x, masses, np.clip(omega2, 1e-12, None), modes)
        history.append(_wavenumber(omega2[0]))
        if len(history) > max_restarts:
            break
        step = (modes[:, 0] / np.repeat(np.sqrt(masses), 3)).reshape(x.shape)
        step *= kick_a / np.linalg.norm(step, axis=1).max()
        # Downhill: the lower side, unless the two are equal up to noise (a mirror-symmetric saddle), where noise
        # would pick the side and so the dataset's enantiomer; then the side of the mode's canonical sign.
        e_plus, e_minus = energy_gradient(x + step)[0], energy_gradient(x - step)[0]
        x = x - step if e_minus < e_plus - SIDE_TIE_EV else x + step
        x = optimize_geometry(energy_gradient, x, fmax_ev_per_a=fmax_ev_per_a)
    raise InputError(
        f"the geometry is not a minimum (imaginary mode of {history[-1]} cm^-1) after {max_restarts} downhill "
        f"restart(s) (imaginary modes found: {', '.join(history)} cm^-1); start from another geometry, or if the "
        "gradients are noisy (a coarse DFT grid) use a finer grid or a larger Hessian step")
