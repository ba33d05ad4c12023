"""Quantum execution: Qiskit templates, parameter-shift plans, executors, against the exact JAX path."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import FLOAT64_TOL, simulator_for
from scripted import ScriptedEvaluator, ScriptedJobs

from qff_core.audit import random_geometries
from qff_core.errors import InputError
from qff_core.execution.gates import HEISENBERG_PAIR, PAULI_ROTATION, ShiftRule, frequency_rule
from qff_core.execution.qiskit.angles import encode_coefficients
from qff_core.execution.qiskit.compiler import compile_qiskit, transpile_for
from qff_core.execution.shift.planner import Request
from qff_core.models import init_parameters

SHIFT_TOL = 1e-8  # parameter shift on exact Aer vs autodiff of the exact simulator (float64)
N_SIGMA = 5  # shots: estimates within this many standard errors of the exact value

CASES = [
    ("h2o", {"model": "invariant", "depth": 1}),
    ("h2o", {"model": "generic", "depth": 1}),
    ("lih", {"model": "invariant", "depth": 1, "symmetry_breaking": "frozen"}),  # frozen angles: zero gradient
    ("lih", {"model": "generic", "depth": 1, "symmetrize_inversion": True}),  # E = (E(X) + E(-X)) / 2
]
NH3_CASE = ("nh3", {"pattern": "all-to-all", "depth": 1, "rep": 1})  # an orbit-summed generator (H triangle)


def _aer_expectations(program, values: np.ndarray) -> np.ndarray:
    from qiskit_aer.primitives import EstimatorV2

    est = EstimatorV2(options={"backend_options": {"runtime_parameter_bind_enable": True}})
    return est.run([(program.circuit, program.observable, values)]).result()[0].data.evs


@pytest.mark.parametrize(
    ("molecule", "config"),
    [*CASES, NH3_CASE, ("h2o", {"symmetry_breaking": "trainable", "symmetrize_inversion": True, "depth": 1}),
     ("nh3", {"pattern": "comb", "depth": 1, "rep": 2})],
)
def test_template_energies_equal_the_exact_simulator(molecule, config, rng):
    sim = simulator_for(molecule, **config)
    model = sim.model
    q = compile_qiskit(model)
    theta = init_parameters(model, seed=3, strategy="random")
    X = random_geometries(model, 3, rng)
    E_exact, _ = sim.evaluate(theta, X)
    program = transpile_for(q)  # rz/sx/x/cx
    ev = np.mean([_aer_expectations(program, q.bind(theta, X, s)) for s in q.images], axis=0)
    assert np.abs(theta[model.scale] * ev + theta[model.offset] - E_exact).max() < SHIFT_TOL


def test_encoding_coefficients_are_finite_and_exact_on_the_z_axis():
    """LiH's reference geometry has H on the z axis, where the (g, b) chain rule is singular."""
    import jax
    import jax.numpy as jnp

    from qff_core.execution.gates import axis_rotation, su2_encoding
    from qff_core.execution.qiskit.angles import encode_angles

    def z_of(u):  # <Z> of U|+>
        a, b = (u[0, 0] + u[0, 1]) / np.sqrt(2), (u[1, 0] + u[1, 1]) / np.sqrt(2)
        return jnp.abs(a) ** 2 - jnp.abs(b) ** 2

    @jax.jit
    def z_after(angles):
        u = jnp.eye(2, dtype=complex)
        for axis, a in zip((2, 1, 2, 1, 2), angles, strict=True):
            u = axis_rotation(axis, a) @ u
        return z_of(u)

    grad_exact = jax.jit(jax.grad(lambda v: z_of(su2_encoding(v, 1.3))))
    coefficients = jax.jit(encode_coefficients)
    for x in (np.array([0.0, 0.0, 1.59]), np.array([0.3, -0.2, 0.9])):
        c = np.asarray(coefficients(1.3, jnp.asarray(x)))
        assert np.all(np.isfinite(c)) and np.count_nonzero(np.abs(c).sum(axis=1)) == 3
        angles = np.asarray(encode_angles(jnp.asarray(1.3), jnp.asarray(x)))
        d = [sum(cf * float(z_after(angles + sh * np.eye(5)[i]))
                 for sh, cf in zip(PAULI_ROTATION.shifts, PAULI_ROTATION.coeffs, strict=True)) for i in range(5)]
        assert np.abs(np.asarray(d) @ c - np.asarray(grad_exact(jnp.asarray(x)))).max() < FLOAT64_TOL


@pytest.mark.parametrize("molecule", ["lih", "h2o", "nh3", "ch4", "h2o_dimer"])
def test_the_evaluation_frame_keeps_every_atom_off_the_z_axis(molecule, rng):
    """A proper rotation; every atom in the xy plane for linear and three-atom molecules, far from z otherwise."""
    from qff_core.execution.qiskit.frame import axis_alignment, frame_rotation

    model = simulator_for(molecule).model
    center = model.molecule.center
    X = np.concatenate([model.molecule.positions_a[None], random_geometries(model, 20, rng)])
    for positions in X:
        x = positions - (positions.mean(axis=0) if center is None else positions[center])
        r = np.asarray(frame_rotation(x))
        assert np.abs(r @ r.T - np.eye(3)).max() < FLOAT64_TOL and abs(np.linalg.det(r) - 1) < FLOAT64_TOL
        cos = float(axis_alignment(x @ r.T, np.eye(3)[2:])[0])  # largest |cos| between an atom and z
        assert cos < (FLOAT64_TOL if molecule in ("lih", "h2o") else 0.7), (molecule, cos)  # measured <= 0.69


def test_sampled_forces_on_the_z_axis_are_as_precise_as_off_it():
    """H on the z axis with alpha |x| = pi: the five encoding units' axes span a plane, so the map from shift
    derivatives to forces was singular there (and 200x noisier near it). The evaluation frame removes that."""
    from scipy.spatial.transform import Rotation

    from qff_core.execution.registry import get_executor

    sim = simulator_for("lih", depth=1)
    model = sim.model
    theta = init_parameters(model, seed=4, strategy="random")
    bond_a = 1.8
    theta[[p.name for p in model.parameters].index("alpha[l0,c0,H]")] = np.pi / bond_a
    on_axis = np.array([[0.0, 0.0, 0.0], [0.0, 0.0, bond_a]])
    X = np.stack([on_axis, on_axis @ Rotation.random(random_state=5).as_matrix().T])
    E0, F0 = sim.evaluate(theta, X)
    E, F = get_executor("aer", model).energies_forces(theta, X)
    assert np.abs(E - E0).max() < SHIFT_TOL and np.abs(F - F0).max() < SHIFT_TOL
    aer = get_executor("aer", model, shots=4000, seed=2)
    res = aer.run(aer.plan(theta, X, Request(forces=True)))
    spread = res.forces_var.sum(axis=(1, 2))  # rotation invariant: the trace of each geometry's force covariance
    assert np.all(np.isfinite(spread)) and 0.5 < spread[0] / spread[1] < 2, spread
    assert np.all(np.abs(res.forces - F0) < N_SIGMA * np.sqrt(res.forces_var))
    # What the frame prevents: in the data frame the map from shift derivatives to forces is singular here.
    bare = compile_qiskit(model, off_axis_frame=False).batch_force_coefficients(theta, on_axis[None], 1.0)
    framed = compile_qiskit(model).batch_force_coefficients(theta, on_axis[None], 1.0)
    assert np.abs(np.asarray(bare)).max() > 1e6 > 1e2 > np.abs(np.asarray(framed)).max()


