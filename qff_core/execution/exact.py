"""The exact executor: a closed-form JAX statevector simulator compiled from the model IR.

Every gate has a closed form (no matrix exponential at run time; an orbit-summed Heisenberg
generator is eigendecomposed once, at compile time). The state is an n-qubit tensor; the
repeated layers run under ``lax.scan`` (compile time stays flat in depth); geometries are
batched with ``vmap``; forces and loss gradients come from autodiff, in float64.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from itertools import product

import jax
import jax.numpy as jnp
import numpy as np

from qff_core.errors import ModelBuildError
from qff_core.models.ir import (
    CNOT,
    RZ,
    Encode,
    EncodeAxis,
    Exchange,
    ExchangeSum,
    Gate,
    HeisenbergObservable,
    Model,
    Rot,
    Singlet,
    ZObservable,
    gate_params,
    gate_structure,
)

MAX_EXACT_QUBITS = 20
"""Above this the dense statevector no longer fits comfortably in memory."""


def bucket_size(n: int) -> int:
    """Batch size that ``n`` geometries are padded to: the next power of two.

    jit compiles once per input shape; buckets bound the compilations for ragged batches
    (MD steps, evaluation remainders) to a handful.
    """
    return 1 if n <= 1 else 1 << (n - 1).bit_length()


def enable_x64() -> None:
    """Turn on float64 in JAX (idempotent); qff's physics needs it."""
    jax.config.update("jax_enable_x64", True)


# ----------------------------------------------------------------------------- gate algebra


def su2_encoding(v: jnp.ndarray, alpha: jnp.ndarray) -> jnp.ndarray:
    """exp(-i alpha v.sigma / 2) = cos(phi/2) I - i sin(phi/2) n.sigma, phi = alpha |v|.

    Written with sin(phi/2)/|v| = (alpha/2) sinc(phi/(2 pi)) so that it and its derivatives
    stay finite for v -> 0.
    """
    r2 = v @ v
    r = jnp.where(r2 > 0, jnp.sqrt(jnp.where(r2 > 0, r2, 1.0)), 0.0)
    half = 0.5 * alpha * r
    c = jnp.cos(half)
    k = 0.5 * alpha * jnp.sinc(half / jnp.pi)
    nx, ny, nz = k * v[0], k * v[1], k * v[2]
    return jnp.array([[c - 1j * nz, -1j * nx - ny], [-1j * nx + ny, c + 1j * nz]])


def axis_rotation(axis: int, angle: jnp.ndarray) -> jnp.ndarray:
    """RX, RY or RZ(angle) = exp(-i angle P / 2) as a 2x2 matrix."""
    c, s = jnp.cos(0.5 * angle), jnp.sin(0.5 * angle)
    zero = jnp.zeros_like(c)
    if axis == 0:
        return jnp.array([[c + 0j, -1j * s], [-1j * s, c + 0j]])
    if axis == 1:
        return jnp.array([[c, -s], [s, c]]) + 0j
    return jnp.array([[c - 1j * s, zero], [zero, c + 1j * s]])


def heisenberg_sum_eig(pairs: tuple[tuple[int, int], ...]) -> tuple[list[int], np.ndarray, np.ndarray]:
    """Support qubits, eigenvalues and real eigenvectors of sum sigma_i.sigma_j (= 2 SWAP - 1)."""
    support = sorted({q for p in pairs for q in p})
    local = {q: i for i, q in enumerate(support)}
    s = len(support)
    dim = 2**s
    idx = np.arange(dim)
    h = np.zeros((dim, dim))
    for i, j in pairs:
        bi, bj = s - 1 - local[i], s - 1 - local[j]  # qubit support[0] is the most significant bit
        xi, xj = (idx >> bi) & 1, (idx >> bj) & 1
        swapped = idx ^ ((xi ^ xj) << bi) ^ ((xi ^ xj) << bj)
        h[swapped, idx] += 2.0
        h -= np.eye(dim)
    lam, vec = np.linalg.eigh(h)
    return support, lam, vec


def _apply_1q(psi: jnp.ndarray, u: jnp.ndarray, q: int) -> jnp.ndarray:
    return jnp.moveaxis(jnp.tensordot(u, psi, axes=((1,), (q,))), 0, q)


def _apply_cnot(psi: jnp.ndarray, control: int, target: int) -> jnp.ndarray:
    t = target - (target > control)
    zero = jnp.take(psi, 0, axis=control)
    one = jnp.flip(jnp.take(psi, 1, axis=control), axis=t)
    return jnp.stack([zero, one], axis=control)


