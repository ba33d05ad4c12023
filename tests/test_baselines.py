"""The KRR baseline: forces are minus the gradient of its energy; it keeps the molecule's symmetries."""

from __future__ import annotations

import numpy as np

from qff_core.baselines import fit_kernel_ridge
from qff_core.molecules import builtin_molecule
from qff_core.symmetry import permute_atoms, random_rotation


def morse_energy(x: np.ndarray) -> np.ndarray:
    """A smooth, symmetric toy energy (eV) of H2O geometries: Morse O-H bonds plus an H-H term."""
    def r(a, b):
        return np.linalg.norm(x[:, a] - x[:, b], axis=-1)
    morse = lambda d, d0: (1 - np.exp(-2.0 * (d - d0))) ** 2  # noqa: E731
    return morse(r(0, 1), 0.96) + morse(r(0, 2), 0.96) + 0.3 * morse(r(1, 2), 1.52)


def test_krr_forces_are_minus_the_gradient_and_symmetric(rng):
    h2o = builtin_molecule("h2o")
    X = h2o.positions_a + rng.normal(0, 0.04, (60, 3, 3))
    krr = fit_kernel_ridge(h2o, X, morse_energy(X), gammas=(0.1,), alphas=(1e-6,))  # smooth: clean differences
    test = h2o.positions_a + rng.normal(0, 0.04, (5, 3, 3))
    e, f = krr.energies_forces(test)
    assert np.mean(np.abs(e - morse_energy(test))) < 0.01  # it learned something
    h = 1e-4
    for a in range(3):
        for c in range(3):
            xp, xm = test.copy(), test.copy()
            xp[:, a, c] += h
            xm[:, a, c] -= h
            fd = -(krr.energies_forces(xp)[0] - krr.energies_forces(xm)[0]) / (2 * h)
            assert np.allclose(f[:, a, c], fd, atol=1e-7)
    R = random_rotation(rng)
    e_rot, f_rot = krr.energies_forces(test @ R.T + 3.0)
    assert np.allclose(e_rot, e, atol=1e-10) and np.allclose(f_rot, f @ R.T, atol=1e-8)
    swap = (0, 2, 1)
    e_perm, _ = krr.energies_forces(np.stack([permute_atoms(x, swap) for x in test]))
    assert np.allclose(e_perm, e, atol=1e-10)
