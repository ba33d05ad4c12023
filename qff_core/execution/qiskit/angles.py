"""The classical maps of an encoding gate: exp(-i alpha x.sigma / 2) as five circuit angles, and the exact
linear map from those angles' shift derivatives to d<O>/dx (``encode_coefficients``), in JAX."""

from __future__ import annotations

from itertools import combinations

import jax
import jax.numpy as jnp
import numpy as np

from qff_core.execution.gates import su2_encoding

ENCODE_UNITS = 5
"""Units (gate angles) per encoding gate: RZ(-b) RY(-g) RZ(phi) RY(g) RZ(b)."""
PHI_SLOT = 2
"""The slot of phi = alpha |x| (the only unit whose angle depends on alpha)."""
_OTHER_SLOTS = (0, 1, 3, 4)
_SLOT_CHOICES = tuple((PHI_SLOT, *pair) for pair in combinations(_OTHER_SLOTS, 2))

def _rz3(t):
    c, s = jnp.cos(t), jnp.sin(t)
    return jnp.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _ry3(t):
    c, s = jnp.cos(t), jnp.sin(t)
    return jnp.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


_PAULIS = np.array([[[0, 1], [1, 0]], [[0, -1j], [1j, 0]], [[1, 0], [0, -1]]])


def encode_angles(alpha: jnp.ndarray, x: jnp.ndarray) -> jnp.ndarray:
    """The five unit angles (-b, -g, phi, g, b) of exp(-i alpha x.sigma / 2); x in Angstrom."""
    r2 = jnp.sum(x * x)
    r = jnp.where(r2 > 0, jnp.sqrt(jnp.where(r2 > 0, r2, 1.0)), 0.0)
    rho2 = x[0] ** 2 + x[1] ** 2
    rho = jnp.where(rho2 > 0, jnp.sqrt(jnp.where(rho2 > 0, rho2, 1.0)), 0.0)
    g = jnp.arctan2(rho, x[2])
    b = jnp.where(rho2 > 0, jnp.arctan2(x[1], jnp.where(rho2 > 0, x[0], 1.0)), 0.0)
    return jnp.stack([-b, -g, alpha * r, g, b])


def encode_post_axes(angles: jnp.ndarray) -> jnp.ndarray:
    """(3, 5): the rotation axis of each unit, conjugated by the units after it."""
    rots = [_rz3(angles[0]), _ry3(angles[1]), _rz3(angles[2]), _ry3(angles[3]), _rz3(angles[4])]
    own = [np.array([0.0, 0.0, 1.0]), np.array([0.0, 1.0, 0.0])] * 2 + [np.array([0.0, 0.0, 1.0])]
    axes = []
    after = jnp.eye(3)
    for i in range(ENCODE_UNITS - 1, -1, -1):
        axes.append(after @ own[i])
        after = after @ rots[i]
    return jnp.stack(axes[::-1], axis=1)


def encode_coefficients(alpha: jnp.ndarray, x: jnp.ndarray) -> jnp.ndarray:
    """(5, 3) C with d<O>/dx_k = sum_i C[i, k] d<O>/d(angle_i) for one encoding gate.

    Exact: dPhi/dx_k = (-i w_k.sigma / 2) Phi, and the units' post-gate axes a_i give
    d<O>/d(angle_i) = a_i.g with g the derivative along post-gate rotations, so
    d<O>/dx_k = w_k.g = (A_S^-1 w_k).d_S for any three units S whose axes are independent.
    S always holds phi's unit; the other two are the pair with the largest |det A_S|.
    """
    axes = encode_post_axes(encode_angles(alpha, x))
    u = su2_encoding(x, alpha)
    du = jax.jacfwd(su2_encoding, argnums=0)(x, alpha)  # (2, 2, 3)
    m = jnp.einsum("abk,cb->kac", du, jnp.conj(u))  # dPhi/dx_k Phi^dagger
    w = jnp.real(1j * jnp.einsum("kac,jca->kj", m, _PAULIS))  # (coords, axes)
    choices = np.array(_SLOT_CHOICES)
    dets = jnp.stack([jnp.abs(jnp.linalg.det(axes[:, list(s)])) for s in _SLOT_CHOICES])
    best = jnp.argmax(dets)
    sel = jnp.asarray(choices)[best]
    sub = axes[:, sel]  # (3, 3)
    coeff = jnp.linalg.solve(sub, w.T)  # (3 selected, 3 coords)
    return jnp.zeros((ENCODE_UNITS, 3)).at[sel].set(coeff)