def _apply_exchange(psi: jnp.ndarray, pairs, j: jnp.ndarray) -> jnp.ndarray:
    # exp(-i J sigma.sigma) = e^{iJ} (cos 2J - i sin 2J SWAP)
    c, s = jnp.cos(2 * j), jnp.sin(2 * j)
    phase = jnp.exp(1j * j)
    for a, b in pairs:
        psi = phase * (c * psi - 1j * s * jnp.swapaxes(psi, a, b))
    return psi


def _apply_exchange_sum(psi: jnp.ndarray, eig, j: jnp.ndarray) -> jnp.ndarray:
    support, lam, vec = eig
    n, s = psi.ndim, len(support)
    moved = jnp.moveaxis(psi, support, list(range(s)))
    flat = moved.reshape(2**s, -1)
    flat = vec @ (jnp.exp(-1j * j * lam)[:, None] * (vec.T @ flat))
    return jnp.moveaxis(flat.reshape((2,) * n), list(range(s)), support)


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


# ----------------------------------------------------------------------------- compiler


def _single_qubit_matrix(gate: Gate, params: jnp.ndarray, x: jnp.ndarray) -> jnp.ndarray:
    if isinstance(gate, Encode):
        return su2_encoding(x[gate.atom], params[0])
    if isinstance(gate, EncodeAxis):
        return axis_rotation(gate.axis, params[0] * x[gate.atom, gate.axis])
    if isinstance(gate, RZ):
        return axis_rotation(2, params[0])
    if isinstance(gate, Rot):
        return axis_rotation(2, params[2]) @ axis_rotation(1, params[1]) @ axis_rotation(2, params[0])
    raise TypeError(gate)


def _make_sequence(gates: tuple[Gate, ...], eigs: dict) -> Callable:
    """A function (psi, params, x) -> psi applying ``gates``; params in the gates' order.

    Consecutive single-qubit gates on one qubit are fused into one 2x2 matrix.
    """
    offsets = np.cumsum([0] + [len(gate_params(g)) for g in gates])

    def run(psi: jnp.ndarray, params: jnp.ndarray, x: jnp.ndarray) -> jnp.ndarray:
        pending: dict[int, jnp.ndarray] = {}

        def flush(qubits) -> None:
            nonlocal psi
            for q in list(qubits):
                if q in pending:
                    psi = _apply_1q(psi, pending.pop(q), q)

        for g, lo, hi in zip(gates, offsets[:-1], offsets[1:], strict=True):
            p = params[lo:hi]
            if isinstance(g, (Encode, EncodeAxis, RZ, Rot)):
                u = _single_qubit_matrix(g, p, x)
                pending[g.qubit] = u @ pending[g.qubit] if g.qubit in pending else u
            elif isinstance(g, Exchange):
                flush({q for pair in g.pairs for q in pair})
                psi = _apply_exchange(psi, g.pairs, p[0])
            elif isinstance(g, ExchangeSum):
                flush({q for pair in g.pairs for q in pair})
                psi = _apply_exchange_sum(psi, eigs[g.pairs], p[0])
            elif isinstance(g, CNOT):
                flush((g.control, g.target))
                psi = _apply_cnot(psi, g.control, g.target)
            elif isinstance(g, Singlet):
                continue  # part of the initial state
            else:  # pragma: no cover - every IR gate is handled above
                raise TypeError(f"the exact simulator cannot apply {g!r}")
        flush(sorted(pending))
        return psi

    return run


def _make_observable(model: Model) -> Callable[[jnp.ndarray], jnp.ndarray]:
    obs = model.observable
    if isinstance(obs, HeisenbergObservable):
        pairs = obs.pairs

        def heisenberg(psi: jnp.ndarray) -> jnp.ndarray:
            terms = [2.0 * jnp.real(jnp.vdot(psi, jnp.swapaxes(psi, a, b))) - 1.0 for a, b in pairs]
            return sum(terms) / len(terms)

        return heisenberg
    if isinstance(obs, ZObservable):
        signs = np.zeros((2,) * model.n_qubits)
        for q in obs.qubits:
            shape = [1] * model.n_qubits
            shape[q] = 2
            signs = signs + np.array([1.0, -1.0]).reshape(shape)
        signs = signs / len(obs.qubits)

        def z_mean(psi: jnp.ndarray) -> jnp.ndarray:
            return jnp.sum(signs * (psi.real**2 + psi.imag**2))

        return z_mean
    raise TypeError(obs)  # pragma: no cover


