"""The exact JAX simulator: closed forms, an independent dense reference, forces, batching."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import FINITE_DIFFERENCE_TOL, FLOAT64_TOL, GATE_TOL, TEST_BATCH, simulator_for
from dense_reference import PAULI, energy, heisenberg
from scipy.linalg import expm

from qff_core.audit import random_geometries
from qff_core.errors import GeometryError, InputError
from qff_core.execution.exact.statevector import apply_exchange, initial_state
from qff_core.execution.gates import axis_rotation, enable_x64, heisenberg_sum_eig, pair_components, su2_encoding
from qff_core.models import build_model, init_parameters
from qff_core.models.ir import ExchangeSum
from qff_core.molecules import BUILTIN_NAMES, builtin_molecule

enable_x64()


def test_encoding_gate_is_the_closed_form_of_the_exponential(rng):
    for _ in range(20):
        v, alpha = rng.normal(size=3), rng.uniform(-4, 4)
        ref = expm(-0.5j * alpha * sum(c * P for c, P in zip(v, PAULI, strict=True)))
        assert np.abs(np.asarray(su2_encoding(jnp.asarray(v), alpha)) - ref).max() < GATE_TOL
    # At v = 0 the gate is the identity and its derivative is finite.
    assert np.allclose(np.asarray(su2_encoding(jnp.zeros(3), 1.3)), np.eye(2))
    jac = jax.jacfwd(lambda v: jnp.real(su2_encoding(v, 1.3)[0, 1]))(jnp.zeros(3))
    assert np.all(np.isfinite(np.asarray(jac)))


def test_encoding_is_su2_equivariant(rng):
    from qff_core.symmetry import random_rotation

    v, alpha = rng.normal(size=3), 1.7
    R = random_rotation(rng)
    # U_R: the SU(2) image of R, from axis-angle.
    angle = np.arccos(np.clip((np.trace(R) - 1) / 2, -1, 1))
    axis = np.array([R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1]]) / (2 * np.sin(angle))
    U = expm(-0.5j * angle * sum(c * P for c, P in zip(axis, PAULI, strict=True)))
    lhs = np.asarray(su2_encoding(jnp.asarray(R @ v), alpha))
    rhs = U @ np.asarray(su2_encoding(jnp.asarray(v), alpha)) @ U.conj().T
    assert np.abs(lhs - rhs).max() < GATE_TOL


def test_axis_rotations_and_exchange_closed_forms(rng):
    for axis in range(3):
        a = rng.uniform(-3, 3)
        assert np.abs(np.asarray(axis_rotation(axis, a)) - expm(-0.5j * a * PAULI[axis])).max() < GATE_TOL
    J = 2.9  # large J: where expm-based gates lose accuracy
    psi = rng.normal(size=(2, 2, 2)) + 1j * rng.normal(size=(2, 2, 2))
    out = np.asarray(apply_exchange(jnp.asarray(psi), ((0, 2),), J)).reshape(-1)
    ref = expm(-1j * J * heisenberg(0, 2, 3)) @ psi.reshape(-1)
    assert np.abs(out - ref).max() < FLOAT64_TOL


def test_orbit_summed_generator_eigendecomposition():
    pairs = ((0, 1), (0, 2), (1, 2))
    support, lam, vec = heisenberg_sum_eig(pairs)
    h = sum(heisenberg(a, b, 3) for a, b in pairs)
    assert support == [0, 1, 2]
    assert np.abs(vec @ np.diag(lam) @ vec.T - h).max() < FLOAT64_TOL
    assert sorted(set(np.round(lam, 10))) == [-3.0, 3.0]  # S=1/2 and S=3/2 sectors


def test_initial_state_is_a_product_of_singlets():
    model = build_model(builtin_molecule("h2o"), depth=1)
    psi = initial_state(model).reshape(-1)
    singlet = np.array([0, 1, -1, 0]) / np.sqrt(2)
    assert np.abs(psi - np.kron(singlet, singlet)).max() < GATE_TOL


@pytest.mark.parametrize(
    ("molecule", "config"),
    [
        ("h2o", {"model": "invariant"}),
        ("h2o", {"model": "generic"}),
        ("lih", {"model": "invariant", "rep": 1}),  # ancilla
        ("nh3", {"model": "invariant", "pattern": "all-to-all"}),  # orbit-summed generators
        ("h2o", {"model": "invariant", "symmetry_breaking": "trainable", "blocks": 2, "symmetrize_inversion": True}),
        ("ch4", {"model": "invariant", "rep": 1, "observable": "all-pairs"}),
    ],
)
def test_jax_simulator_agrees_with_dense_reference(molecule, config, rng):
    sim = simulator_for(molecule, **config)
    model = sim.model
    theta = init_parameters(model, seed=3, strategy="random")
    X = random_geometries(model, TEST_BATCH, rng)
    E, _ = sim.evaluate(theta, X)
    E_ref = np.array([energy(model, theta, x) for x in X[:3]])
    E = E[:3]
    assert np.abs(E - E_ref).max() < FLOAT64_TOL


@pytest.mark.parametrize("name, model_kind", [
    *[(name, "invariant") for name in BUILTIN_NAMES],
    *[(name, "generic") for name in ("lih", "h2o")],
    # the generic circuits of the larger molecules (10-60 s of compilation each) repeat the gates LiH and H2O cover
    *[pytest.param(name, "generic", marks=pytest.mark.slow) for name in BUILTIN_NAMES if name not in ("lih", "h2o")],
])
def test_forces_are_minus_the_gradient(name, model_kind, rng):
    sim = simulator_for(name, model=model_kind)
    model = sim.model
    theta = init_parameters(model, seed=5, strategy="random")
    h = 1e-5
    n_atoms = model.molecule.n_atoms
    # Each geometry with its +h and -h displacements along all 3N coordinates, in one batch.
    steps = np.eye(3 * n_atoms).reshape(3 * n_atoms, n_atoms, 3) * h
    per_geometry = 1 + 2 * len(steps)
    X = random_geometries(model, max(1, 64 // per_geometry), rng)
    batch = np.concatenate([np.concatenate([x[None], x + steps, x - steps]) for x in X])
    E, F = sim.evaluate(theta, batch)
    for k in range(len(X)):
        sl = slice(k * per_geometry, (k + 1) * per_geometry)
        e, f = E[sl], F[sl]
        plus, minus = e[1 : 1 + len(steps)], e[1 + len(steps) :]
        fd = -(plus - minus).reshape(n_atoms, 3) / (2 * h)
        assert np.abs(fd - f[0]).max() < FINITE_DIFFERENCE_TOL
    # The model depends on relative vectors only: no net force.
    assert np.abs(F.sum(axis=1)).max() < FLOAT64_TOL


@pytest.mark.parametrize("model_kind", ["invariant", "generic"])
def test_one_at_a_time_equals_batched(model_kind, rng):
    sim = simulator_for("nh3", model=model_kind)
    theta = jnp.asarray(init_parameters(sim.model, seed=1, strategy="random"))
    X = random_geometries(sim.model, TEST_BATCH, rng)
    batched, _ = sim.evaluate(theta, X)
    single = jax.jit(sim.energy_fn)
    one_by_one = np.array([float(single(theta, jnp.asarray(x))) for x in X[:5]])
    batched = batched[:5]
    assert np.abs(batched - one_by_one).max() < GATE_TOL


def test_energy_scale_and_offset_are_the_output_map(rng):
    sim = simulator_for("h2o")
    model = sim.model
    theta = init_parameters(model, seed=2)
    X = random_geometries(model, TEST_BATCH, rng)
    E1, F1 = sim.evaluate(theta, X)
    theta2 = theta.copy()
    theta2[model.scale] *= -2.5
    theta2[model.offset] = 7.0
    E2, F2 = sim.evaluate(theta2, X)
    assert np.allclose(E2, -2.5 * (E1 - theta[model.offset]) + 7.0, atol=1e-12)
    assert np.allclose(F2, -2.5 * F1, atol=1e-12)


def test_evaluate_rejects_bad_geometries():
    sim = simulator_for("h2o")
    theta = init_parameters(sim.model)
    X = np.stack([sim.model.molecule.positions_a] * 2)
    X[1, 0, 0] = np.nan
    with pytest.raises(GeometryError, match="NaN"):
        sim.evaluate(theta, X)
    with pytest.raises(GeometryError, match="expected 3 atoms"):
        sim.evaluate(theta, np.zeros((2, 4, 3)))
    with pytest.raises(InputError, match="has 14 parameters"):
        sim.evaluate(theta[:-1], X[:1])
    bad = theta.copy()
    bad[0] = np.inf
    with pytest.raises(InputError, match="NaN or infinite"):
        sim.evaluate(bad, X[:1])


@pytest.mark.parametrize(
    ("molecule", "config"),
    [("h2o", {"symmetry_breaking": "trainable"}), ("h2o", {"model": "generic"}),
     ("nh3", {"pattern": "all-to-all", "depth": 1})],
)
def test_every_strategy_and_unrolling_gives_the_same_numbers(molecule, config, rng):
    from qff_core.execution.exact import compile_exact

    model = simulator_for(molecule, **config).model
    theta = init_parameters(model, seed=6, strategy="random")
    X = random_geometries(model, TEST_BATCH, rng)
    E0, F0 = simulator_for(molecule, **config).evaluate(theta, X)
    for strategy, unroll in (("dense", True), ("dense", False), ("tensor", True), ("tensor", False)):
        E, F = compile_exact(model, strategy=strategy, unroll=unroll).evaluate(theta, X)
        assert np.abs(E - E0).max() < FLOAT64_TOL and np.abs(F - F0).max() < 10 * FLOAT64_TOL, (strategy, unroll)


def test_pair_components_split_commuting_groups():
    assert pair_components(((0, 1), (0, 2), (3, 4), (3, 5))) == [((0, 1), (0, 2)), ((3, 4), (3, 5))]
    assert pair_components(((0, 1), (2, 3), (1, 2))) == [((0, 1), (2, 3), (1, 2))]  # joined through (1, 2)
    assert pair_components(((5, 6), (4, 6), (2, 9), (1, 9))) == [((5, 6), (4, 6)), ((2, 9), (1, 9))]


@pytest.mark.parametrize(("molecule", "config", "split"), [("h2o_dimer", {"rep": 1}, True),
                                                           ("nh3", {"rep": 2, "depth": 2}, False)])
def test_factored_generators_agree_with_the_whole_support_and_the_dense_reference(molecule, config, split, rng):
    from qff_core.execution.exact.compiler import compile_circuit

    model = simulator_for(molecule, **config).model
    assert split == any(len(pair_components(g.pairs)) > 1 for g in model.gates() if isinstance(g, ExchangeSum))
    theta = init_parameters(model, seed=4, strategy="random")
    X = random_geometries(model, TEST_BATCH, rng)
    E, F = compile_circuit(model, strategy="tensor").evaluate(theta, X)
    E1, F1 = compile_circuit(model, strategy="tensor", factor_exchange=False).evaluate(theta, X)
    assert np.abs(E - E1).max() < FLOAT64_TOL and np.abs(F - F1).max() < 10 * FLOAT64_TOL
    assert np.abs(E[:2] - np.array([energy(model, theta, x) for x in X[:2]])).max() < FLOAT64_TOL


@pytest.mark.parametrize(("molecule", "config"), [
    ("h2o_dimer", {"rep": 1}),
    pytest.param("ch4", {"rep": 2, "depth": 2}, marks=pytest.mark.slow),  # 8 qubits; the default blocks of every
    pytest.param("nh3", {"model": "generic", "depth": 2}, marks=pytest.mark.slow),  # model meet the dense reference
])
def test_kronecker_blocks_of_single_qubit_gates_equal_one_by_one(molecule, config, rng):
    """Encodings (per-geometry matrices) and trainable rotations (shared matrices) on adjacent qubits applied as
    Kronecker blocks of every size give the one-by-one energies and forces, and the dense reference's."""
    from qff_core.execution.exact.compiler import BLOCK_1Q, compile_circuit

    model = simulator_for(molecule, **config).model
    theta = init_parameters(model, seed=8, strategy="random")
    X = random_geometries(model, TEST_BATCH, rng)
    E0, F0 = compile_circuit(model, strategy="tensor", block_1q=0).evaluate(theta, X)
    for block in sorted({2, BLOCK_1Q, 4}):
        E, F = compile_circuit(model, strategy="tensor", block_1q=block).evaluate(theta, X)
        assert np.abs(E - E0).max() < FLOAT64_TOL and np.abs(F - F0).max() < 10 * FLOAT64_TOL
    assert np.abs(E0[:2] - np.array([energy(model, theta, x) for x in X[:2]])).max() < FLOAT64_TOL


