"""The exact compiler: one circuit model's IR into a closed-form JAX statevector simulator.

Every gate has a closed form (``execution/gates.py``; an orbit-summed Heisenberg generator
is eigendecomposed once, at compile time). Two strategies give the same numbers:

* ``tensor``: the batch's state is one tensor (2,)*n + (batch,) and every gate an
  elementwise operation over it (``statevector.py``); layers under ``lax.scan``, so
  compilation stays flat in depth. Scales to ~20 qubits.
* ``dense`` (few qubits): each run of geometry-independent gates is one 2^n matrix shared
  by the batch, each encoding layer one Kronecker product per geometry; layers unrolled.
  Small programs: fast to compile and about twice as fast per training step.

Forces are the gradient of the summed energies (geometries are independent); loss
gradients with forces in the loss are autodiff through that, all in float64.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from qff_core.errors import ModelBuildError
from qff_core.execution.exact.simulator import ExactSimulator, simulator_from_energies
from qff_core.execution.exact.statevector import (
    apply_1q,
    apply_cnot,
    apply_exchange,
    apply_exchange_factors,
    initial_state,
)
from qff_core.execution.gates import (
    axis_rotation,
    cnot_matrix,
    enable_x64,
    heisenberg_matrix,
    heisenberg_sum_eig,
    matmul2,
    pair_components,
    su2_encoding,
    swap_matrix,
)
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
    Pair,
    Rot,
    Singlet,
    ZObservable,
    gate_params,
    gate_structure,
)

MAX_EXACT_QUBITS = 20
"""Above this the dense statevector no longer fits comfortably in memory."""
DENSE_MAX_QUBITS = 4
"""Up to this many qubits ``strategy="auto"`` applies layers as 2^n matrices."""


# ----------------------------------------------------------------------------- compiler


def exchange_factors(pairs: tuple[Pair, ...], factor: bool = True) -> list[tuple]:
    """One factor per connected component of ``pairs``: (support, eigenvalues, eigenvectors), or (pair, None,
    None) for a lone pair (applied in SWAP form). The water dimer's generators act on two 3-qubit groups each:
    two 8x8 products instead of one 64x64 on their 6-qubit support (4x fewer operations). ``factor=False``: one
    factor on the whole support (the form of before)."""
    if not factor:
        return [heisenberg_sum_eig(pairs)]
    return [(comp[0], None, None) if len(comp) == 1 else heisenberg_sum_eig(comp) for comp in pair_components(pairs)]


def _single_qubit_matrices(gates: tuple[Gate, ...], offsets: np.ndarray) -> Callable:
    """A function (params, x) -> {gate position: 2x2 matrix}, vectorised over gates of one kind.

    Building all encoding matrices of a layer in one vectorised call keeps the traced
    program small: compilation time and run time both grow with the number of ops.
    ``x`` has shape (atoms, 3) or (atoms, 3, batch).
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
                scales = params[first].reshape(-1, *([1] * (x.ndim - 2)))
                angles = scales * x[aux[:, 0], aux[:, 1]]
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


UNROLL_MIN_QUBITS = 10
"""From this many qubits the ``tensor`` strategy unrolls its layers by default: with Kronecker blocks the program is
small enough (12-qubit dimer D=4: 14 s CPU to compile), and the step is 1.3x faster than under ``lax.scan``."""

BLOCK_1Q = 3
"""``tensor`` strategy: pending single-qubit gates on up to this many adjacent qubits are applied as one Kronecker
product (one pass over the state instead of one per qubit; forward and backward). Measured best of 2, 3, 4 and 6
on the 12-qubit dimer step (docs/performance.md); 0 applies them one by one."""


