"""The frame a rotation-invariant model is evaluated in on a circuit: one that keeps every encoded atom off z.

An encoding gate's position derivatives come from the shift derivatives of three of its five
units (``angles.encode_coefficients``). For an atom on the z axis (polar angle g = 0 or pi)
those units' rotation axes become linearly dependent whenever phi = alpha |x| is near a
multiple of pi: the linear map from shift derivatives to d<O>/dx blows up, and shot noise with
it (LiH on z at 1.8 A: force standard deviations of 220 kcal/mol/A at 1e4 shots, against 0.9
with the molecule turned off the axis). The best triple's determinant is at least sin(g), so a
frame in which every atom has |x_perp| / |x| >= c bounds the amplification by 1 / c.

For a model that is exactly rotation invariant, evaluating the rotated geometry R x gives the
same energy, and forces R^T F(R x): exact, whatever frame is chosen. The frame is a function of
the geometry (treated as a constant by derivatives); planar configurations (three atoms, or
two relative vectors) and linear ones get a frame with every atom in the xy plane.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def _fibonacci_hemisphere(n: int) -> np.ndarray:
    """``n`` nearly uniform unit vectors with z >= 0 (a direction and its opposite give the same frame)."""
    k = np.arange(n) + 0.5
    z = k / n
    phi = np.pi * (1 + 5**0.5) * k
    rho = np.sqrt(1 - z * z)
    return np.stack([rho * np.cos(phi), rho * np.sin(phi), z], axis=1)


_FIXED_CANDIDATES = np.concatenate([np.eye(3), _fibonacci_hemisphere(128)])
"""Candidate z directions tried for every geometry, besides those built from its atoms."""


def _unit_rows(v: jnp.ndarray, eps: float) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Rows of ``v`` normalised (zero where shorter than ``eps``) and which were long enough."""
    n = jnp.linalg.norm(v, axis=-1)
    ok = n > eps
    return jnp.where(ok[..., None], v / jnp.where(ok, n, 1.0)[..., None], 0.0), ok


def axis_alignment(x: jnp.ndarray, directions: jnp.ndarray) -> jnp.ndarray:
    """max over atoms of |d . x_hat| for each direction d (rows): 0 when every atom is perpendicular to d.

    ``x`` (atoms, 3) relative positions; atoms at the origin carry no direction and are ignored.
    """
    u, _ = _unit_rows(x, 1e-12)
    return jnp.max(jnp.abs(directions @ u.T), axis=1)


def frame_rotation(x: jnp.ndarray) -> jnp.ndarray:
    """(3, 3) proper rotation R whose z axis is the direction least aligned with any atom of ``x`` (atoms, 3).

    Candidates: fixed directions spread over the sphere, the normals of every atom's direction
    with each Cartesian axis (perpendicular to that atom) and of every pair of atom directions
    (perpendicular to both; to all atoms of a planar configuration through the origin). The new
    coordinates are ``R @ x``; R carries no derivative (``stop_gradient``).
    """
    x = jax.lax.stop_gradient(jnp.asarray(x))
    u, _ = _unit_rows(x, 1e-12)
    eye = jnp.eye(3)
    with_axes = jnp.cross(u[:, None, :], eye[None, :, :]).reshape(-1, 3)
    with_pairs = jnp.cross(u[:, None, :], u[None, :, :]).reshape(-1, 3)
    cands, ok = _unit_rows(jnp.concatenate([jnp.asarray(_FIXED_CANDIDATES), with_axes, with_pairs]), 1e-6)
    score = jnp.where(ok, axis_alignment(x, cands), jnp.inf)
    n = cands[jnp.argmin(score)]
    helper = eye[jnp.argmin(jnp.abs(n))]
    a = jnp.cross(helper, n)
    a = a / jnp.linalg.norm(a)
    return jnp.stack([a, jnp.cross(n, a), n])


def axis_clearance(x: np.ndarray) -> float:
    """min over atoms of |x_perp| / |x| in the frame ``frame_rotation`` picks (1 = every atom in the xy plane)."""
    x = jnp.asarray(x, dtype=jnp.float64)
    z = jnp.eye(3)[2:]
    cos = float(axis_alignment(x @ frame_rotation(x).T, z)[0])
    return float(np.sqrt(max(0.0, 1.0 - cos * cos)))


__all__ = ["axis_alignment", "axis_clearance", "frame_rotation"]
