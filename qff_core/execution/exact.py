"""The exact executor: a closed-form JAX statevector simulator compiled from the model IR.

Every gate has a closed form (no matrix exponential at run time; an orbit-summed Heisenberg
generator is eigendecomposed once, at compile time). The state of a batch of geometries is
one tensor of shape (2,)*n + (batch,): the batch is the last, contiguous axis, so every
gate is an elementwise operation over long vectors that XLA fuses. The repeated layers run
under ``lax.scan`` (compile time stays flat in depth); forces and loss gradients come from
autodiff (forces as the gradient of the summed energies), all in float64.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from itertools import product
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from qff_core.errors import InputError, ModelBuildError
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


def enable_compilation_cache(cache_dir: str | Path, min_compile_seconds: float = 0.5) -> Path:
    """Keep compiled programs on disk so that a new process skips XLA compilation.

    Compilation dominates short jobs (an audit of the water dimer: 27 s cold, 4 s warm);
    entries are keyed by the program, JAX version and flags, so a stale hit cannot happen.
    """
    path = Path(cache_dir).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", min_compile_seconds)
    return path


# ----------------------------------------------------------------------------- gate algebra
# 2x2 matrices have shape (2, 2) or (2, 2, batch); states (2,)*n + (batch,).


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
        flip = ((idx >> bi) ^ (idx >> bj)) & 1
        h[idx ^ (flip << bi) ^ (flip << bj), idx] += 2.0
        h -= np.eye(dim)
    lam, vec = np.linalg.eigh(h)
    return support, lam, vec


def _apply_1q(psi: jnp.ndarray, u: jnp.ndarray, q: int) -> jnp.ndarray:
    # Elementwise (no dot products): XLA fuses it into one loop over the state.
    a, b = jnp.take(psi, 0, axis=q), jnp.take(psi, 1, axis=q)
    return jnp.stack([u[0, 0] * a + u[0, 1] * b, u[1, 0] * a + u[1, 1] * b], axis=q)


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
    n, s = psi.ndim - 1, len(support)
    moved = jnp.moveaxis(psi, support, list(range(s)))
    flat = moved.reshape(2**s, -1)
    flat = vec @ (jnp.exp(-1j * j * lam)[:, None] * (vec.T @ flat))
    return jnp.moveaxis(flat.reshape((2,) * n + psi.shape[-1:]), list(range(s)), support)


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


def _single_qubit_matrices(gates: tuple[Gate, ...], offsets: np.ndarray) -> Callable:
    """A function (params, x) -> {gate position: 2x2 matrix}, vectorised over gates of one kind.

    Building all encoding matrices of a layer in one vectorised call keeps the traced
    program small: compilation time and run time both grow with the number of ops.
    ``x`` has shape (atoms, 3, batch).
    """
    kinds: dict[type, list[int]] = {}
    for k, g in enumerate(gates):
        if isinstance(g, (Encode, EncodeAxis, RZ, Rot)):
            kinds.setdefault(type(g), []).append(k)
    plan = []
    for cls, positions in kinds.items():
        first = np.array([offsets[k] for k in positions])
        if cls is Encode:
            aux = np.array([gates[k].atom for k in positions])
        elif cls is EncodeAxis:
            aux = np.array([[gates[k].atom, gates[k].axis] for k in positions])
        else:
            aux = None
        plan.append((cls, positions, first, aux))

    def build(params: jnp.ndarray, x: jnp.ndarray) -> dict[int, jnp.ndarray]:
        out: dict[int, jnp.ndarray] = {}
        for cls, positions, first, aux in plan:
            if cls is Encode:
                mats = jax.vmap(su2_encoding)(x[aux], params[first])
            elif cls is EncodeAxis:
                angles = params[first][:, None] * x[aux[:, 0], aux[:, 1]]
                mats = jnp.stack([axis_rotation(int(a), angles[i]) for i, a in enumerate(aux[:, 1])])
            elif cls is RZ:
                mats = jax.vmap(lambda a: axis_rotation(2, a))(params[first])
            else:  # Rot(phi, theta, omega) = RZ(omega) RY(theta) RZ(phi)
                p = params[first[:, None] + np.arange(3)]
                rz = jax.vmap(lambda a: axis_rotation(2, a))
                ry = jax.vmap(lambda a: axis_rotation(1, a))
                mats = rz(p[:, 2]) @ ry(p[:, 1]) @ rz(p[:, 0])
            for i, k in enumerate(positions):
                out[k] = mats[i]
        return out

    return build


def _make_sequence(gates: tuple[Gate, ...], eigs: dict) -> Callable:
    """A function (psi, params, x) -> psi applying ``gates``; params in the gates' order.

    Consecutive single-qubit gates on one qubit are fused into one 2x2 matrix.
    """
    offsets = np.cumsum([0] + [len(gate_params(g)) for g in gates])
    matrices = _single_qubit_matrices(gates, offsets)

    def run(psi: jnp.ndarray, params: jnp.ndarray, x: jnp.ndarray) -> jnp.ndarray:
        pending: dict[int, jnp.ndarray] = {}
        single = matrices(params, x)

        def flush(qubits) -> None:
            nonlocal psi
            for q in list(qubits):
                if q in pending:
                    psi = _apply_1q(psi, pending.pop(q), q)

        for k, (g, lo, hi) in enumerate(zip(gates, offsets[:-1], offsets[1:], strict=True)):
            p = params[lo:hi]
            if k in single:
                u = single[k]
                pending[g.qubit] = matmul2(u, pending[g.qubit]) if g.qubit in pending else u
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
    """<O> per batch entry of a state (2,)*n + (batch,)."""
    n = model.n_qubits
    axes = tuple(range(n))
    obs = model.observable
    if isinstance(obs, HeisenbergObservable):
        pairs = obs.pairs

        def heisenberg(psi: jnp.ndarray) -> jnp.ndarray:
            conj = jnp.conj(psi)
            terms = [jnp.sum(jnp.real(conj * jnp.swapaxes(psi, a, b)), axis=axes) for a, b in pairs]
            return 2.0 * sum(terms) / len(terms) - 1.0

        return heisenberg
    if isinstance(obs, ZObservable):
        signs = np.zeros((2,) * n)
        for q in obs.qubits:
            shape = [1] * n
            shape[q] = 2
            signs = signs + np.array([1.0, -1.0]).reshape(shape)
        signs = (signs / len(obs.qubits))[..., None]

        def z_mean(psi: jnp.ndarray) -> jnp.ndarray:
            return jnp.sum(signs * (psi.real**2 + psi.imag**2), axis=axes)

        return z_mean
    raise TypeError(obs)  # pragma: no cover


@dataclass(frozen=True)
class ExactSimulator:
    """Compiled energy and force functions of one model.

    Pure, differentiable functions to compose into losses: ``batch_energies_fn(theta,
    positions (n, atoms, 3))``, ``energy_fn(theta, positions (atoms, 3))`` and
    ``expectation_fn(theta, x (atoms, 3, n))``. Jitted forms: ``energies`` and
    ``energies_forces``. Energies in eV, forces in eV/Angstrom, positions in Angstrom.
    """

    model: Model
    expectation_fn: Callable[[jnp.ndarray, jnp.ndarray], jnp.ndarray]
    batch_energies_fn: Callable[[jnp.ndarray, jnp.ndarray], jnp.ndarray]
    energy_fn: Callable[[jnp.ndarray, jnp.ndarray], jnp.ndarray]
    energies_forces_fn: Callable[[jnp.ndarray, jnp.ndarray], tuple[jnp.ndarray, jnp.ndarray]]
    energies: Callable[[jnp.ndarray, jnp.ndarray], jnp.ndarray]
    energies_forces: Callable[[jnp.ndarray, jnp.ndarray], tuple[jnp.ndarray, jnp.ndarray]]

    def evaluate(self, theta, positions_a) -> tuple[np.ndarray, np.ndarray]:
        """Energies (n,) in eV and forces (n, atoms, 3) in eV/Angstrom for a batch, as numpy."""
        theta = np.asarray(theta, dtype=np.float64)
        if theta.shape != (self.model.n_parameters,):
            raise InputError(
                f"the {self.model.kind} model of {self.model.molecule.name} has {self.model.n_parameters} "
                f"parameters; got an array of shape {theta.shape} (build it with init_parameters or load a checkpoint)"
            )
        if not np.all(np.isfinite(theta)):
            raise InputError("the parameter vector holds NaN or infinite values")
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


def compile_exact(model: Model, *, unroll: bool = False) -> ExactSimulator:
    """Compile ``model`` into jitted JAX functions over batches of geometries (float64).

    ``unroll=False`` runs the layers under ``lax.scan``: compilation stays short and flat in
    depth. ``unroll=True`` unrolls them: compilation grows with depth, but a training step
    with forces in the loss runs about twice as fast (worth it for long training runs).
    """
    enable_x64()
    if model.n_qubits > MAX_EXACT_QUBITS:
        raise ModelBuildError(
            f"{model.n_qubits} qubits is beyond the exact simulator ({MAX_EXACT_QUBITS}); "
            "lower rep or use the fragment model"
        )
    eigs = {g.pairs: heisenberg_sum_eig(g.pairs) for g in model.gates() if isinstance(g, ExchangeSum)}
    psi0 = jnp.asarray(initial_state(model))[..., None]
    prelude = _make_sequence(model.prelude, eigs)
    prelude_idx = jnp.asarray([i for g in model.prelude for i in gate_params(g)], dtype=jnp.int32)
    observable = _make_observable(model)
    if model.layers:
        structure = [gate_structure(g) for g in model.layers[0]]
        for d, layer in enumerate(model.layers):
            if [gate_structure(g) for g in layer] != structure:
                raise ModelBuildError(f"layer {d + 1} differs in structure from layer 1; cannot scan")
        layer_idx = jnp.asarray(
            [[i for g in layer for i in gate_params(g)] for layer in model.layers], dtype=jnp.int32
        )
        body = _make_sequence(model.layers[0], eigs)
    center = model.molecule.center
    scale, offset = model.scale, model.offset

    def expectation_fn(theta: jnp.ndarray, x: jnp.ndarray) -> jnp.ndarray:
        psi = jnp.broadcast_to(psi0, psi0.shape[:-1] + x.shape[-1:])
        psi = prelude(psi, theta[prelude_idx], x)
        if model.layers:
            def step(state, params):
                return body(state, params, x), None

            psi, _ = jax.lax.scan(step, psi, theta[layer_idx], unroll=unroll)
        return observable(psi)

    def batch_energies_fn(theta: jnp.ndarray, positions: jnp.ndarray) -> jnp.ndarray:
        origin = positions.mean(axis=1, keepdims=True) if center is None else positions[:, center : center + 1]
        x = jnp.transpose(positions - origin, (1, 2, 0))  # (atoms, 3, batch)
        value = expectation_fn(theta, x)
        if model.symmetrize_inversion:
            value = 0.5 * (value + expectation_fn(theta, -x))
        return theta[scale] * value + theta[offset]

    def energy_fn(theta: jnp.ndarray, positions: jnp.ndarray) -> jnp.ndarray:
        return batch_energies_fn(theta, positions[None])[0]

    def total_energy(positions, theta):
        e = batch_energies_fn(theta, positions)
        return jnp.sum(e), e

    grad_total = jax.grad(total_energy, has_aux=True)

    def energies_forces_fn(theta: jnp.ndarray, positions: jnp.ndarray):
        # Geometries are independent, so the gradient of the summed energy holds every
        # geometry's own gradient.
        g, e = grad_total(positions, theta)
        return e, -g

    return ExactSimulator(
        model=model,
        expectation_fn=expectation_fn,
        batch_energies_fn=batch_energies_fn,
        energy_fn=energy_fn,
        energies_forces_fn=energies_forces_fn,
        energies=jax.jit(batch_energies_fn),
        energies_forces=jax.jit(energies_forces_fn),
    )
