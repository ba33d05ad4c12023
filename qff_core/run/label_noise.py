"""Gaussian noise on the training labels (``--label-noise-energy-ev``, ``--label-noise-forces-ev-per-a``): a study
of robustness to noisy reference data (train on noisy labels, validate and test on clean ones).

The noise of a sample is a pure function of (noise seed, dataset index of the sample): a counter-based
generator (SplitMix64 hashing of seed, index and component, Box-Muller to normal deviates), vectorised. It
does not depend on batch order, on the split's size or on the other samples, so a resumed run, a retrained
run on a grown split and a learning curve (``--n-train``) give every shared sample the same noise. One
standard normal draw per label is scaled by the setting, so runs at different noise levels with the same seed
see the same pattern at different amplitudes (common random numbers: smoother noise-level curves). Zero
noise returns the labels untouched (the same arrays, bit for bit).
"""

from __future__ import annotations

import numpy as np

NOISE_SEED_OFFSET = 1_000_003
"""The noise seed of a run without ``label_noise_seed``: ``seed + NOISE_SEED_OFFSET`` (not the split's seed)."""

_CHUNK = 65536  # samples hashed at once: bounds the temporaries on datasets of 10^5..10^6 samples
_MASK64 = (1 << 64) - 1
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's step and finaliser on an array of uint64 (a bijection; wraps modulo 2^64)."""
    x = x + _GOLDEN
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _uniform(key: np.ndarray, counters: np.ndarray) -> np.ndarray:
    """Uniform deviates in (0, 1), one per (key row, counter): 53 random bits of the hash of both."""
    bits = _splitmix64(key[:, None] ^ counters[None, :]) >> np.uint64(11)
    return (bits.astype(np.float64) + 0.5) * 2.0**-53


def standard_normal_labels(seed: int, indices: np.ndarray, n_values: int) -> np.ndarray:
    """Standard normal deviates (len(indices), n_values): row k depends only on (seed, indices[k])."""
    indices = np.asarray(indices, dtype=np.int64)
    if indices.size and indices.min() < 0:
        raise ValueError("dataset indices must be non-negative")
    out = np.empty((indices.size, n_values))
    seed_key = _splitmix64(np.array([seed & _MASK64], dtype=np.uint64))
    counters = np.arange(2 * n_values, dtype=np.uint64)
    for start in range(0, indices.size, _CHUNK):
        key = _splitmix64(seed_key ^ indices[start:start + _CHUNK].astype(np.uint64))
        u = _uniform(key, counters)
        out[start:start + _CHUNK] = np.sqrt(-2.0 * np.log(u[:, :n_values])) * np.cos(2.0 * np.pi * u[:, n_values:])
    return out


def noisy_labels(energies_ev: np.ndarray, forces_ev_per_a: np.ndarray, indices: np.ndarray, *, energy_std_ev: float,
                 forces_std_ev_per_a: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Energies (n,) eV and forces (n, atoms, 3) eV/Angstrom of the samples ``indices`` with Gaussian noise of these
    standard deviations added (per energy, per force component); the inputs themselves when both are zero."""
    if energy_std_ev < 0 or forces_std_ev_per_a < 0:
        raise ValueError(f"label noise must be non-negative; got {energy_std_ev} eV, {forces_std_ev_per_a} eV/A")
    if energy_std_ev == 0 and forces_std_ev_per_a == 0:
        return energies_ev, forces_ev_per_a
    shape = forces_ev_per_a.shape
    z = standard_normal_labels(seed, indices, 1 + int(np.prod(shape[1:])))  # column 0: the energy, then forces
    energies = energies_ev + energy_std_ev * z[:, 0] if energy_std_ev else energies_ev
    forces = forces_ev_per_a + forces_std_ev_per_a * z[:, 1:].reshape(shape) if forces_std_ev_per_a else forces_ev_per_a
    return energies, forces


__all__ = ["NOISE_SEED_OFFSET", "noisy_labels", "standard_normal_labels"]