def test_a_huge_shot_count_takes_no_more_memory_than_a_small_one(rng):
    """Seen in review: --shots 1e8 held every bitstring of a PUB at once and the kernel killed the machine's largest
    process at 24 GB. Shots are counts drawn from each row's outcome probabilities now: 1e7 shots (the most the
    settings allow) cost what 100 do, and the estimates tighten as 1/sqrt(shots) around the exact values."""
    import tracemalloc

    from qff_core.execution.registry import get_executor

    sim = simulator_for("lih", depth=1)
    theta = init_parameters(sim.model, seed=4, strategy="random")
    X = random_geometries(sim.model, 3, rng)
    E0, F0 = sim.evaluate(theta, X)
    peaks, results = [], []
    for shots in (100, 10**7):
        executor = get_executor("aer", sim.model, shots=shots, seed=7)
        plan = executor.plan(theta, X, Request(forces=True))
        tracemalloc.start()
        results.append(executor.run(plan))
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    few, many = results
    assert peaks[1] < 2 * peaks[0] + 2**20, peaks  # independent of the shot count (bitstrings: ~40 GB here)
    assert np.all(np.abs(many.energies - E0) < N_SIGMA * np.sqrt(many.energies_var))
    assert np.all(np.abs(many.forces - F0) < N_SIGMA * np.sqrt(many.forces_var))
    ratio = np.sqrt(few.energies_var / many.energies_var)
    assert np.all((ratio > 0.5 * np.sqrt(1e5)) & (ratio < 2 * np.sqrt(1e5))), ratio


