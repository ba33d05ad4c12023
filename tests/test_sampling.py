"""Samplers: real HF normal modes of water, the thermal distribution, scans, rotations."""

from __future__ import annotations

import numpy as np
import pytest

from qff_core.errors import ConvergenceError, InputError
from qff_core.molecules import builtin_molecule
from qff_core.reference import CalculationRequest, get_engine
from qff_core.sampling import (
    NormalModes,
    bond_scan,
    canonical_modes,
    finite_difference_hessian,
    masses_amu,
    minimum_normal_modes,
    normal_modes,
    optimize_geometry,
    rigid_rotations,
    thermal_samples,
    vibrations,
)
from qff_core.units import BOLTZMANN_EV_PER_K

H2O = builtin_molecule("h2o")


def hf_energy_gradient(x: np.ndarray) -> tuple[float, np.ndarray]:
    r = get_engine("pyscf").compute(CalculationRequest.create(H2O.symbols, x, "hf", "6-31g", convergence_hartree=1e-11))
    return r.energy_ev, -r.forces_ev_per_a


@pytest.fixture(scope="module")
def water_modes():
    x = optimize_geometry(hf_energy_gradient, H2O.positions_a)
    return normal_modes(x, masses_amu(H2O.symbols), finite_difference_hessian(hf_energy_gradient, x))


def test_hf_water_minimum_and_frequencies(water_modes):
    x = water_modes.positions_a
    assert np.linalg.norm(x[1] - x[0]) == pytest.approx(0.9496, abs=5e-4)  # HF/6-31G r(OH)
    assert np.abs(hf_energy_gradient(x)[1]).max() < 1.1e-4
    # HF/6-31G harmonic wavenumbers of water (bend, symmetric, antisymmetric stretch).
    assert water_modes.frequencies_cm1 == pytest.approx([1737, 3988, 4145], abs=5)


def test_thermal_samples_follow_the_harmonic_distribution(water_modes):
    t = 500.0
    samples = thermal_samples(water_modes, t, 4000, seed=3)
    m = water_modes.masses_amu
    # No net translation, and the mode coordinates have variance kT / omega^2.
    com = (samples * m[None, :, None]).sum(axis=1) / m.sum()
    com0 = (water_modes.positions_a * m[:, None]).sum(axis=0) / m.sum()
    assert np.abs(com - com0).max() < 1e-12
    dx = (samples - water_modes.positions_a).reshape(len(samples), -1) * np.repeat(np.sqrt(m), 3)
    q = dx @ water_modes.mass_weighted_modes
    expected = BOLTZMANN_EV_PER_K * t / water_modes.omega2
    assert np.allclose(q.var(axis=0) / expected, 1.0, atol=0.08)  # 4000 samples: ~2% std error
    assert np.array_equal(samples, thermal_samples(water_modes, t, 4000, seed=3))
    assert not np.array_equal(samples, thermal_samples(water_modes, t, 4000, seed=4))


def test_thermal_samples_keep_distances_within_the_bound(water_modes):
    """Redraws replace samples that stretch or squeeze a distance too far; kept ones are unchanged."""
    x0 = water_modes.positions_a
    ref = np.linalg.norm(x0[:, None] - x0[None], axis=-1)[np.triu_indices(3, 1)]

    def worst(samples):
        d = np.linalg.norm(samples[:, :, None] - samples[:, None], axis=-1)[:, *np.triu_indices(3, 1)]
        return np.abs(d / ref - 1).max(axis=1)

    plain = thermal_samples(water_modes, 2000.0, 300, seed=5)
    bounded = thermal_samples(water_modes, 2000.0, 300, seed=5, max_distance_change=0.1)
    assert worst(plain).max() > 0.1 and worst(bounded).max() <= 0.1 and len(bounded) == 300
    kept = plain[worst(plain) <= 0.1]
    assert np.array_equal(bounded[: len(kept)], kept)  # the first draw's good samples, in order, then redraws
    assert np.array_equal(bounded, thermal_samples(water_modes, 2000.0, 300, seed=5, max_distance_change=0.1))
    # A bound that nothing violates changes nothing (datasets sampled before the bound stay reproducible).
    assert np.array_equal(thermal_samples(water_modes, 500.0, 300, seed=5, max_distance_change=0.25),
                          thermal_samples(water_modes, 500.0, 300, seed=5))
    with pytest.raises(InputError, match="lower the temperature"):
        thermal_samples(water_modes, 2000.0, 10, seed=5, max_distance_change=1e-4)


