"""The exact simulator of a fragment model: monomer and pair simulators compiled once, summed.

Every geometry's fragments (and fragment pairs) are gathered into one batch for the monomer
(pair) simulator, so all monomer energies of a batch come from one call. Forces are the
gradient of the summed energy; autodiff through the gather scatters each fragment's forces
back onto its atoms.
"""

from __future__ import annotations

from typing import Literal

import jax.numpy as jnp
import numpy as np

from qff_core.execution.exact.compiler import compile_circuit
from qff_core.execution.exact.simulator import ExactSimulator, simulator_from_energies
from qff_core.models.fragment import FragmentModel


def compile_composite(model: FragmentModel, *, strategy: Literal["auto", "dense", "tensor"] = "auto",
                     unroll: bool | None = None) -> ExactSimulator:
    """An ExactSimulator of ``model``: E = sum of monomer energies + sum of pair energies + e0."""
    monomer = compile_circuit(model.monomer, strategy=strategy, unroll=unroll)
    pair = compile_circuit(model.pair, strategy=strategy, unroll=unroll)
    frag_atoms = np.array(model.fragments)  # (fragments, atoms per fragment)
    pair_atoms = np.array([model.fragments[m] + model.fragments[n] for m, n in model.fragment_pairs])
    mono_params, pair_params, offset = model.monomer_slice, model.pair_slice, model.offset

    def summed(sim: ExactSimulator, theta: jnp.ndarray, positions: jnp.ndarray, atoms: np.ndarray) -> jnp.ndarray:
        """Sum over the atom groups ``atoms`` (terms, k) of ``sim``'s energies, per geometry."""
        n = positions.shape[0]
        parts = positions[:, atoms].reshape(n * atoms.shape[0], atoms.shape[1], 3)
        return sim.batch_energies_fn(theta, parts).reshape(n, atoms.shape[0]).sum(axis=1)

    def batch_energies_fn(theta: jnp.ndarray, positions: jnp.ndarray) -> jnp.ndarray:
        return (summed(monomer, theta[mono_params], positions, frag_atoms)
                + summed(pair, theta[pair_params], positions, pair_atoms) + theta[offset])

    return simulator_from_energies(model, batch_energies_fn)