@pytest.mark.parametrize(("molecule", "config"), [("h2o", {}),
                                                  pytest.param("h2o_dimer", {"rep": 1}, marks=pytest.mark.slow)])
def test_per_geometry_loss_gradients_equal_the_batched_ones(molecule, config, rng):
    """The large-model path (loss gradient accumulated one geometry at a time) gives the batched loss, gradient
    and Adam step to rounding (energy-and-force loss: double backprop on both sides). The path does not depend on
    the molecule: H2O by default, the 8-qubit dimer (60 s, mostly compilation) with the slow tests."""
    import optax

    from qff_core.execution.base import ParameterMap, TrainingArrays
    from qff_core.execution.exact.executor import ExactExecutor
    from qff_core.loss import Loss

    sim = simulator_for(molecule, **config)
    model = sim.model
    theta = init_parameters(model, seed=6, strategy="random")
    X = random_geometries(model, TEST_BATCH, rng)
    E, F = sim.evaluate(init_parameters(model, seed=7, strategy="random"), X)  # a target from other parameters
    loss = Loss(w_energy=1.0, w_forces=10.0, energy_scale_ev=0.3, force_scale_ev_per_a=0.7, energy_shift_ev=0.1)
    batched, mapped = ExactExecutor(sim, per_geometry=False), ExactExecutor(sim, per_geometry=True)
    v0, g0 = batched.loss_and_grad(theta, X, E, F, loss)
    v1, g1 = mapped.loss_and_grad(theta, X, E, F, loss)
    assert v0 > 0 and np.abs(g0).max() > 1e-3
    assert abs(v1 - v0) < FLOAT64_TOL * abs(v0) and np.abs(g1 - g0).max() < FLOAT64_TOL * np.abs(g0).max()
    pmap = ParameterMap(multiplier=np.full(model.n_parameters, 2.0), shift=np.full(model.n_parameters, 0.1))
    data = TrainingArrays(positions_a=X, energies_ev=E, forces_ev_per_a=F)
    opt, p0 = optax.adam(1e-2), jnp.asarray(theta)
    idx = jnp.arange(len(X))
    out = [ex.training_step(loss, opt, pmap, data)(p0, opt.init(p0), idx, 0) for ex in (batched, mapped)]
    assert abs(float(out[0][2]) - float(out[1][2])) < FLOAT64_TOL * abs(float(out[0][2]))
    # Adam's first update is lr * g / (|g| + eps): where g is rounding noise (a parameter the energy cannot see)
    # it amplifies that noise, so the updates are compared where the gradient is real
    live = np.abs(g0) > 1e-6
    assert live.sum() > 5
    assert np.abs(np.asarray(out[0][0]) - np.asarray(out[1][0]))[live].max() < FLOAT64_TOL