def test_sampler_input_errors(water_modes):
    n3 = water_modes.positions_a.size
    with pytest.raises(InputError, match="not a minimum"):
        normal_modes(water_modes.positions_a, water_modes.masses_amu, -np.eye(n3))
    with pytest.raises(InputError, match="temperature"):
        thermal_samples(water_modes, 0.0, 3, seed=0)
    with pytest.raises(InputError, match="Hessian must be"):
        normal_modes(water_modes.positions_a, water_modes.masses_amu, np.eye(4))
    with pytest.raises(ConvergenceError, match="max force"):
        optimize_geometry(hf_energy_gradient, H2O.positions_a + 0.1, max_steps=1)


def test_bond_scan_and_rigid_rotations():
    lih = builtin_molecule("lih")
    scan = bond_scan(lih, 1.2, 2.4, 7)
    assert np.allclose(np.linalg.norm(scan[:, 1] - scan[:, 0], axis=1), np.linspace(1.2, 2.4, 7))
    with pytest.raises(InputError, match="diatomic"):
        bond_scan(H2O, 1.0, 2.0, 3)
    rot = rigid_rotations(H2O.positions_a, 5, seed=1)
    d0 = np.linalg.norm(H2O.positions_a[:, None] - H2O.positions_a[None], axis=-1)
    for x in rot:
        assert np.allclose(np.linalg.norm(x[:, None] - x[None], axis=-1), d0)
        assert np.allclose(x.mean(axis=0), H2O.positions_a.mean(axis=0))
    assert np.array_equal(rot, rigid_rotations(H2O.positions_a, 5, seed=1))


def test_optimiser_ignores_a_spurious_net_force():
    """A grid-like constant net force (as DFT grids give) must not drive the optimiser away:
    bond springs to 1.0 A plus a uniform force on every atom converge to the spring minimum."""
    x0 = np.array([[0.0, 0.0, 0.0], [1.2, 0.0, 0.0], [0.0, 0.9, 0.3]])
    pairs = [(0, 1), (0, 2), (1, 2)]
    rest = {(0, 1): 1.0, (0, 2): 1.0, (1, 2): 1.5}

    def springs(x):
        e, g = 0.0, np.zeros_like(x)
        for i, j in pairs:
            d = x[i] - x[j]
            r = np.linalg.norm(d)
            e += 5.0 * (r - rest[i, j]) ** 2
            g[i] += 10.0 * (r - rest[i, j]) * d / r
            g[j] -= 10.0 * (r - rest[i, j]) * d / r
        return e, g + np.array([1e-3, -2e-3, 5e-4])  # the same spurious gradient on every atom

    x = optimize_geometry(springs, x0, fmax_ev_per_a=1e-6)
    for (i, j), r in rest.items():
        assert abs(np.linalg.norm(x[i] - x[j]) - r) < 1e-6


def bent_triatomic(x: np.ndarray) -> tuple[float, np.ndarray]:
    """Bond springs to 1 A and a bend term k (cos t - cos 104.5 deg)^2 at atom 0: the linear
    geometry is a stationary point (a saddle) that gradient-only BFGS never leaves by itself."""
    u, v = x[1] - x[0], x[2] - x[0]
    ru, rv = np.linalg.norm(u), np.linalg.norm(v)
    cos, cos0 = u @ v / (ru * rv), np.cos(np.deg2rad(104.5))
    e = 20.0 * ((ru - 1.0) ** 2 + (rv - 1.0) ** 2) + 3.0 * (cos - cos0) ** 2
    du = 40.0 * (ru - 1.0) * u / ru + 6.0 * (cos - cos0) * (v / (ru * rv) - cos * u / ru**2)
    dv = 40.0 * (rv - 1.0) * v / rv + 6.0 * (cos - cos0) * (u / (ru * rv) - cos * v / rv**2)
    return e, np.array([-(du + dv), du, dv])


def test_a_saddle_is_left_downhill_and_reoptimised_to_the_minimum():
    linear = np.array([[0.0, 0.0, 0.0], [1.1, 0.0, 0.0], [-0.95, 0.0, 0.0]])
    masses = masses_amu(("O", "H", "H"))
    with pytest.raises(InputError, match=r"not a minimum \(imaginary mode of \d+i cm\^-1\) after 0 downhill"):
        minimum_normal_modes(bent_triatomic, linear, masses, max_restarts=0)
    modes = minimum_normal_modes(bent_triatomic, linear, masses)
    x = modes.positions_a
    u, v = x[1] - x[0], x[2] - x[0]
    angle = np.degrees(np.arccos(u @ v / (np.linalg.norm(u) * np.linalg.norm(v))))
    assert angle == pytest.approx(104.5, abs=0.05)
    assert np.linalg.norm(u) == pytest.approx(1.0, abs=1e-3) and np.linalg.norm(v) == pytest.approx(1.0, abs=1e-3)
    assert modes.omega2.size == 3 and modes.omega2.min() > 1e-3  # bent: 3 real vibrations, no imaginary one