def _apply_block(psi: jnp.ndarray, mats: list, first: int) -> jnp.ndarray:
    """Single-qubit gates on the contiguous qubits first.. as one Kronecker product: one pass over the state."""
    k = len(mats)
    batch = psi.shape[-1]
    mats = [m if m.ndim == 3 else jnp.broadcast_to(m[..., None], (2, 2, batch)) for m in mats]
    letters_out, letters_in = "abcdefgh"[:k], "ijklmnop"[:k]
    spec = ",".join(f"{o}{i}z" for o, i in zip(letters_out, letters_in, strict=True))
    kron = jnp.einsum(f"{spec}->{letters_out}{letters_in}z", *mats).reshape(2**k, 2**k, batch)
    n = psi.ndim - 1
    shaped = psi.reshape(2**first, 2**k, 2 ** (n - first - k), batch)
    out = jnp.einsum("ijz,xjyz->xiyz", kron, shaped)
    return out.reshape(psi.shape)


def _make_sequence(gates: tuple[Gate, ...], factors: dict, block: int = 0) -> Callable:
    """A function (psi, params, x) -> psi applying ``gates``; params in the gates' order.

    Consecutive single-qubit gates on one qubit are fused into one 2x2 matrix; ``factors``: the
    ``exchange_factors`` of each orbit-summed generator.
    """
    offsets = np.cumsum([0] + [len(gate_params(g)) for g in gates])
    matrices = _single_qubit_matrices(gates, offsets)

    def run(psi: jnp.ndarray, params: jnp.ndarray, x: jnp.ndarray) -> jnp.ndarray:
        pending: dict[int, jnp.ndarray] = {}
        single = matrices(params, x)

        def flush(qubits) -> None:
            nonlocal psi
            if block and len(pending) >= block:  # everything pending, contiguous runs as Kronecker blocks
                qs = sorted(pending)
                runs: list[list[int]] = []
                for q in qs:
                    if runs and runs[-1][-1] == q - 1 and len(runs[-1]) < block:
                        runs[-1].append(q)
                    else:
                        runs.append([q])
                for run_ in runs:
                    if len(run_) == 1:
                        psi = apply_1q(psi, pending.pop(run_[0]), run_[0])
                    else:
                        psi = _apply_block(psi, [pending.pop(q) for q in run_], run_[0])
                return
            for q in list(qubits):
                if q in pending:
                    psi = apply_1q(psi, pending.pop(q), q)

        for k, (g, lo, hi) in enumerate(zip(gates, offsets[:-1], offsets[1:], strict=True)):
            p = params[lo:hi]
            if k in single:
                u = single[k]
                pending[g.qubit] = matmul2(u, pending[g.qubit]) if g.qubit in pending else u
            elif isinstance(g, Exchange):
                flush({q for pair in g.pairs for q in pair})
                psi = apply_exchange(psi, g.pairs, p[0])
            elif isinstance(g, ExchangeSum):
                flush({q for pair in g.pairs for q in pair})
                psi = apply_exchange_factors(psi, factors[g.pairs], p[0])
            elif isinstance(g, CNOT):
                flush((g.control, g.target))
                psi = apply_cnot(psi, g.control, g.target)
            elif isinstance(g, Singlet):
                continue  # part of the initial state
            else:  # pragma: no cover - every IR gate is handled above
                raise TypeError(f"the exact simulator cannot apply {g!r}")
        flush(sorted(pending))
        return psi

    return run


# ----------------------------------------------------------------------------- dense strategy
# For few qubits, a layer is two big operations instead of many small ones: the geometry-
# independent gates (exchange, CNOT, parameter-only rotations) multiply into one 2^n matrix
# shared by the batch, the encodings into one Kronecker product per geometry.