def test_the_same_seed_gives_the_same_shots_however_the_rows_are_split(rng):
    """Reproducibility across machines: every row's shots come from (seed, row), so one job, three jobs, or PUBs of
    five rows two to a job (what another Dask worker count or rows_per_pub gives) draw the same shots, bit for bit,
    under device noise too; another seed draws others."""
    from qff_core.execution.qiskit.aer import AerEvaluator
    from qff_core.execution.shift.fanout import run_plan
    from qff_core.execution.shift.planner import Batching, plan_shifts

    sim = simulator_for("lih", depth=1)
    q = compile_qiskit(sim.model)
    theta = init_parameters(sim.model, seed=4, strategy="random")
    X = random_geometries(sim.model, 2, rng)
    splits = [Batching(), Batching(min_chunks=3), Batching(rows_per_pub=5, pubs_per_chunk=2)]
    for evaluator in (AerEvaluator(shots=1000), AerEvaluator(shots=1000, noise_backend="FakeManilaV2")):
        program = evaluator.prepare(q)
        plans = [plan_shifts(q, theta, X, Request(forces=True), split) for split in splits]
        n = plans[0].n_rows
        assert [(p.n_pubs, p.n_chunks) for p in plans] == [(1, 1), (3, 3), (-(-n // 5), -(-n // 10))]
        first, *others = [run_plan(p, evaluator, program, seed=3) for p in plans]
        for evs, var in others:
            np.testing.assert_array_equal(evs, first[0])
            np.testing.assert_array_equal(var, first[1])
        assert not np.array_equal(run_plan(plans[0], evaluator, program, seed=4)[0], first[0])


def test_probability_sampling_draws_what_aers_own_sampler_draws(tmp_path, rng):
    """Two implementations of one measurement: shots counted from Aer's outcome probabilities (with readout and
    measurement errors applied by qff) against Aer's SamplerV2 drawing bitstrings with the same noise model, on
    a noise file with asymmetric per-qubit and default readout errors, a depolarising error on the measurement
    itself and CX errors. Without readout and measurement errors the probabilities reproduce Aer's exact noisy
    expectation values to 1e-12."""
    import json

    from qiskit_aer import AerSimulator
    from qiskit_aer.noise import NoiseModel, ReadoutError, depolarizing_error
    from qiskit_aer.primitives import SamplerV2

    from qff_core.execution.qiskit.aer import AerEvaluator, outcome_probabilities
    from qff_core.execution.qiskit.sampling import outcome_values, with_readout

    sim = simulator_for("lih", depth=1)
    q = compile_qiskit(sim.model)
    values = q.bind(init_parameters(sim.model, seed=4, strategy="random"), random_geometries(sim.model, 4, rng))
    gates, full = (NoiseModel(basis_gates=["cx", "rz", "sx", "x"]) for _ in range(2))
    for model in (gates, full):
        model.add_all_qubit_quantum_error(depolarizing_error(0.02, 2), ["cx"])
    full.add_all_qubit_readout_error(ReadoutError([[0.97, 0.03], [0.08, 0.92]]))
    full.add_readout_error(ReadoutError([[0.9, 0.1], [0.25, 0.75]]), [1])
    full.add_all_qubit_quantum_error(depolarizing_error(0.05, 1), ["measure"])
    files = {}
    for name, model in (("gates", gates), ("full", full)):
        files[name] = tmp_path / f"{name}.json"
        files[name].write_text(json.dumps(model.to_dict(serializable=True)))

    exact = AerEvaluator(noise_backend=str(files["gates"]))
    (expected, _), = exact.run(exact.prepare(q), [values], seed=None)
    program = AerEvaluator(shots=100, noise_backend=str(files["gates"])).prepare(q)
    total = sum(outcome_probabilities(AerSimulator(method="density_matrix", noise_model=gates), g.probabilities, values)
                @ outcome_values(g.masks, g.coeffs) for g in program.program.groups)
    assert np.abs(total - expected).max() < 1e-12
    assert with_readout(np.eye(4), (None, np.array([[0.9, 0.1], [0.25, 0.75]])))[2] == pytest.approx(
        [0.25, 0, 0.75, 0])  # bit 1 read: a true 1 reads 0 with probability 0.25

    shots = 20000
    ours = AerEvaluator(shots=shots, noise_backend=str(files["full"]))
    noisy = ours.prepare(q)
    (evs, var), = ours.run(noisy, [values], seed=5)
    aer_evs = aer_var = 0.0
    sampler = SamplerV2(default_shots=shots, seed=6, options={"backend_options": {"noise_model": full,
                                                                                   "method": "density_matrix"}})
    for g in noisy.program.groups:
        bits = sampler.run([(g.circuit, values)]).result()[0].data.meas.to_bool_array(order="little")
        per_shot = (1.0 - 2.0 * ((bits[..., None, :] & g.masks).sum(axis=-1) % 2)) @ g.coeffs
        aer_evs = aer_evs + per_shot.mean(axis=1)
        aer_var = aer_var + per_shot.var(axis=1, ddof=1) / shots
    z = (evs - aer_evs) / np.sqrt(var + aer_var)
    assert np.all(np.abs(z) < N_SIGMA), z
    assert np.all(np.abs(evs - expected) > 10 * np.sqrt(var))  # the readout and measurement errors did act
    np.testing.assert_allclose(var, aer_var, rtol=0.1)


def test_shift_rules_are_exact_for_their_frequencies():
    rng = np.random.default_rng(1)
    three = (2.0, 4.0, 6.0)
    for rule, freqs in ((PAULI_ROTATION, (1.0,)), (HEISENBERG_PAIR, (4.0,)), (frequency_rule(three), three)):
        a = rng.normal(size=(len(freqs), 2))
        p = rng.uniform(-3, 3)

        def f(t, a=a, freqs=freqs):
            return 0.7 + sum(ai[0] * np.cos(w * t) + ai[1] * np.sin(w * t) for ai, w in zip(a, freqs, strict=True))

        def df(t, a=a, freqs=freqs):
            return sum(w * (-ai[0] * np.sin(w * t) + ai[1] * np.cos(w * t)) for ai, w in zip(a, freqs, strict=True))

        est = sum(c * f(p + s) for s, c in zip(rule.shifts, rule.coeffs, strict=True))
        assert abs(est - df(p)) < FLOAT64_TOL
        second = rule.compose(rule)
        est2 = sum(c * f(p + s) for s, c in zip(second.shifts, second.coeffs, strict=True))
        d2 = -sum(w * w * (ai[0] * np.cos(w * p) + ai[1] * np.sin(w * p)) for ai, w in zip(a, freqs, strict=True))
        assert abs(est2 - d2) < 10 * FLOAT64_TOL
    assert isinstance(PAULI_ROTATION.compose(PAULI_ROTATION), ShiftRule)


# ----------------------------------------------------------------------------- parameter shift on Aer


@pytest.fixture(scope="module")
def dask_client():
    from qff_core.distributed import dask_client as make_client

    with make_client(n_workers=2, processes=False) as client:
        yield client


SCALES = {"energy_scale_ev": 0.7, "force_scale_ev_per_a": 1.3}


# The generic H2O case (25 s) is slow: LiH's generic case runs the same gates through the same shift rules.
@pytest.mark.parametrize(("molecule", "config"), [*[pytest.param(*c, marks=pytest.mark.slow) if c == CASES[1] else c
                                                    for c in CASES], NH3_CASE])
def test_parameter_shift_equals_exact_autodiff(molecule, config, dask_client, rng):
    """Energies, forces and loss gradients (energy, force and mixed losses) on exact Aer, fanned out on Dask.

    NH3 (orbit-summed generators, 6 qubits) checks the energy loss only: compiling the exact
    force-loss gradient of a 6-qubit model costs ~40 s, and the second-order path is the same code.
    """
    from qff_core.execution.exact.executor import ExactExecutor
    from qff_core.execution.registry import get_executor
    from qff_core.execution.shift.planner import Batching
    from qff_core.loss import Loss

    sim = simulator_for(molecule, **config)
    model = sim.model
    exact = ExactExecutor(sim)
    aer = get_executor("aer", model, client=dask_client, batching=Batching(rows_per_pub=1500, min_chunks=2))
    theta = init_parameters(model, seed=4, strategy="random")
    X = random_geometries(model, 2, rng)
    X[0] = model.molecule.positions_a  # LiH's reference: H on the z axis
    E_ref, F_ref = sim.evaluate(init_parameters(model, seed=9, strategy="random"), X)

    E, F = aer.energies_forces(theta, X)
    E0, F0 = exact.energies_forces(theta, X)
    assert np.abs(E - E0).max() < SHIFT_TOL and np.abs(F - F0).max() < SHIFT_TOL
    # The energy loss alone, then a mixed one (its force part follows by linearity).
    losses = [{"w_energy": 1.0, "w_forces": 0.0}, {"w_energy": 0.3, "w_forces": 0.7, "energy_shift_ev": 0.2}]
    for weights in losses[:1] if molecule == "nh3" else losses:
        loss, grad = aer.loss_and_grad(theta, X, E_ref, F_ref, Loss(**weights, **SCALES))
        loss0, grad0 = exact.loss_and_grad(theta, X, E_ref, F_ref, Loss(**weights, **SCALES))
        assert abs(loss - loss0) < SHIFT_TOL, weights
        assert np.abs(grad - grad0).max() < SHIFT_TOL, weights
        assert np.any(grad0 != 0)
        assert np.all(grad[~np.asarray(model.trainable_mask())] == 0)


def test_shot_estimates_lie_within_five_standard_errors(rng):
    from qff_core.execution.registry import get_executor
    from qff_core.execution.shift.planner import Request

    sim = simulator_for("h2o", depth=1)
    model = sim.model
    theta = init_parameters(model, seed=4, strategy="random")
    X = random_geometries(model, 2, rng)
    E0, F0 = sim.evaluate(theta, X)
    aer = get_executor("aer", model, shots=2000, seed=11)
    res = aer.run(aer.plan(theta, X, Request(forces=True)))
    assert np.all(res.energies_var > 0) and np.all(res.forces_var > 0)
    assert np.all(np.abs(res.energies - E0) < N_SIGMA * np.sqrt(res.energies_var))
    assert np.all(np.abs(res.forces - F0) < N_SIGMA * np.sqrt(res.forces_var))
    assert np.abs(res.energies - E0).max() > 1e-6  # really sampled
    again = aer.run(aer.plan(theta, X, Request(forces=True)))
    assert np.array_equal(again.forces, res.forces)  # seeded


def test_planned_gradient_counts_follow_the_formula(rng):
    from qff_core.execution.qiskit.compiler import compile_qiskit
    from qff_core.execution.shift.planner import Batching, Request, plan_shifts

    model = simulator_for("h2o", depth=1).model
    q = compile_qiskit(model)
    theta = init_parameters(model, seed=4)
    n = 5
    X = random_geometries(model, n, rng)
    trainable = model.trainable_mask()
    weight_units = sum(any(trainable[w] for w in u.weights) for u in q.units)
    encodes = sum(u.kind == "encode" and u.slot == 0 for u in q.units)
    batching = Batching(rows_per_pub=40, pubs_per_chunk=3)

    plan = plan_shifts(q, theta, X, Request(weight_gradient=True), batching)
    rows = n * (1 + 2 * weight_units)  # unshifted + two-term rule per weight-dependent gate angle
    assert (plan.n_circuits, plan.n_rows) == (1, rows)
    assert plan.n_pubs == -(-rows // 40) and plan.n_chunks == -(-plan.n_pubs // 3)

    plan = plan_shifts(q, theta, X, Request(forces=True, force_gradient=True), batching)
    P, W = 3 * encodes, weight_units  # position units per geometry: 3 per encoding gate
    both = encodes  # phi's unit is in both
    pairs = P * W - both * (both - 1) // 2
    rows = n * (1 + 2 * P + 4 * (pairs - both) + 2 * both)  # diagonal pairs reuse the unshifted row
    assert plan.n_rows == rows and plan.second.shape[0] == n * pairs


@pytest.mark.parametrize(("molecule", "config"), [*CASES, NH3_CASE])
def test_counts_from_structure_equal_the_plan(molecule, config, rng):
    from qff_core.execution.qiskit.compiler import compile_qiskit
    from qff_core.execution.shift.planner import Batching, Request, count_shifts, plan_shifts

    model = simulator_for(molecule, **config).model
    q = compile_qiskit(model)
    theta = init_parameters(model, seed=4, strategy="random")
    X = random_geometries(model, 3, rng)
    batching = Batching(rows_per_pub=500, pubs_per_chunk=2)
    for request in (Request(), Request(forces=True), Request(weight_gradient=True),
                    Request(forces=True, weight_gradient=True, force_gradient=True), Request(force_gradient=True)):
        assert count_shifts(q, 3, request, batching) == plan_shifts(q, theta, X, request, batching).cost(), request


def test_executor_registry():
    from qff_core.errors import InputError
    from qff_core.execution import ExecutorConfig, executor_names, executor_spec, found, get_executor
    from qff_core.execution.base import Executor
    from qff_core.reference import found as engines_found

    available = found()
    assert set(available) == {"exact", "aer", "ibm"} and all(ok for ok, _ in available.values())
    assert all(isinstance(ok, bool) and isinstance(why, str) for ok, why in [*available.values(),
                                                                            *engines_found().values()])
    assert executor_names(uses_dask=True) == ("aer",) and executor_names(remote=True) == ("ibm",)
    assert executor_spec("exact").exact and executor_spec("ibm").qpu and not executor_spec("aer").qpu
    with pytest.raises(InputError, match="unknown executor 'qpu'; choose one of exact, aer, ibm"):
        get_executor("qpu", simulator_for("lih", depth=1).model)
    with pytest.raises(ValueError, match="unknown executor"):
        ExecutorConfig(name="qpu")
    with pytest.raises(InputError, match="only aer do"):
        executor_spec("ibm").refuse_cluster()
    from argparse import Namespace

    from qff_core.cli.common import executor_cluster

    ibm = ExecutorConfig(name="ibm", backend="fake_manila")
    assert executor_cluster(Namespace(cluster=None, scheduler=None, workers=0), ibm) is None  # 0: in this process
    with pytest.raises(InputError, match="only aer do"):
        executor_cluster(Namespace(cluster=None, scheduler=None, workers=2), ibm)
    assert isinstance(get_executor("exact", simulator_for("lih", depth=1).model), Executor)


def test_noise_model_from_a_fake_backend_moves_the_energies(rng):
    from qff_core.execution.registry import get_executor

    sim = simulator_for("lih", depth=1)
    theta = init_parameters(sim.model, seed=4, strategy="random")
    X = random_geometries(sim.model, 2, rng)
    E0, _ = sim.evaluate(theta, X)
    E, F = get_executor("aer", sim.model, noise_backend="FakeManilaV2").energies_forces(theta, X)
    assert 1e-4 < np.abs(E - E0).max() < 0.5 * abs(theta[sim.model.scale]) and np.all(np.isfinite(F))


@pytest.mark.parametrize("backend", ["aer", "FakeManilaV2"])
def test_ibm_executor_in_local_testing_mode(backend, rng):
    """qiskit-ibm-runtime's client-side Estimator, local testing mode: ideal or a fake device."""
    from qff_core.execution.qiskit.ibm import ibm_backend, runtime_mode
    from qff_core.execution.registry import get_executor

    sim = simulator_for("lih", depth=1)
    theta = init_parameters(sim.model, seed=4, strategy="random")
    X = random_geometries(sim.model, 1, rng)
    E0, F0 = sim.evaluate(theta, X)
    options = {"resilience_level": 0, "default_shots": 4000}
    device = ibm_backend(backend)
    with runtime_mode(device, "session") as session:
        ibm = get_executor("ibm", sim.model, backend=device, options=options, mode=session, seed=5)
        res = ibm.run(ibm.plan(theta, X, Request(forces=True)))
    assert len(ibm.evaluator.job_ids) == ibm.plan(theta, X, Request(forces=True)).n_chunks
    if backend == "aer":  # shot noise only
        assert np.all(np.abs(res.energies - E0) < N_SIGMA * np.sqrt(res.energies_var))
        assert np.all(np.abs(res.forces - F0) < N_SIGMA * np.sqrt(res.forces_var))
    else:  # a noisy device: finite and in range
        assert np.all(np.isfinite(res.forces)) and np.abs(res.energies - E0).max() < 0.5 * abs(theta[sim.model.scale])


def test_local_testing_mode_runs_one_job_at_a_time(rng):
    """Local testing-mode jobs are threads of this process: a plan's jobs submitted all at once ran all at once
    (hundreds of simulations for 50 H2O geometries with TREX, and a Ctrl-C waited for every one to finish)."""
    from dataclasses import dataclass, field

    from qff_core.execution.qiskit.compiler import compile_qiskit
    from qff_core.execution.qiskit.ibm import IbmEvaluator, ibm_backend
    from qff_core.execution.shift.fanout import run_plan
    from qff_core.execution.shift.planner import Batching, plan_shifts

    @dataclass(frozen=True)
    class Watched(IbmEvaluator):  # the real evaluator, noting how many of its jobs run when it submits one
        jobs: list = field(default_factory=list, compare=False)
        running_at_submit: list = field(default_factory=list, compare=False)

        def submit(self, program, values, seed):
            self.running_at_submit.append(sum(not job.done() for job in self.jobs))
            self.jobs.append(super().submit(program, values, seed))
            return self.jobs[-1]

    sim = simulator_for("lih", depth=1)
    theta = init_parameters(sim.model, seed=4, strategy="random")
    X = random_geometries(sim.model, 2, rng)
    qmodel = compile_qiskit(sim.model)
    plan = plan_shifts(qmodel, theta, X, Request(forces=True), Batching(rows_per_pub=8))
    watched = Watched(backend=ibm_backend("FakeManilaV2"), options={"resilience_level": 0, "default_shots": 200})
    assert watched.runs_here and plan.n_chunks > 2
    evs, _ = run_plan(plan, watched, watched.prepare(qmodel), seed=1)
    assert len(watched.jobs) == plan.n_chunks and watched.running_at_submit == [0] * plan.n_chunks
    assert np.all(np.isfinite(evs))


def test_runtime_session_is_closed_on_success_and_on_error():
    """Real Session and Batch objects of the runtime (local mode: a fake backend, no network)."""
    from qiskit_ibm_runtime.fake_provider import FakeManilaV2

    from qff_core.execution.qiskit.ibm import runtime_mode

    with runtime_mode(FakeManilaV2(), "session") as session:
        assert session._active
    assert not session._active
    with pytest.raises(RuntimeError), runtime_mode(FakeManilaV2(), "batch") as batch:
        assert batch._active
        raise RuntimeError("job failed")
    assert not batch._active and type(batch).__name__ == "Batch"


@pytest.mark.parametrize("scripted", [ScriptedEvaluator, ScriptedJobs])
def test_transient_job_failures_are_retried_and_others_are_not(scripted, rng):
    from qff_core.errors import EngineError, TransientError
    from qff_core.execution.qiskit.compiler import compile_qiskit
    from qff_core.execution.shift.fanout import RetryPolicy, run_plan
    from qff_core.execution.shift.planner import plan_shifts

    model = simulator_for("lih", depth=1).model
    plan = plan_shifts(compile_qiskit(model), init_parameters(model), random_geometries(model, 2, rng))
    retry = RetryPolicy(attempts=3, delays_s=(0.0,))
    flaky = scripted({1: TransientError("queue timeout")})
    evs, _ = run_plan(plan, flaky, program=None, retry=retry)
    assert flaky.calls == plan.n_chunks + 1 and evs.shape == (plan.n_rows,)
    broken = scripted({1: EngineError("bad circuit")})
    with pytest.raises(EngineError):
        run_plan(plan, broken, program=None, retry=retry)
    assert broken.calls == 1
    down = scripted({n: TransientError("network") for n in range(1, 6)})
    with pytest.raises(TransientError):
        run_plan(plan, down, program=None, retry=retry)


def test_chunks_lost_with_a_killed_dask_worker_run_again(tmp_path, rng):
    """Worker processes that die mid-chunk (OOM killer, nanny restart) lose their tasks and their copies of the
    scattered program (here both workers die, so no copy is left): the lost chunks run again, and the result equals
    a run without a cluster."""
    from distributed import Client, LocalCluster
    from scripted import WorkerKiller

    from qff_core.execution.qiskit.aer import AerEvaluator
    from qff_core.execution.qiskit.compiler import compile_qiskit
    from qff_core.execution.shift.fanout import RetryPolicy, run_plan
    from qff_core.execution.shift.journal import ChunkResults
    from qff_core.execution.shift.planner import Batching, plan_shifts

    model = simulator_for("lih", depth=1).model
    q = compile_qiskit(model)
    plan = plan_shifts(q, init_parameters(model), random_geometries(model, 2, rng), Request(forces=True),
                       Batching(min_chunks=4))
    aer = AerEvaluator()
    program = aer.prepare(q)
    expected, _ = run_plan(plan, aer, program)
    killer = WorkerKiller(str(tmp_path / "killed"), kills=2, inner=aer)
    store = ChunkResults(tmp_path / "chunks")
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                      scheduler_kwargs={"dashboard_address": ":0"}) as cluster, \
            Client(cluster) as client:
        evs, _ = run_plan(plan, killer, program, client=client, retry=RetryPolicy(attempts=1, delays_s=(0.0,)),
                          results=store)
    assert len(list((tmp_path / "killed").iterdir())) == 2  # both workers did die
    np.testing.assert_allclose(evs, expected, atol=1e-12)
    # every chunk finished on the cluster was kept as it finished: a rerun runs none
    never = ScriptedEvaluator({1: AssertionError("a kept chunk ran again")}, inner=aer)
    np.testing.assert_array_equal(run_plan(plan, never, program, results=store)[0], evs)
    assert never.calls == 0


def test_a_killed_run_reattaches_to_its_recorded_jobs(tmp_path, rng):
    from qff_core.execution.qiskit.compiler import compile_qiskit
    from qff_core.execution.shift.fanout import RetryPolicy, run_plan
    from qff_core.execution.shift.journal import JobJournal
    from qff_core.execution.shift.planner import Batching, plan_shifts

    model = simulator_for("lih", depth=1).model
    q = compile_qiskit(model)
    X, forces, three = random_geometries(model, 2, rng), Request(forces=True), Batching(min_chunks=3)
    plan = plan_shifts(q, init_parameters(model), X, forces, three)
    journal = JobJournal(tmp_path / "jobs.json")
    retry = RetryPolicy(attempts=1, delays_s=(0.0,))

    class KilledError(Exception):
        pass

    server: dict = {}
    first = ScriptedJobs({1: KilledError()}, server=server)  # the process dies while waiting
    with pytest.raises(KilledError):
        run_plan(plan, first, program=None, retry=retry, journal=journal)
    assert first.calls == plan.n_chunks == 3 and len(journal.load()) == 3  # all submitted and recorded

    second = ScriptedJobs(server=server)
    evs, _ = run_plan(plan, second, program=None, retry=retry, journal=journal)
    assert second.calls == 0 and sorted(second.attached) == sorted(journal.load().values())
    assert evs.shape == (plan.n_rows,)
    other = plan_shifts(q, init_parameters(model, seed=1), X, forces, three)
    third = ScriptedJobs(server=server)
    run_plan(other, third, program=None, retry=retry, journal=journal)  # different rows: new jobs
    assert third.calls == 3 and not third.attached


def test_an_interrupted_plan_runs_only_the_chunks_that_did_not_finish(tmp_path, rng):
    """Finished chunks are kept as they finish; the rerun runs the others and gives, shot for shot, what an
    uninterrupted run gives (chunk seeds depend on the chunk alone). Other settings never reuse them."""
    from qff_core.execution.qiskit.aer import AerEvaluator
    from qff_core.execution.shift.fanout import RetryPolicy, run_plan
    from qff_core.execution.shift.journal import ChunkResults
    from qff_core.execution.shift.planner import Batching, plan_shifts

    model = simulator_for("lih", depth=1).model
    q = compile_qiskit(model)
    plan = plan_shifts(q, init_parameters(model), random_geometries(model, 2, rng), Request(forces=True),
                       Batching(min_chunks=4))
    assert plan.n_chunks == 4
    aer = AerEvaluator(shots=2000)
    program = aer.prepare(q)
    expected, expected_var = run_plan(plan, aer, program, seed=5)
    store = ChunkResults(tmp_path / "chunks", namespace="aer, 2000 shots, seed 5")
    retry = RetryPolicy(attempts=1, delays_s=(0.0,))

    class KilledError(Exception):
        pass

    killed = ScriptedEvaluator({3: KilledError()}, inner=aer)  # dies in the third chunk
    with pytest.raises(KilledError):
        run_plan(plan, killed, program, seed=5, retry=retry, results=store)
    assert store.stats["saved"] == 2 and len(list(store.folder.iterdir())) == 2
    rerun = ScriptedEvaluator(inner=aer)
    evs, var = run_plan(plan, rerun, program, seed=5, retry=retry, results=store)
    assert rerun.calls == 2 and store.stats["reused"] == 2
    np.testing.assert_array_equal(evs, expected)  # the same shots, not merely the same distribution
    np.testing.assert_array_equal(var, expected_var)
    other = ScriptedEvaluator(inner=aer)
    run_plan(plan, other, program, seed=5, retry=retry, results=ChunkResults(tmp_path / "chunks", "other settings"))
    assert other.calls == 4
    store.clear()
    ChunkResults(tmp_path / "chunks", "other settings").clear()
    assert not (tmp_path / "chunks").exists()


def test_remote_chunks_kept_before_a_kill_are_neither_reattached_nor_resubmitted(tmp_path, rng):
    from qff_core.execution.shift.fanout import RetryPolicy, run_plan
    from qff_core.execution.shift.journal import ChunkResults, JobJournal
    from qff_core.execution.shift.planner import Batching, plan_shifts

    model = simulator_for("lih", depth=1).model
    plan = plan_shifts(compile_qiskit(model), init_parameters(model), random_geometries(model, 3, rng), Request(),
                       Batching(min_chunks=3))
    journal, store = JobJournal(tmp_path / "jobs.json"), ChunkResults(tmp_path / "chunks")
    retry = RetryPolicy(attempts=1, delays_s=(0.0,))

    class KilledError(Exception):
        pass

    server: dict = {}
    first = ScriptedJobs({2: KilledError()}, server=server)  # dies waiting for the second job
    with pytest.raises(KilledError):
        run_plan(plan, first, program=None, retry=retry, journal=journal, results=store)
    assert first.calls == 3 and store.stats["saved"] == 1
    second = ScriptedJobs(server=server)
    run_plan(plan, second, program=None, retry=retry, journal=journal, results=store)
    assert second.calls == 0 and len(second.attached) == 2 and store.stats["reused"] == 1


def test_a_job_that_failed_on_the_backend_is_forgotten_and_resubmitted(tmp_path, rng):
    from qff_core.errors import EngineError
    from qff_core.execution.qiskit.compiler import compile_qiskit
    from qff_core.execution.shift.fanout import RetryPolicy, run_plan
    from qff_core.execution.shift.journal import JobJournal
    from qff_core.execution.shift.planner import Batching, plan_shifts

    model = simulator_for("lih", depth=1).model
    plan = plan_shifts(compile_qiskit(model), init_parameters(model), random_geometries(model, 3, rng), Request(),
                       Batching(min_chunks=3))
    assert plan.n_chunks == 3
    journal = JobJournal(tmp_path / "jobs.json")
    retry = RetryPolicy(attempts=3, delays_s=(0.0,))
    server: dict = {}
    failing = ScriptedJobs({1: EngineError("job failed on the backend")}, server=server)
    with pytest.raises(EngineError):
        run_plan(plan, failing, program=None, retry=retry, journal=journal)
    assert failing.calls == 3 and len(journal.load()) == 2  # not retried; its record dropped, the others kept
    rerun = ScriptedJobs(server=server)
    run_plan(plan, rerun, program=None, retry=retry, journal=journal)
    assert rerun.calls == 1 and len(rerun.attached) == 2


@pytest.mark.parametrize("form", ["cx3", "rotations"])
def test_exchange_unit_is_the_heisenberg_exponential(form):
    """Both compiled forms equal exp(-i J sigma.sigma) up to a global phase, for any J."""
    from qiskit import QuantumCircuit
    from qiskit.quantum_info import Operator
    from scipy.linalg import expm

    from qff_core.execution.qiskit.compiler import _exchange

    paulis = [np.array(m, dtype=complex) for m in ([[0, 1], [1, 0]], [[0, -1j], [1j, 0]], [[1, 0], [0, -1]])]
    heisenberg = sum(np.kron(p, p) for p in paulis)
    for j in (0.3, -1.1, 2.0, 7.7):
        qc = QuantumCircuit(2)
        _exchange(qc, j, 0, 1, form)
        u, target = Operator(qc).data, expm(-1j * j * heisenberg)
        phase = np.vdot(u.ravel(), target.ravel())
        assert np.abs(u * phase / abs(phase) - target).max() < 1e-12
        assert sum(1 for inst in qc.data if inst.operation.num_qubits == 2) == 3  # rxx, ryy, rzz lower to 2 CX each


def test_rotations_form_still_equals_the_exact_simulator(rng):
    sim = simulator_for("h2o", model="invariant", depth=1)
    q = compile_qiskit(sim.model, exchange="rotations")
    theta = init_parameters(sim.model, seed=3, strategy="random")
    X = random_geometries(sim.model, 3, rng)
    ev = _aer_expectations(transpile_for(q), q.bind(theta, X))
    assert np.abs(theta[sim.model.scale] * ev + theta[sim.model.offset] - sim.evaluate(theta, X)[0]).max() < SHIFT_TOL


# Two-qubit gates on FakeTorino (heavy hex), optimization level 3, measured with the fixed transpiler seed.
# LiH D=6: 19 (37 with RXX RYY RZZ). H2O D=6: 104 (182 with RXX RYY RZZ, 110 before the light cone): 2 singlets,
# 69 for the 23 exchange units inside the observable's light cone, 33 for 11 SWAPs, since the exchange ring
# 0-1-2-3-0 has no 4-cycle to sit on in a heavy-hex lattice. 11 SWAPs is the fewest any schedule needs, even
# with SWAPs fused into exchange units (an exhaustive search, benchmarks/exchange_routing_bound.py).
# The comb pattern (H1'-H1-H2-H2', a path) needs no SWAP: 2 singlets + 54 for 18 exchange units, + 6 (the
# transpiler's routing of the singlet on the path's ends).
TWO_QUBIT_GATES = {"lih": 20, "h2o": 104, "h2o-comb": 62}


@pytest.mark.parametrize("molecule", ["lih", "h2o", "h2o-comb"])
def test_two_qubit_gate_counts_on_fake_torino(molecule, capsys):
    from qff_core.cli import main

    name, _, pattern = molecule.partition("-")
    assert main(["model", "show", "--molecule", name, "--depth", "6", "--backend", "fake_torino",
                 "--optimization-level", "3", "--json", "--pattern", pattern or "ring"]) == 0
    import json

    t = json.loads(capsys.readouterr().out)["transpiled"]
    assert t["two_qubit_gates"] <= TWO_QUBIT_GATES[molecule]
    assert 0 < t["estimated_fidelity"] < 1 and len(t["layout"]) == {"lih": 2, "h2o": 4}[name]


def test_the_transpiler_level_that_model_show_reports_is_the_one_that_runs(rng):
    """`qff model show --optimization-level 3` reported a layout no run could use: execution always transpiled at
    level 1. The executors take the level: at 3 the noisy Aer and IBM local-testing programs sit on the qubits the
    level-3 report names (not level 1's), and exact Aer at level 3 still equals the exact simulator."""
    from qff_core.execution import ExecutorConfig, open_executor
    from qff_core.execution.qiskit.aer import fake_backend
    from qff_core.execution.qiskit.report import transpile_report
    from qff_core.execution.registry import get_executor

    sim = simulator_for("h2o", depth=1)
    q = compile_qiskit(sim.model)
    torino = fake_backend("fake_torino")
    layouts = {level: sorted(transpile_report(q, torino, optimization_level=level)["layout"]) for level in (1, 3)}
    assert layouts[1] != layouts[3]
    for level in (1, 3):
        for config in (ExecutorConfig(name="aer", noise_backend="fake_torino", optimization_level=level),
                       ExecutorConfig(name="ibm", backend="fake_torino", optimization_level=level, shots=100)):
            with open_executor(config, sim.model, seed=1) as executor:
                assert executor.describe()["device"]["physical_qubits"] == layouts[level], config.name  # recorded
    theta = init_parameters(sim.model, seed=4, strategy="random")
    X = random_geometries(sim.model, 2, rng)
    E, F = get_executor("aer", sim.model, optimization_level=3).energies_forces(theta, X)
    E0, F0 = sim.evaluate(theta, X)
    assert np.abs(E - E0).max() < SHIFT_TOL and np.abs(F - F0).max() < SHIFT_TOL
    with pytest.raises(ValueError, match="the exact executor does not take optimization_level"):
        ExecutorConfig(name="exact", optimization_level=3)


def test_device_noise_on_the_used_qubits_equals_the_full_device(rng):
    """Simulating the qubits a circuit uses with the device noise restricted to them is the same computation as
    simulating the whole (5-qubit) device."""
    from qff_core.execution.qiskit.aer import AerEvaluator, AerProgram, fake_backend
    from qff_core.execution.qiskit.noise import device_noise_dict

    sim = simulator_for("lih", model="invariant", depth=1)
    q = compile_qiskit(sim.model)
    theta = init_parameters(sim.model, seed=3, strategy="random")
    values = q.bind(theta, random_geometries(sim.model, 3, rng))
    evaluator = AerEvaluator(noise_backend="FakeManilaV2")
    reduced = evaluator.prepare(q)
    assert len(reduced.program.circuit.qubits) == len(reduced.device["physical_qubits"]) < 5
    backend = fake_backend("FakeManilaV2")
    full = AerProgram(transpile_for(q, backend), device_noise_dict(backend))
    (ev_full, _), = evaluator.run(full, [values], seed=1)
    (ev_reduced, _), = evaluator.run(reduced, [values], seed=1)
    assert np.abs(ev_full - ev_reduced).max() < 1e-10


@pytest.mark.slow
@pytest.mark.parametrize(("backend", "width"), [("fake_torino", 133), ("fake_fez", 156), ("fake_sherbrooke", 127)])
def test_noisy_aer_on_a_large_device_is_reproducible(backend, width, rng):
    from qff_core.execution import get_executor

    sim = simulator_for("lih", model="invariant", depth=1)
    theta = init_parameters(sim.model, seed=3, strategy="random")
    X = random_geometries(sim.model, 2, rng)
    noisy = get_executor("aer", sim.model, noise_backend=backend, shots=500, seed=7)
    assert noisy.program.device["backend"] == backend
    assert all(0 <= p < width for p in noisy.program.device["physical_qubits"])
    (e1, f1), (e2, f2) = noisy.energies_forces(theta, X), noisy.energies_forces(theta, X)
    assert np.array_equal(e1, e2) and np.array_equal(f1, f2)
    assert np.abs(e1 - sim.evaluate(theta, X)[0]).max() > 1e-6  # noise and shots moved them
    with pytest.raises(InputError, match=r"no fake backend 'fake_nowhere'; it has .*fake_torino"):
        get_executor("aer", sim.model, noise_backend="fake_nowhere")



@pytest.mark.parametrize(("mitigation", "name", "message"), [
    ({"resilence": {"zne_mitigation": True}}, "ibm", "rejected by qiskit-ibm-runtime's EstimatorOptions"),
    ({"twirling": {"num_randomizations": "many"}}, "ibm", "num_randomizations"),
    ({"default_shots": 10}, "ibm", "with the executor's own settings"),
    ({"resilience": {"zne_mitigation": True}}, "aer", "does not mitigate errors"),
    # run by the cloud only after learning layer noise, and PEC's overhead is not priced: refused, not failed later
    ({"resilience": {"pec_mitigation": True}}, "ibm", "PEC and PEA need a layer noise model"),
    ({"resilience": {"zne_mitigation": True, "zne": {"amplifier": "pea"}}}, "ibm", "PEC and PEA"),
])
def test_mitigation_options_are_validated_before_anything_runs(mitigation, name, message):
    from qff_core.execution import ExecutorConfig

    with pytest.raises(ValueError, match=message):
        ExecutorConfig(name=name, backend="fake_torino" if name == "ibm" else None, mitigation=mitigation)


def test_mitigation_overheads_are_priced():
    from qff_core.execution import ExecutorConfig

    plain = ExecutorConfig(name="ibm", backend="fake_torino", shots=1000)
    zne = ExecutorConfig(name="ibm", backend="fake_torino", shots=1000, mitigation={
        "resilience": {"zne_mitigation": True, "zne": {"noise_factors": [1, 2, 3, 4]}},
        "twirling": {"enable_gates": True, "num_randomizations": 10}})
    assert plain.executed_shots_per_binding() == 1000
    assert zne.executed_shots_per_binding() == 4 * 1000  # 10 randomizations of 100 shots, at 4 noise factors
    assert zne.ibm_options()["resilience"]["zne"]["noise_factors"] == [1, 2, 3, 4]
    auto = ExecutorConfig(name="ibm", backend="fake_torino", shots=1000, mitigation={
        "resilience": {"zne_mitigation": True, "zne": {"noise_factors": "auto"}}})
    assert auto.zne_factors() == 3  # Runtime's (1, 3, 5); it was priced as len("auto") = 4
    for bad, message in (({"name": "aer", "resilience_level": 2}, "does not mitigate"),
                         ({"name": "aer", "shots": 1}, "greater than or equal to 2"),
                         ({"name": "aer", "shots": 10**8}, "less than or equal to 10000000"),
                         ({"name": "aer", "shots": 100, "seed": -3}, "greater than or equal to 0")):
        with pytest.raises(ValueError, match=message):
            ExecutorConfig(**bad)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["fake_torino", pytest.param("fake_fez", marks=pytest.mark.slow),
                                     pytest.param("fake_sherbrooke", marks=pytest.mark.slow)])
def test_ibm_local_testing_mode_on_a_large_device(backend, rng):
    """Torino (133 qubits, CZ), Fez (156, CZ), Sherbrooke (127, ECR): simulated on the two the layout uses."""
    from qff_core.execution import get_executor

    sim = simulator_for("lih", model="invariant", depth=1)
    theta = init_parameters(sim.model, seed=3, strategy="random")
    X = random_geometries(sim.model, 2, rng)
    ex = get_executor("ibm", sim.model, backend=backend, options={"resilience_level": 0, "default_shots": 500},
                      seed=2)
    assert ex.program.device["backend"] == backend and len(ex.program.device["physical_qubits"]) == 2
    res = ex.run(ex.plan(theta, X, Request()))
    assert res.energies.shape == (2,) and np.all(np.isfinite(res.energies)) and np.all(res.energies_var > 0)


@pytest.mark.slow
def test_zne_moves_the_estimate_toward_the_exact_value():
    """Only depolarizing two-qubit errors: ZNE (gate folding at 1, 3, 5, exponential extrapolation, run for real by
    qiskit-ibm-runtime's client-side Estimator) recovers most of what the noise took from <O>."""
    from qiskit_aer import AerSimulator
    from qiskit_aer.noise import NoiseModel, depolarizing_error

    from qff_core.execution.registry import _build_ibm

    sim = simulator_for("lih", model="invariant", depth=2)
    theta = init_parameters(sim.model, seed=3, strategy="random")
    X = random_geometries(sim.model, 1, np.random.default_rng(0))
    noise = NoiseModel(basis_gates=["cx", "rz", "sx", "x"])
    noise.add_all_qubit_quantum_error(depolarizing_error(0.05, 2), ["cx"])
    device = AerSimulator(noise_model=noise)
    exact = sim.evaluate(theta, X)[0][0]
    errors = {}
    for label, extra in (("raw", {}), ("zne", {"resilience": {"zne_mitigation": True, "zne": {
            "noise_factors": [1, 3, 5], "extrapolator": "exponential"}}})):
        ex = _build_ibm(sim.model, backend=device, options={"resilience_level": 0, "default_shots": 8000, **extra},
                        seed=5)
        res = ex.run(ex.plan(theta, X, Request()))
        errors[label] = (abs(res.energies[0] - exact), float(np.sqrt(res.energies_var[0])))
    print(errors)
    (raw, raw_se), (zne, _) = errors["raw"], errors["zne"]
    assert raw > 10 * raw_se  # the noise moved it far beyond shot noise
    assert zne < raw / 3  # ZNE took most of that back


@pytest.mark.parametrize(("executor", "options"), [("ibm", {"backend": "fake_manila"}),
                                                   ("aer", {"noise_backend": "fake_manila"})])
def test_a_model_wider_than_the_device_is_refused_before_transpiling(executor, options):
    from qff_core.execution import get_executor
    from qff_core.models import ModelConfig, build_model
    from qff_core.molecules import builtin_molecule

    model = build_model(builtin_molecule("h2o_dimer"), ModelConfig(depth=1, rep=2))
    with pytest.raises(InputError, match="the model needs 12 qubits; fake_manila has 5"):
        get_executor(executor, model, **options)


@pytest.mark.parametrize("molecule", ["h2o", "lih"])
def test_the_light_cone_leaves_out_exactly_what_the_energy_cannot_see(molecule, rng):
    """The gates the compiler leaves out (outside the observable's backward light cone) read parameters whose
    exact-simulator gradient is zero to rounding, and every other trainable parameter moves the energy."""
    import jax
    import jax.numpy as jnp

    from qff_core.models.ir import dead_parameters, gate_params, light_cone

    sim = simulator_for(molecule, depth=2)
    model = sim.model
    theta = init_parameters(model, seed=5, strategy="random")
    X = jnp.asarray(random_geometries(model, 2, rng))
    grad = np.asarray(jax.grad(lambda t: jnp.sum(sim.batch_energies_fn(t, X)))(jnp.asarray(theta)))
    dead = set(dead_parameters(model))
    trainable = [i for i, p in enumerate(model.parameters) if p.trainable]
    assert all(abs(grad[i]) < 1e-12 for i in dead)
    assert all(abs(grad[i]) > 1e-8 for i in trainable if i not in dead)
    # H2O (observable on the copy-0 hydrogens): the last layer's copy-1 exchange and encodings are outside;
    # LiH measures every qubit it entangles, so nothing is.
    expected = {"h2o": ["J[l2,b0,o2]", "alpha[l2,c1,H]"], "lih": []}[molecule]
    assert [model.parameters[i].name for i in sorted(dead)] == expected
    units = compile_qiskit(model).units
    gates = model.gates()
    assert {u.gate for u in units} == {k for k in light_cone(model) if gate_params(gates[k])}
