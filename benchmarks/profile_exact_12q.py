"""Where one training step of the 12-qubit exact engine spends its time: the kernels, one by one.

The whole-system water dimer at rep=2 (12 qubits), batch 64: the state is (2,)*12 + (64,) complex128, 4 MiB.
Each kernel is jitted alone and timed in CPU seconds of this single-threaded process (steadier than wall time
on a shared machine): a plain copy of the state (the memory floor), the encoding layer (12 per-geometry 2x2
gates) forward, its gradient with respect to the gate matrices (what forces need), and its second-order
gradient (what the energy-and-force loss's parameter gradient needs), the exchange gate, an orbit-summed
generator on its whole 6-qubit support and factored into its two 3-qubit components, and the bare 8x8 product.

Run: ``python benchmarks/profile_exact_12q.py``; prints JSON (milliseconds) on stdout. Findings: docs/performance.md.
"""

from __future__ import annotations

import json
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from qff_core.execution.exact.compiler import exchange_factors
from qff_core.execution.exact.statevector import apply_1q, apply_exchange, apply_exchange_factors, apply_exchange_sum
from qff_core.execution.gates import enable_x64, heisenberg_sum_eig

N_QUBITS, BATCH = 12, 64


def cpu_ms(fn, *args, repeats: int = 10) -> float:
    """Median CPU milliseconds of a jitted call after its compilation."""
    fn = jax.jit(fn)
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        t0 = time.process_time()
        jax.block_until_ready(fn(*args))
        times.append(time.process_time() - t0)
    return 1e3 * statistics.median(times)


def main() -> int:
    enable_x64()
    rng = np.random.default_rng(0)
    shape = (2,) * N_QUBITS + (BATCH,)
    psi = jnp.asarray(rng.normal(size=shape) + 1j * rng.normal(size=shape))
    u = jnp.asarray(rng.normal(size=(N_QUBITS, 2, 2, BATCH)) + 1j * rng.normal(size=(N_QUBITS, 2, 2, BATCH)))
    w, v = jnp.asarray(rng.normal(size=shape)), jnp.asarray(rng.normal(size=shape))

    def encode(p, mats):
        for q in range(N_QUBITS):
            p = apply_1q(p, mats[q], q)
        return p

    def loss(p, mats):
        out = encode(p, mats)
        return jnp.sum(jnp.real(out) * w + jnp.imag(out) * v)

    grad_u = jax.grad(loss, argnums=1)

    def second_order(p, mats):  # d/dpsi of <grad_u, mats>: the shape of a force term's parameter gradient
        return jax.grad(lambda p, m: jnp.sum(jnp.real(grad_u(p, m) * m)), argnums=0)(p, mats)

    pairs = ((0, 1), (0, 2), (3, 4), (3, 5))
    whole, factors = heisenberg_sum_eig(pairs), exchange_factors(pairs)
    a8 = jnp.asarray(rng.normal(size=(8, psi.size // 8)) + 0j)
    u8 = jnp.asarray(rng.normal(size=(8, 8)) + 0j)
    out = {
        "state_mib": psi.nbytes / 2**20,
        "copy_of_the_state": cpu_ms(lambda p: p * 1.0001, psi),
        "encoding_layer_12_gates_forward": cpu_ms(encode, psi, u),
        "encoding_layer_gradient_wrt_gates": cpu_ms(grad_u, psi, u),
        "encoding_layer_second_order": cpu_ms(second_order, psi, u),
        "one_gate_matrix_gradient_as_one_einsum": cpu_ms(
            lambda a, b: jnp.einsum("i...b,j...b->ijb", jnp.moveaxis(a, 5, 0), jnp.moveaxis(b, 5, 0)), psi, psi),
        "exchange_gate_two_pairs": cpu_ms(lambda p: apply_exchange(p, ((1, 2), (4, 5)), 0.3), psi),
        "generator_whole_6_qubit_support": cpu_ms(lambda p: apply_exchange_sum(p, whole, 0.3), psi),
        "generator_two_3_qubit_factors": cpu_ms(lambda p: apply_exchange_factors(p, factors, 0.3), psi),
        "bare_complex_8x8_product": cpu_ms(lambda m, a: m @ a, u8, a8),
    }
    json.dump({"unit": "CPU ms, median of 10", "n_qubits": N_QUBITS, "batch": BATCH, "kernels": out}, sys.stdout,
              indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