def _make_dense_sequence(gates: tuple[Gate, ...], n: int) -> Callable:
    """Like ``_make_sequence``, for one geometry: a flat state (2^n,), whole segments as matrices.

    The caller vmaps it over the batch (the products then run along contiguous memory).
    """
    offsets = np.cumsum([0] + [len(gate_params(g)) for g in gates])
    matrices = _single_qubit_matrices(gates, offsets)
    dim = 2**n
    swaps: dict[tuple[int, int], np.ndarray] = {}
    full_eigs = {}
    for g in gates:
        if isinstance(g, (Exchange, ExchangeSum)):
            for pair in g.pairs:
                swaps[pair] = swap_matrix(*pair, n)
        if isinstance(g, ExchangeSum):
            full_eigs[g.pairs] = np.linalg.eigh(heisenberg_matrix(g.pairs, n))
    segments: list[tuple[bool, list[int]]] = []  # (single-qubit?, gate positions)
    for k, g in enumerate(gates):
        if isinstance(g, Singlet):
            continue
        single = isinstance(g, (Encode, EncodeAxis, RZ, Rot))
        if segments and segments[-1][0] == single:
            segments[-1][1].append(k)
        else:
            segments.append((single, [k]))

    def multi_matrix(g: Gate, p: jnp.ndarray) -> jnp.ndarray:
        if isinstance(g, Exchange):
            c, s, phase = jnp.cos(2 * p[0]), jnp.sin(2 * p[0]), jnp.exp(1j * p[0])
            m = None
            for pair in g.pairs:
                factor = phase * (c * np.eye(dim) - 1j * s * swaps[pair])
                m = factor if m is None else factor @ m
            return m
        if isinstance(g, ExchangeSum):
            lam, vec = full_eigs[g.pairs]
            return (vec * jnp.exp(-1j * p[0] * lam)) @ vec.T
        if isinstance(g, CNOT):
            return jnp.asarray(cnot_matrix(g.control, g.target, n), dtype=jnp.complex128)
        raise TypeError(f"the exact simulator cannot apply {g!r}")  # pragma: no cover

    def run(psi: jnp.ndarray, params: jnp.ndarray, x: jnp.ndarray) -> jnp.ndarray:
        single = matrices(params, x)
        for is_single, ks in segments:
            if is_single:
                per_qubit: dict[int, jnp.ndarray] = {}
                for k in ks:
                    q = gates[k].qubit
                    per_qubit[q] = matmul2(single[k], per_qubit[q]) if q in per_qubit else single[k]
                kron = None
                for q in range(n):
                    u = per_qubit.get(q, jnp.eye(2, dtype=jnp.complex128))
                    kron = u if kron is None else jnp.kron(kron, u)
                psi = jnp.sum(kron * psi[None, :], axis=1)
            else:
                m = None
                for k in ks:
                    gm = multi_matrix(gates[k], params[offsets[k] : offsets[k + 1]])
                    m = gm if m is None else gm @ m
                psi = m @ psi
        return psi

    return run


def _dense_observable(model: Model) -> np.ndarray:
    """The observable as a 2^n matrix."""
    n, dim = model.n_qubits, 2**model.n_qubits
    obs = model.observable
    if isinstance(obs, HeisenbergObservable):
        return heisenberg_matrix(obs.pairs, n) / len(obs.pairs)
    idx = np.arange(dim)
    return np.diag(sum(1.0 - 2.0 * ((idx >> (n - 1 - q)) & 1) for q in obs.qubits) / len(obs.qubits))


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


