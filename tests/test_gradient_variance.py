"""``qff model gradient-variance``: the barren-plateau statistic against finite differences, an independent
computation through ``expectation_fn``, and the command's JSON and errors."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qff_core.cli import main
from qff_core.gradient_variance import (
    DepthSample,
    GradientVarianceConfig,
    circuit_parameters,
    cost_function,
    fixed_geometries,
    gradient_statistics,
    sample_depth,
    teacher_parameters,
)
from qff_core.models import ModelConfig, build_model
from qff_core.molecules import builtin_molecule

FD_STEP = 1e-5
FD_RTOL = 1e-6  # gradient against a central finite difference, relative to the largest component


@pytest.fixture(scope="module")
def h2o_depth2() -> DepthSample:
    """The 4-qubit invariant H2O model at depth 2: 4 random initialisations on 3 fixed geometries."""
    molecule, cfg = builtin_molecule("h2o"), ModelConfig(model="invariant")
    config = GradientVarianceConfig(depths=(2,), samples=4, geometries=3, seed=1)
    positions = fixed_geometries(build_model(molecule, cfg, depth=2), config.geometries, config.seed)
    return sample_depth(molecule, cfg, config, 2, positions)


def _finite_difference(cost, theta: np.ndarray, indices: np.ndarray) -> np.ndarray:
    f = jax.jit(cost)
    out = []
    for k in indices:
        step = np.zeros_like(theta)
        step[k] = FD_STEP
        out.append((float(f(jnp.asarray(theta + step))) - float(f(jnp.asarray(theta - step)))) / (2 * FD_STEP))
    return np.array(out)


def test_gradient_of_one_initialisation_is_the_finite_difference(h2o_depth2):
    s = h2o_depth2
    idx = circuit_parameters(s.model)
    cost = cost_function(s.simulator, fixed_geometries(s.model, 3, 1), "expectation")
    fd = _finite_difference(cost, s.thetas[0], idx)
    assert np.max(np.abs(s.gradients[0, idx] - fd)) < FD_RTOL * np.max(np.abs(fd))
    # s and e0 are pinned to 1 and 0 in the expectation cost: no gradient reaches them
    assert np.all(s.gradients[:, [s.model.scale, s.model.offset]] == 0.0)


def test_energy_loss_gradient_is_the_finite_difference():
    molecule, cfg = builtin_molecule("lih"), ModelConfig(model="generic")
    config = GradientVarianceConfig(depths=(1,), samples=2, geometries=2, cost="energy")
    positions = fixed_geometries(build_model(molecule, cfg, depth=1), 2, 0)
    s = sample_depth(molecule, cfg, config, 1, positions)
    teacher = jnp.asarray(teacher_parameters(s.model, config.seed))
    cost = cost_function(s.simulator, positions, "energy", np.asarray(s.simulator.energies(teacher, positions)))
    assert float(cost(teacher)) == pytest.approx(0.0, abs=1e-24)  # the teacher's energies are the targets
    assert s.costs[0] > 0.0
    fd = _finite_difference(cost, s.thetas[0], np.arange(s.model.n_parameters))  # s and e0 are in this loss
    assert np.max(np.abs(s.gradients[0] - fd)) < FD_RTOL * np.max(np.abs(fd))


def test_variance_is_numpys_variance_of_independent_gradients(h2o_depth2):
    s = h2o_depth2
    model, sim = s.model, s.simulator
    positions = fixed_geometries(model, 3, 1)
    x = jnp.asarray(np.transpose(positions - model.molecule.origin(positions)[:, None, :], (1, 2, 0)))

    def mean_expectation(theta):
        return jnp.mean(sim.expectation_fn(theta, x))

    grad = jax.jit(jax.grad(mean_expectation))
    idx = circuit_parameters(model)
    by_hand = np.stack([np.asarray(grad(jnp.asarray(t)))[idx] for t in s.thetas])
    var = np.var(by_hand, axis=0, ddof=1)
    stats = gradient_statistics(model, s.gradients, s.costs)
    assert stats.variance == pytest.approx(float(np.mean(var)), rel=1e-10)
    first = [k for k, i in enumerate(idx) if model.parameters[i].layer == 0]
    last = [k for k, i in enumerate(idx) if model.parameters[i].layer == model.depth]
    assert stats.variance_first_layer == pytest.approx(float(np.mean(var[first])), rel=1e-10)
    assert stats.variance_last_layer == pytest.approx(float(np.mean(var[last])), rel=1e-10)
    assert stats.mean_abs_gradient == pytest.approx(float(np.mean(np.abs(by_hand))), rel=1e-10)
    assert s.costs == pytest.approx([float(mean_expectation(jnp.asarray(t))) for t in s.thetas], abs=1e-12)


def test_geometries_do_not_depend_on_depth_and_stay_in_the_reference_frame():
    molecule = builtin_molecule("h2o")
    a, b = (fixed_geometries(build_model(molecule, depth=d), 4, 7) for d in (1, 3))
    assert np.array_equal(a, b)
    assert np.max(np.abs(a - molecule.positions_a)) < 1.0  # displaced by N(0, 0.1 A), neither rotated nor moved
    rotated = fixed_geometries(build_model(molecule, depth=1), 4, 7, rotate=True)
    assert np.max(np.abs(rotated - molecule.positions_a)) > 1.0


def test_command_prints_one_json_entry_per_depth_with_finite_non_negative_values(capsys):
    assert main(["model", "gradient-variance", "--molecule", "lih", "--model", "generic", "--depth-range", "1:3",
                 "--samples", "3", "--geometries", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [d["depth"] for d in out["depths"]] == [1, 2, 3]
    assert out["settings"]["samples"] == 3 and out["model"] == "generic" and out["molecule"] == "lih"
    for d in out["depths"]:
        values = [d["variance"], d["variance_first_layer"], d["variance_last_layer"], d["mean_abs_gradient"],
                  *d["variance_by_layer"], *d["variance_by_kind"].values()]
        assert np.all(np.isfinite(values)) and min(values) >= 0.0
        assert len(d["variance_by_layer"]) == d["depth"] + 1 and d["n_qubits"] == 2
        assert d["n_circuit_parameters"] == d["n_parameters"] - 2  # all but s and e0
        assert set(d["variance_by_kind"]) == {"encoding_scale", "rotation"}


@pytest.mark.parametrize("args", [["--depth-range", "0:3"], ["--depth-range", "5:2"], ["--depth-range", "a:b"],
                                  ["--samples", "1"], ["--depths", "1,two"]])
def test_bad_input_is_one_line_and_exit_2(capsys, args):
    assert main(["model", "gradient-variance", "--molecule", "lih", *args]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("qff: error: ")
