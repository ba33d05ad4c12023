"""Gate algebra both compilers use: closed-form gates, 2^n permutation and Heisenberg matrices,
and the exact parameter-shift rules of the gates' generators.

The exact simulator applies these matrices; the Qiskit compiler uses the same closed forms to
derive its classical angle maps and the eigenbases of orbit-summed generators, and attaches a
``ShiftRule`` to every circuit angle, so the two compilers share one definition of every gate.
Conventions: qubit 0 is the most significant bit of a flat index; 2x2 matrices have shape
(2, 2) or, batched, (2, 2, batch). Nothing here calls a matrix exponential.

Shift rules: a gate exp(-i p G) makes an expectation value a trigonometric polynomial in p
whose frequencies are the positive differences of G's eigenvalues. With R frequencies, 2R
evaluations at symmetric shifts give df/dp exactly (Wierichs et al., Quantum 6, 677, 2022);
one frequency is the familiar two-term rule. No finite differences anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import gcd

import jax
import jax.numpy as jnp
import numpy as np

from qff_core.errors import ModelBuildError
from qff_core.models.ir import Pair


def enable_x64() -> None:
    """Turn on float64 in JAX (idempotent); qff's physics needs it."""
    jax.config.update("jax_enable_x64", True)


# ----------------------------------------------------------------------------- 2x2 gates


def su2_encoding(v: jnp.ndarray, alpha: jnp.ndarray) -> jnp.ndarray:
    """exp(-i alpha v.sigma / 2) = cos(phi/2) I - i sin(phi/2) n.sigma, phi = alpha |v|.

    ``v`` has shape (3, ...). Written with sin(phi/2)/|v| = (alpha/2) sinc(phi/(2 pi)) so that
    it and its derivatives stay finite for v -> 0.
    """
    r2 = jnp.sum(v * v, axis=0)
    r = jnp.where(r2 > 0, jnp.sqrt(jnp.where(r2 > 0, r2, 1.0)), 0.0)
    half = 0.5 * alpha * r
    c = jnp.cos(half)
    k = 0.5 * alpha * jnp.sinc(half / jnp.pi)
    nx, ny, nz = k * v[0], k * v[1], k * v[2]
    return jnp.array([[c - 1j * nz, -1j * nx - ny], [-1j * nx + ny, c + 1j * nz]])


def axis_rotation(axis: int, angle: jnp.ndarray) -> jnp.ndarray:
    """RX, RY or RZ(angle) = exp(-i angle P / 2) as a 2x2 matrix (batched over angle's shape)."""
    c, s = jnp.cos(0.5 * angle), jnp.sin(0.5 * angle)
    zero = jnp.zeros_like(c)
    if axis == 0:
        return jnp.array([[c + 0j, -1j * s], [-1j * s, c + 0j]])
    if axis == 1:
        return jnp.array([[c, -s], [s, c]]) + 0j
    return jnp.array([[c - 1j * s, zero], [zero, c + 1j * s]])


def matmul2(a: jnp.ndarray, b: jnp.ndarray) -> jnp.ndarray:
    """Product of 2x2 matrices, each plain (2, 2) or batched (2, 2, batch)."""
    return jnp.einsum("ij...,jk...->ik...", a, b)


# ----------------------------------------------------------------------------- 2^n matrices


def swap_matrix(a: int, b: int, n: int) -> np.ndarray:
    """SWAP of qubits a and b on n qubits as a 2^n permutation matrix."""
    idx = np.arange(2**n)
    ba, bb = n - 1 - a, n - 1 - b
    flip = ((idx >> ba) ^ (idx >> bb)) & 1
    out = np.zeros((2**n, 2**n))
    out[idx ^ (flip << ba) ^ (flip << bb), idx] = 1.0
    return out


def cnot_matrix(control: int, target: int, n: int) -> np.ndarray:
    """CNOT on n qubits as a 2^n permutation matrix."""
    idx = np.arange(2**n)
    out = np.zeros((2**n, 2**n))
    out[idx ^ (((idx >> (n - 1 - control)) & 1) << (n - 1 - target)), idx] = 1.0
    return out


def heisenberg_matrix(pairs: tuple[Pair, ...], n: int) -> np.ndarray:
    """sum over pairs of sigma_i.sigma_j = 2 SWAP_ij - 1, on n qubits."""
    return sum(2.0 * swap_matrix(a, b, n) - np.eye(2**n) for a, b in pairs)


def heisenberg_sum_eig(pairs: tuple[Pair, ...]) -> tuple[list[int], np.ndarray, np.ndarray]:
    """Support qubits, eigenvalues and real eigenvectors of sum sigma_i.sigma_j on its support."""
    support = sorted({q for p in pairs for q in p})
    local = {q: i for i, q in enumerate(support)}
    lam, vec = np.linalg.eigh(heisenberg_matrix(tuple((local[a], local[b]) for a, b in pairs), len(support)))
    return support, lam, vec