def compile_circuit(
    model: Model, *, strategy: Literal["auto", "dense", "tensor"] = "auto", unroll: bool | None = None,
    factor_exchange: bool = True, block_1q: int = BLOCK_1Q,
) -> ExactSimulator:
    """Compile a circuit ``model`` into jitted JAX functions over batches of geometries (float64).

    ``strategy``: ``dense`` applies each run of gates as one 2^n matrix (few qubits: small
    programs, fast); ``tensor`` applies gate by gate on an n-qubit tensor (scales to more
    qubits); ``auto`` takes ``dense`` up to ``DENSE_MAX_QUBITS``. ``unroll``: unroll the
    layers instead of ``lax.scan`` (faster steps, compilation grows with depth); by default
    on for ``dense`` and from ``UNROLL_MIN_QUBITS`` qubits, off for smaller ``tensor`` models.
    ``factor_exchange`` (``tensor``): apply an orbit-summed generator
    as one factor per connected component of its pairs; False applies it on its whole support, as before
    (kept as the benchmark's baseline and a cross-check). ``block_1q`` (``tensor``): single-qubit gates on
    up to this many adjacent qubits as one Kronecker product (``BLOCK_1Q``; 0: one by one). Every choice gives
    the same numbers.
    """
    enable_x64()
    if model.n_qubits > MAX_EXACT_QUBITS:
        raise ModelBuildError(
            f"{model.n_qubits} qubits is beyond the exact simulator ({MAX_EXACT_QUBITS}); "
            "lower rep or use the fragment model"
        )
    if strategy == "auto":
        strategy = "dense" if model.n_qubits <= DENSE_MAX_QUBITS else "tensor"
    if unroll is None:
        unroll = strategy == "dense" or model.n_qubits >= UNROLL_MIN_QUBITS
    if model.layers:
        structure = [gate_structure(g) for g in model.layers[0]]
        for d, layer in enumerate(model.layers):
            if [gate_structure(g) for g in layer] != structure:
                raise ModelBuildError(f"layer {d + 1} differs in structure from layer 1; cannot scan")
    if strategy == "dense":
        n = model.n_qubits
        psi0 = jnp.asarray(initial_state(model).reshape(-1))
        obs_matrix = jnp.asarray(_dense_observable(model))

        def observable(psi: jnp.ndarray) -> jnp.ndarray:
            return jnp.real(jnp.vdot(psi, obs_matrix @ psi))

        def make(gates: tuple[Gate, ...]) -> Callable:
            return _make_dense_sequence(gates, n)
    else:
        factors = {g.pairs: exchange_factors(g.pairs, factor_exchange)
                   for g in model.gates() if isinstance(g, ExchangeSum)}
        psi0 = jnp.asarray(initial_state(model))[..., None]
        observable = _make_observable(model)

        def make(gates: tuple[Gate, ...]) -> Callable:
            return _make_sequence(gates, factors, block_1q)

    prelude = make(model.prelude)
    prelude_idx = jnp.asarray([i for g in model.prelude for i in gate_params(g)], dtype=jnp.int32)
    if model.layers:
        layer_idx = jnp.asarray(
            [[i for g in layer for i in gate_params(g)] for layer in model.layers], dtype=jnp.int32
        )
        body = make(model.layers[0])
    center = model.molecule.center
    scale, offset = model.scale, model.offset

    def run_circuit(theta: jnp.ndarray, x: jnp.ndarray, psi: jnp.ndarray) -> jnp.ndarray:
        psi = prelude(psi, theta[prelude_idx], x)
        if model.layers:
            def step(state, params):
                return body(state, params, x), None

            psi, _ = jax.lax.scan(step, psi, theta[layer_idx], unroll=bool(unroll))
        return observable(psi)

    def expectation_fn(theta: jnp.ndarray, x: jnp.ndarray) -> jnp.ndarray:
        if strategy == "dense":  # one geometry at a time, vmapped over the trailing batch axis
            return jax.vmap(run_circuit, in_axes=(None, 2, None))(theta, x, psi0)
        return run_circuit(theta, x, jnp.broadcast_to(psi0, (*psi0.shape[:-1], x.shape[-1])))

    def batch_energies_fn(theta: jnp.ndarray, positions: jnp.ndarray) -> jnp.ndarray:
        origin = positions.mean(axis=1, keepdims=True) if center is None else positions[:, center : center + 1]
        x = jnp.transpose(positions - origin, (1, 2, 0))  # (atoms, 3, batch)
        value = expectation_fn(theta, x)
        if model.symmetrize_inversion:
            value = 0.5 * (value + expectation_fn(theta, -x))
        return theta[scale] * value + theta[offset]

    return simulator_from_energies(model, batch_energies_fn, expectation_fn)
