"""The fragment model of the water dimer: E = sum of monomer energies + pair energy + e0.

Checked against its sub-models compiled and summed by hand, for symmetry (the dimer group with
the monomer swap), forces against finite differences, a short real training run on HF/STO-3G
data, and clear errors where it cannot run.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import ENERGY_INVARIANCE_TOL, FINITE_DIFFERENCE_TOL, FLOAT64_TOL, FORCE_EQUIVARIANCE_TOL, simulator_for

from qff_core.audit import audit_model, random_geometries
from qff_core.cli import main
from qff_core.errors import ModelBuildError
from qff_core.evaluation import evaluate_run
from qff_core.execution.exact import compile_exact
from qff_core.models import FragmentModel, build_model, init_parameters
from qff_core.molecules import builtin_molecule, make_molecule
from qff_core.run import TrainConfig, open_run
from qff_core.training import train

DEPTH = 1  # small programs: the whole file compiles a handful of them
BATCH = 12  # 12 geometries x 5 audit copies, and 1 + 36 finite-difference rows: both the 64 bucket


@pytest.fixture(scope="module")
def sim():
    return simulator_for("h2o_dimer", model="fragment", depth=DEPTH)


def test_structure_shared_monomer_and_small_pair_model(sim):
    model = sim.model
    assert isinstance(model, FragmentModel) and model.kind == "fragment"
    assert model.monomer.n_qubits == 4 and model.monomer.molecule.origin_rule == "atom 0 (O)"  # the h2o model
    assert model.pair.n_qubits == 6 and model.pair.molecule.center is None  # pair_rep 1, centroid
    assert model.pair.molecule.group.order() == 8  # H swaps in each monomer x monomer swap
    assert model.n_parameters == model.monomer.n_parameters + model.pair.n_parameters + 1
    assert model.offset == model.n_parameters - 1
    kinds = [model.parameters[i].kind for i in model.scale]
    assert kinds == ["scale", "scale"]
    frozen = [p.name for p, t in zip(model.parameters, model.trainable_mask(), strict=True) if not t]
    assert frozen == ["monomer.e0", "pair.e0"]  # the one trainable offset is the global e0
    theta = init_parameters(model, seed=4)
    assert np.all(theta[model.scale] == 1.0) and theta[model.offset] == 0.0 and np.all(theta[~np.array(
        model.trainable_mask())] == 0.0)
    deeper = build_model(builtin_molecule("h2o_dimer"), model="fragment", depth=2, pair_depth=3, pair_rep=2)
    assert (deeper.monomer.depth, deeper.pair.depth, deeper.pair.n_qubits) == (2, 3, 12)


def test_energies_and_forces_are_the_sub_models_summed_by_hand(sim, rng):
    model = sim.model
    monomer, pair = compile_exact(model.monomer), compile_exact(model.pair)
    theta = init_parameters(model, seed=3, strategy="random")
    theta[model.offset] = 0.7
    X = random_geometries(model, BATCH, rng)
    E, F = sim.evaluate(theta, X)
    E_hand, F_hand = np.full(BATCH, theta[model.offset]), np.zeros_like(X)
    for atoms in model.fragments:
        e, f = monomer.evaluate(theta[model.monomer_slice], X[:, list(atoms)])
        E_hand += e
        F_hand[:, list(atoms)] += f
    atoms = list(model.fragments[0] + model.fragments[1])
    e, f = pair.evaluate(theta[model.pair_slice], X[:, atoms])
    E_hand += e
    F_hand[:, atoms] += f
    assert np.abs(E - E_hand).max() < FLOAT64_TOL
    assert np.abs(F - F_hand).max() < FLOAT64_TOL
    assert np.abs(F.sum(axis=1)).max() < FLOAT64_TOL  # relative vectors only: no net force


def test_invariant_under_rotation_translation_and_the_dimer_group(sim):
    group = sim.model.molecule.group
    assert group.order() == 8 and (3, 4, 5, 0, 1, 2) in group.generators  # the monomer swap is audited
    for seed in (0, 1):
        report = audit_model(sim.model, seed=seed, n_geometries=BATCH, simulator=sim)
        for op in ("rotation", "translation", "permutation"):
            assert report.energy_rel_error[op] < ENERGY_INVARIANCE_TOL, (op, report.energy_rel_error)
            assert report.forces_rel_error[op] < FORCE_EQUIVARIANCE_TOL, (op, report.forces_rel_error)
    assert not report.inversion_guaranteed  # the dimer is not planar; measured, not promised


def test_forces_are_minus_the_finite_difference_gradient(sim, rng):
    model = sim.model
    theta = init_parameters(model, seed=5, strategy="random")
    h, n_atoms = 1e-5, model.molecule.n_atoms
    steps = np.eye(3 * n_atoms).reshape(3 * n_atoms, n_atoms, 3) * h
    x = random_geometries(model, 1, rng)[0]
    E, F = sim.evaluate(theta, np.concatenate([x[None], x + steps, x - steps]))
    fd = -(E[1 : 1 + len(steps)] - E[1 + len(steps) :]).reshape(n_atoms, 3) / (2 * h)
    assert np.abs(fd - F[0]).max() < FINITE_DIFFERENCE_TOL


def test_a_short_training_run_reduces_the_loss_and_evaluates(dimer_data, tmp_path):
    cfg = TrainConfig.model_validate(dict(
        dataset=dimer_data, model={"model": "fragment", "depth": DEPTH}, steps=12, batch_size=6, test_size=1,
        val_size=1, eval_every=12, checkpoint_every=12, learning_rate=5e-2, schedule="constant", seed=2))
    summary = train(tmp_path / "run", cfg)
    run = open_run(tmp_path / "run")
    assert summary["stop_reason"] == "completed" and summary["n_parameters"] == run.model.n_parameters
    theta, ckpt = run.final_parameters()
    loss = ckpt.arrays["history/loss"]  # batch = the whole training split: every step sees the same data
    assert loss[-1] < 0.95 * loss[0], loss
    frozen = ~np.array(run.model.trainable_mask())
    assert np.all(theta[frozen] == 0.0)  # the sub-models' offsets never moved
    evaluation = evaluate_run(tmp_path / "run", plots=False)
    assert evaluation["run"]["model"] == "fragment" and np.isfinite(evaluation["test"]["energy_mae_kcal_mol"])
    for op in ("rotation", "translation", "permutation"):
        assert evaluation["audit"][op] < ENERGY_INVARIANCE_TOL


def test_model_show_describes_both_sub_models(capsys):
    assert main(["model", "show", "--molecule", "h2o_dimer", "--model", "fragment", "--depth", "1", "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert (s["monomer"]["n_qubits"], s["pair"]["n_qubits"], s["n_pair_terms"]) == (4, 6, 1)
    assert main(["model", "show", "--molecule", "h2o_dimer", "--model", "fragment", "--pair-rep", "2"]) == 0
    text = capsys.readouterr().out
    assert "fragment model of h2o_dimer" in text and "invariant model of h2o_dimer:pair: 12 qubits" in text


def test_clear_errors_where_the_fragment_model_cannot_run(sim):
    from qff_core.execution.qiskit.compiler import compile_qiskit
    from qff_core.execution.registry import get_executor

    with pytest.raises(ModelBuildError, match="exact executor only"):
        compile_qiskit(sim.model)
    with pytest.raises(ModelBuildError, match="exact executor only"):
        get_executor("aer", sim.model)
    with pytest.raises(ValueError, match="exact executor only"):
        TrainConfig(dataset="x.zarr", model={"model": "fragment"}, executor="aer")
    with pytest.raises(ModelBuildError, match="records no fragments"):
        build_model(builtin_molecule("h2o"), model="fragment")
    dimer = builtin_molecule("h2o_dimer")
    reordered = make_molecule("dimer", dimer.symbols, dimer.positions_a, center="centroid",
                              fragments=[[0, 1, 2], [4, 3, 5]])
    with pytest.raises(ModelBuildError, match="same elements in the same order"):
        build_model(reordered, model="fragment")
    mixing = make_molecule("dimer", dimer.symbols, dimer.positions_a, center="centroid",
                           fragments=[[0, 1, 2], [3, 4, 5]], permutations=[[0, 4, 2, 3, 1, 5]])
    with pytest.raises(ModelBuildError, match="moves atoms between fragments"):
        build_model(mixing, model="fragment")
