"""An independent, deliberately naive simulator of the model IR for tests.

Full 2^n x 2^n matrices, every gate built with scipy's matrix exponential from its Pauli
generator, singlets prepared with X, H and CNOT gates. Slow and obviously right; the exact
JAX simulator must agree with it.
"""

from __future__ import annotations

from functools import reduce

import numpy as np
from scipy.linalg import expm

from qff_core.models.ir import (
    CNOT,
    RZ,
    Encode,
    EncodeAxis,
    Exchange,
    ExchangeSum,
    HeisenbergObservable,
    Model,
    Rot,
    Singlet,
    ZObservable,
)

I2 = np.eye(2)
PAULI = [np.array([[0, 1], [1, 0]], complex), np.array([[0, -1j], [1j, 0]]), np.diag([1.0 + 0j, -1.0])]
HADAMARD = np.array([[1, 1], [1, -1]]) / np.sqrt(2)


def on(ops: dict[int, np.ndarray], n: int) -> np.ndarray:
    """Kronecker product with ``ops[q]`` on qubit q (qubit 0 most significant), identity elsewhere."""
    return reduce(np.kron, [ops.get(q, I2) for q in range(n)])


def heisenberg(i: int, j: int, n: int) -> np.ndarray:
    return sum(on({i: P, j: P}, n) for P in PAULI)


def cnot(c: int, t: int, n: int) -> np.ndarray:
    p0, p1 = np.diag([1.0, 0.0]), np.diag([0.0, 1.0])
    return on({c: p0}, n) + on({c: p1, t: PAULI[0]}, n)


def expectation(model: Model, theta: np.ndarray, x: np.ndarray) -> float:
    """<O> for relative vectors ``x`` (atoms, 3)."""
    n = model.n_qubits
    psi = np.zeros(2**n, complex)
    psi[0] = 1.0
    for g in model.prelude:
        if isinstance(g, Singlet):
            a, b = g.qubits
            psi = cnot(a, b, n) @ on({a: HADAMARD}, n) @ on({a: PAULI[0], b: PAULI[0]}, n) @ psi
    for g in model.gates():
        if isinstance(g, Singlet):
            continue
        if isinstance(g, Encode):
            v = x[g.atom]
            u = on({g.qubit: expm(-0.5j * theta[g.alpha] * sum(c * P for c, P in zip(v, PAULI, strict=True)))}, n)
        elif isinstance(g, Exchange):
            u = reduce(np.matmul, [expm(-1j * theta[g.j] * heisenberg(a, b, n)) for a, b in g.pairs])
        elif isinstance(g, ExchangeSum):
            u = expm(-1j * theta[g.j] * sum(heisenberg(a, b, n) for a, b in g.pairs))
        elif isinstance(g, RZ):
            u = on({g.qubit: expm(-0.5j * theta[g.angle] * PAULI[2])}, n)
        elif isinstance(g, EncodeAxis):
            angle = theta[g.scale] * x[g.atom, g.axis]
            u = on({g.qubit: expm(-0.5j * angle * PAULI[g.axis])}, n)
        elif isinstance(g, Rot):
            phi, th, om = (theta[i] for i in g.angles)
            r = expm(-0.5j * om * PAULI[2]) @ expm(-0.5j * th * PAULI[1]) @ expm(-0.5j * phi * PAULI[2])
            u = on({g.qubit: r}, n)
        elif isinstance(g, CNOT):
            u = cnot(g.control, g.target, n)
        else:
            raise TypeError(g)
        psi = u @ psi
    obs = model.observable
    if isinstance(obs, HeisenbergObservable):
        op = sum(heisenberg(a, b, n) for a, b in obs.pairs) / len(obs.pairs)
    elif isinstance(obs, ZObservable):
        op = sum(on({q: PAULI[2]}, n) for q in obs.qubits) / len(obs.qubits)
    else:
        raise TypeError(obs)
    return float(np.real(np.vdot(psi, op @ psi)))


def energy(model: Model, theta: np.ndarray, positions: np.ndarray) -> float:
    """E = s <O> + e0 in eV, with the model's origin and optional inversion symmetrisation."""
    mol = model.molecule
    x = positions - mol.origin(positions)
    value = expectation(model, theta, x)
    if model.symmetrize_inversion:
        value = 0.5 * (value + expectation(model, theta, -x))
    return theta[model.scale] * value + theta[model.offset]
