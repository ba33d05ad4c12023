"""Closed-form gate algebra and statevector kernels shared by the exact simulator's strategies.

Conventions: qubit 0 is the most significant bit of a flat index and axis 0 of a state
tensor; 2x2 matrices have shape (2, 2) or, batched, (2, 2, batch); tensor states have shape
(2,)*n + (batch,). Nothing here calls a matrix exponential.
"""

from __future__ import annotations

from itertools import product

import jax.numpy as jnp
import numpy as np

from qff_core.models.ir import Model, Pair, Singlet

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


def initial_state(model: Model) -> np.ndarray:
    """The prepared state: singlets on their pairs, |0> elsewhere, as an (2,)*n tensor."""
    n = model.n_qubits
    pairs = [g.qubits for g in model.prelude if isinstance(g, Singlet)]
    psi = np.zeros((2,) * n, dtype=np.complex128)
    amp = 2.0 ** (-len(pairs) / 2)
    for bits in product((0, 1), repeat=len(pairs)):
        index = [0] * n
        sign = 1.0
        for (a, b), bit in zip(pairs, bits, strict=True):
            index[a], index[b] = (0, 1) if bit == 0 else (1, 0)
            sign *= 1.0 if bit == 0 else -1.0
        psi[tuple(index)] = sign * amp
    return psi


# ----------------------------------------------------------------------------- tensor kernels


def apply_1q(psi: jnp.ndarray, u: jnp.ndarray, q: int) -> jnp.ndarray:
    """A 2x2 gate on qubit q, elementwise (no dot products): XLA fuses it into one loop."""
    a, b = jnp.take(psi, 0, axis=q), jnp.take(psi, 1, axis=q)
    return jnp.stack([u[0, 0] * a + u[0, 1] * b, u[1, 0] * a + u[1, 1] * b], axis=q)


def apply_cnot(psi: jnp.ndarray, control: int, target: int) -> jnp.ndarray:
    """CNOT as a flip of the target axis in the control-1 half."""
    t = target - (target > control)
    zero = jnp.take(psi, 0, axis=control)
    one = jnp.flip(jnp.take(psi, 1, axis=control), axis=t)
    return jnp.stack([zero, one], axis=control)


def apply_exchange(psi: jnp.ndarray, pairs: tuple[Pair, ...], j: jnp.ndarray) -> jnp.ndarray:
    """Product over disjoint pairs of exp(-i J sigma.sigma) = e^{iJ} (cos 2J - i sin 2J SWAP)."""
    c, s = jnp.cos(2 * j), jnp.sin(2 * j)
    phase = jnp.exp(1j * j)
    for a, b in pairs:
        psi = phase * (c * psi - 1j * s * jnp.swapaxes(psi, a, b))
    return psi


def apply_exchange_sum(psi: jnp.ndarray, eig, j: jnp.ndarray) -> jnp.ndarray:
    """exp(-i J H) from H's eigendecomposition on its support (``heisenberg_sum_eig``)."""
    support, lam, vec = eig
    n, s = psi.ndim - 1, len(support)
    moved = jnp.moveaxis(psi, support, list(range(s)))
    flat = moved.reshape(2**s, -1)
    flat = vec @ (jnp.exp(-1j * j * lam)[:, None] * (vec.T @ flat))
    return jnp.moveaxis(flat.reshape((2,) * n + psi.shape[-1:]), list(range(s)), support)