def test_a_mirror_symmetric_saddle_is_left_to_the_same_side_whatever_the_noise():
    """The two downhill sides of a symmetric saddle are mirror images with equal energies, so the
    lower one was chosen by SCF noise, and psi4 on two CPUs made water dimers of opposite hand."""
    linear = np.array([[0.0, 0.0, 0.0], [1.1, 0.0, 0.0], [-0.95, 0.0, 0.0]])
    masses = masses_amu(("O", "H", "H"))

    def noisy(eta):  # noise that favours one side: a uniform force, which the optimiser projects out
        def energy_gradient(x):
            e, g = bent_triatomic(x)
            return e + eta * x[:, 1:].sum(), g + eta * np.array([0.0, 1.0, 1.0])
        return energy_gradient

    minima = [minimum_normal_modes(noisy(eta), linear, masses).positions_a for eta in (1e-9, -1e-9)]
    assert np.abs(minima[0] - minima[1]).max() < 1e-6
    # Not trivially: the two bent minima it can reach are far apart.
    assert np.abs(minima[0][1:, 1:]).max() > 0.1


def test_normal_modes_do_not_depend_on_the_eigensolvers_choices():
    """Signs and degenerate bases (which LAPACK builds choose differently) do not reach the modes,
    and so not the seeded samples: the same seed draws the same geometries on every machine."""
    rng = np.random.default_rng(7)
    omega2 = np.array([-0.2, 0.5, 0.5, 0.5, 1.3, 2.0, 2.0])  # an imaginary mode, a triple, a pair
    groups = [slice(1, 4), slice(5, 7)]
    basis, _ = np.linalg.qr(rng.standard_normal((12, omega2.size)))
    ref_omega2, ref_modes = canonical_modes(omega2, basis)
    for _ in range(4):  # another, equally valid, eigendecomposition of the same Hessian
        other = basis * rng.choice([-1.0, 1.0], size=omega2.size)
        for g in groups:
            rotation, _ = np.linalg.qr(rng.standard_normal((g.stop - g.start,) * 2))
            other[:, g] = other[:, g] @ rotation
        o2, m = canonical_modes(omega2, other)
        assert np.allclose(m, ref_modes, atol=1e-12) and np.allclose(o2, ref_omega2, atol=1e-12)
    assert np.allclose(ref_omega2, omega2, atol=1e-12)  # exact degeneracy: nothing mixed that differs
    assert np.allclose(ref_modes.T @ ref_modes, np.eye(omega2.size), atol=1e-12)
    assert not np.allclose(np.abs(ref_modes[:, groups[0]]), np.abs(basis[:, groups[0]]), atol=1e-3)

    # Through vibrations(): a finite-difference-like Hessian splits the degeneracy by noise, and its
    # eigenvectors follow the noise; the canonical modes and the samples drawn with them do not.
    positions = np.array([[0.0, 0.0, 0.0], [0.63, 0.63, 0.63], [-0.63, -0.63, 0.63], [-0.63, 0.63, -0.63],
                          [0.63, -0.63, -0.63]])  # CH4: a triple, a pair, a triple and a single
    ch4_masses = masses_amu(("C", "H", "H", "H", "H"))

    def springs_hessian(x):
        """Harmonic bond springs between every pair at their current lengths (Td: degenerate modes)."""
        h = np.zeros((x.size, x.size))
        for i in range(len(x)):
            for j in range(i + 1, len(x)):
                u = (x[j] - x[i]) / np.linalg.norm(x[j] - x[i])
                k = 30.0 if i == 0 else 3.0
                block = k * np.outer(u, u)
                for a, b, sign in ((i, i, 1), (j, j, 1), (i, j, -1), (j, i, -1)):
                    h[3 * a : 3 * a + 3, 3 * b : 3 * b + 3] += sign * block
        return h

    h = springs_hessian(positions)
    found = []
    for seed in (1, 2):
        noise = np.random.default_rng(seed).standard_normal(h.shape) * 1e-6
        omega2_noisy, modes_noisy = vibrations(positions, ch4_masses, h + noise + noise.T)
        raw = np.linalg.eigh(h + noise + noise.T)[1]
        found.append((omega2_noisy, modes_noisy, raw))
    (o1, m1, raw1), (o2, m2, raw2) = found
    assert np.allclose(o1, o2, rtol=1e-5) and np.allclose(m1, m2, atol=1e-5)
    assert not np.allclose(np.abs(raw1), np.abs(raw2), atol=1e-2)  # the premise: eigh itself follows the noise
    modes = [NormalModes(positions, ch4_masses, o, m) for o, m in ((o1, m1), (o2, m2))]
    assert np.allclose(thermal_samples(modes[0], 500.0, 50, seed=3), thermal_samples(modes[1], 500.0, 50, seed=3),
                       atol=1e-5)