@dataclass(frozen=True)
class ExactSimulator:
    """Compiled energy and force functions of one model.

    ``energy_fn(theta, positions_a)`` and ``expectation_fn(theta, x)`` are pure and
    differentiable (compose them into losses); ``energies`` and ``energies_forces`` are the
    jitted, geometry-batched forms. Energies in eV, forces in eV/Angstrom.
    """

    model: Model
    expectation_fn: Callable[[jnp.ndarray, jnp.ndarray], jnp.ndarray]
    energy_fn: Callable[[jnp.ndarray, jnp.ndarray], jnp.ndarray]
    energies: Callable[[jnp.ndarray, jnp.ndarray], jnp.ndarray]
    energies_forces: Callable[[jnp.ndarray, jnp.ndarray], tuple[jnp.ndarray, jnp.ndarray]]

    def evaluate(self, theta, positions_a) -> tuple[np.ndarray, np.ndarray]:
        """Energies (n,) in eV and forces (n, atoms, 3) in eV/Angstrom for a batch, as numpy."""
        positions = self.model.molecule.validate_positions(positions_a)
        single = positions.ndim == 2
        batch = positions[None] if single else positions
        n = len(batch)
        padded = bucket_size(n)
        if padded > n:  # pad with copies of the first geometry: one compilation per bucket
            batch = np.concatenate([batch, np.repeat(batch[:1], padded - n, axis=0)])
        e, f = self.energies_forces(jnp.asarray(theta, dtype=jnp.float64), jnp.asarray(batch))
        e, f = np.asarray(e)[:n], np.asarray(f)[:n]
        return (e[0], f[0]) if single else (e, f)


def compile_exact(model: Model) -> ExactSimulator:
    """Compile ``model`` into jitted, vmapped JAX functions (float64)."""
    enable_x64()
    if model.n_qubits > MAX_EXACT_QUBITS:
        raise ModelBuildError(
            f"{model.n_qubits} qubits is beyond the exact simulator ({MAX_EXACT_QUBITS}); "
            "lower rep or use the fragment model"
        )
    eigs = {g.pairs: heisenberg_sum_eig(g.pairs) for g in model.gates() if isinstance(g, ExchangeSum)}
    psi0 = jnp.asarray(initial_state(model))
    prelude = _make_sequence(model.prelude, eigs)
    prelude_idx = jnp.asarray([i for g in model.prelude for i in gate_params(g)], dtype=jnp.int32)
    observable = _make_observable(model)
    if model.layers:
        template = model.layers[0]
        structure = [gate_structure(g) for g in template]
        for d, layer in enumerate(model.layers):
            if [gate_structure(g) for g in layer] != structure:
                raise ModelBuildError(f"layer {d + 1} differs in structure from layer 1; cannot scan")
        layer_idx = jnp.asarray(
            [[i for g in layer for i in gate_params(g)] for layer in model.layers], dtype=jnp.int32
        )
        body = _make_sequence(template, eigs)
    center = model.molecule.center
    scale, offset = model.scale, model.offset

    def expectation_fn(theta: jnp.ndarray, x: jnp.ndarray) -> jnp.ndarray:
        psi = prelude(psi0, theta[prelude_idx], x)
        if model.layers:
            def step(state, params):
                return body(state, params, x), None

            psi, _ = jax.lax.scan(step, psi, theta[layer_idx])
        return observable(psi)

    def energy_fn(theta: jnp.ndarray, positions: jnp.ndarray) -> jnp.ndarray:
        origin = positions.mean(axis=0) if center is None else positions[center]
        x = positions - origin
        value = expectation_fn(theta, x)
        if model.symmetrize_inversion:
            value = 0.5 * (value + expectation_fn(theta, -x))
        return theta[scale] * value + theta[offset]

    value_and_grad = jax.value_and_grad(energy_fn, argnums=1)

    def energy_forces_fn(theta, positions):
        e, g = value_and_grad(theta, positions)
        return e, -g

    return ExactSimulator(
        model=model,
        expectation_fn=expectation_fn,
        energy_fn=energy_fn,
        energies=jax.jit(jax.vmap(energy_fn, in_axes=(None, 0))),
        energies_forces=jax.jit(jax.vmap(energy_forces_fn, in_axes=(None, 0))),
    )