def pair_components(pairs: tuple[Pair, ...]) -> list[tuple[Pair, ...]]:
    """The pairs grouped into connected components (pairs that share no qubit, directly or through others, commute).

    An orbit-summed generator often acts on disjoint groups of qubits (the water dimer's: two 3-qubit groups), so
    exp(-i J H) is a product of small factors, one per component. Components and their pairs keep the given order."""
    groups: list[set[int]] = []
    for pair in pairs:
        touching = [g for g in groups if g & set(pair)]
        groups = [g for g in groups if g not in touching] + [set(pair).union(*touching)]
    components = [tuple(p for p in pairs if p[0] in g) for g in groups]
    return sorted(components, key=lambda c: pairs.index(c[0]))


# ----------------------------------------------------------------------------- shift rules

SPECTRUM_DECIMALS = 9
"""Eigenvalues are rounded to this many decimals before taking differences."""
MAX_RULE_CONDITION = 1e8
"""A shift rule whose linear system is worse conditioned than this is refused."""


@dataclass(frozen=True)
class ShiftRule:
    """df/dp = sum_k coeffs[k] * f(p + shifts[k]) for every p (radians of the gate's parameter)."""

    shifts: tuple[float, ...]
    coeffs: tuple[float, ...]

    def __len__(self) -> int:
        return len(self.shifts)

    def compose(self, other: ShiftRule) -> ShiftRule:
        """The rule for the mixed second derivative when both rules act on the same parameter.

        Terms with equal total shift are merged; a zero shift is kept (it is the unshifted value).
        """
        merged: dict[float, float] = {}
        for s1, c1 in zip(self.shifts, self.coeffs, strict=True):
            for s2, c2 in zip(other.shifts, other.coeffs, strict=True):
                key = round(s1 + s2, 12)
                merged[key] = merged.get(key, 0.0) + c1 * c2
        items = sorted((s, c) for s, c in merged.items() if abs(c) > 1e-15)
        return ShiftRule(tuple(s for s, _ in items), tuple(c for _, c in items))


def frequency_rule(frequencies: tuple[float, ...]) -> ShiftRule:
    """The 2R-term rule for f(p) = a0 + sum_r a_r cos(w_r p) + b_r sin(w_r p), w_r in ``frequencies``.

    Commensurate frequencies (integer multiples of a base w0, as for every Heisenberg
    generator) use the equidistant shifts (2mu - 1) pi / (2 R w0) with R = max(w) / w0.
    """
    freqs = sorted({round(float(w), SPECTRUM_DECIMALS) for w in frequencies if w > 10**-SPECTRUM_DECIMALS})
    if not freqs:
        raise ModelBuildError("a gate whose generator has a single eigenvalue has no gradient to shift for")
    base = _common_base(freqs)
    if base is not None:
        omegas = [base * k for k in range(1, round(freqs[-1] / base) + 1)]
        shifts = [(2 * mu - 1) * np.pi / (2 * len(omegas) * base) for mu in range(1, len(omegas) + 1)]
    else:
        omegas = freqs
        shifts = [(2 * mu - 1) * np.pi / (2 * len(omegas) * freqs[-1]) for mu in range(1, len(omegas) + 1)]
    # Antisymmetric coefficients y(-s) = -y(s) cancel the constant and cosine terms; the
    # sine terms fix y: sum_mu 2 y_mu sin(w_r s_mu) = w_r.
    a = np.array([[2.0 * np.sin(w * s) for s in shifts] for w in omegas])
    if np.linalg.cond(a) > MAX_RULE_CONDITION:
        raise ModelBuildError(f"no well-conditioned shift rule for frequencies {freqs}")
    y = np.linalg.solve(a, np.array(omegas))
    return ShiftRule(tuple(shifts) + tuple(-s for s in shifts), tuple(y) + tuple(-y))


def _common_base(freqs: list[float]) -> float | None:
    """The largest w0 with every frequency an integer multiple of it (up to 64 multiples), if any."""
    smallest = freqs[0]
    for denominator in range(1, 9):
        unit = smallest / denominator
        ratios = [w / unit for w in freqs]
        if all(abs(r - round(r)) < 1e-7 for r in ratios):
            ints = [round(r) for r in ratios]
            g = 0
            for k in ints:
                g = gcd(g, k)
            w0 = unit * g
            return w0 if freqs[-1] / w0 <= 64 else None
    return None


PAULI_ROTATION = ShiftRule((np.pi / 2, -np.pi / 2), (0.5, -0.5))
"""exp(-i p P / 2), P a Pauli string: eigenvalues +-1/2, one frequency."""
HEISENBERG_PAIR = frequency_rule((4.0,))
"""exp(-i J sigma_i.sigma_j): eigenvalues {1, -3}, one frequency 4: df/dJ = 2 [f(J + pi/8) - f(J - pi/8)]."""
Z_STRING = frequency_rule((2.0,))
"""exp(-i p Z_S), Z_S a string of Z's: eigenvalues +-1, one frequency 2: df/dp = f(p + pi/4) - f(p - pi/4)."""
