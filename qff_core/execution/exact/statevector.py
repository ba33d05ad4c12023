"""Statevector kernels of the exact simulator's ``tensor`` strategy, and the prepared state.

Tensor states have shape (2,)*n + (batch,); axis q is qubit q (the most significant bit of a
flat index). The gate matrices themselves are in ``execution/gates.py``.
"""

from __future__ import annotations

from itertools import product

import jax.numpy as jnp
import numpy as np

from qff_core.models.ir import Model, Pair, Singlet


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


def apply_exchange_factors(psi: jnp.ndarray, factors, j: jnp.ndarray) -> jnp.ndarray:
    """exp(-i J H) for H a sum over commuting components: one factor per component (``exchange_factors``),
    a lone pair in the SWAP form of ``apply_exchange``, a larger component from its eigendecomposition."""
    for support, lam, vec in factors:
        if lam is None:
            psi = apply_exchange(psi, (tuple(support),), j)
        else:
            psi = apply_exchange_sum(psi, (support, lam, vec), j)
    return psi
