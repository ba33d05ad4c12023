"""Symmetry audit: the invariant model keeps every symmetry; the audit catches broken ones."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from conftest import (
    BROKEN_SYMMETRY,
    ENERGY_INVARIANCE_TOL,
    FORCE_EQUIVARIANCE_TOL,
    TEST_BATCH,
    TEST_DEPTH,
    simulator_for,
)

from qff_core.audit import OPERATIONS, audit_model
from qff_core.cli import main
from qff_core.execution.exact import compile_exact
from qff_core.models import build_model
from qff_core.models.ir import Encode, Parameter
from qff_core.molecules import BUILTIN_NAMES, builtin_molecule

AUDIT_GEOMETRIES = TEST_BATCH // 5  # 5 copies per geometry: the 64 bucket, shared with other tests


def audit(sim, seed=0):
    return audit_model(sim.model, seed=seed, n_geometries=AUDIT_GEOMETRIES, simulator=sim)


@pytest.mark.parametrize("name", BUILTIN_NAMES)
def test_invariant_model_keeps_rotation_translation_permutation(name):
    sim = simulator_for(name)
    for seed in (0, 1):
        report = audit(sim, seed)
        for op in ("rotation", "translation", "permutation"):
            assert report.energy_rel_error[op] < ENERGY_INVARIANCE_TOL, (op, report.energy_rel_error)
            assert report.forces_rel_error[op] < FORCE_EQUIVARIANCE_TOL, (op, report.forces_rel_error)
    if name != "lih":
        assert report.permutation_group_order > 1  # the permutation check is not vacuous


def test_the_comb_pattern_is_invariant():
    report = audit(simulator_for("h2o", pattern="comb"))
    for op in ("rotation", "translation", "permutation"):
        assert report.energy_rel_error[op] < ENERGY_INVARIANCE_TOL, (op, report.energy_rel_error)
        assert report.forces_rel_error[op] < FORCE_EQUIVARIANCE_TOL, (op, report.forces_rel_error)


@pytest.mark.parametrize("name", [
    *[n for n in BUILTIN_NAMES if n != "h2o_dimer"],
    # 40 s of compilation; nh3 and ch4 already cover a non-planar molecule's symmetrisation
    pytest.param("h2o_dimer", marks=pytest.mark.slow),
])
def test_inversion_is_measured_and_symmetrisation_makes_it_exact(name):
    plain = audit(simulator_for(name))
    if name in ("lih", "h2o"):  # planar: rotation invariance implies inversion invariance
        assert plain.max_rel_error["inversion"] < ENERGY_INVARIANCE_TOL
        assert plain.inversion_guaranteed
    else:  # the model can tell mirror images apart, and the audit sees it
        assert plain.max_rel_error["inversion"] > BROKEN_SYMMETRY
        assert not plain.inversion_guaranteed
    sym = audit(simulator_for(name, symmetrize_inversion=True))
    for op in OPERATIONS:
        assert sym.energy_rel_error[op] < ENERGY_INVARIANCE_TOL, (op, sym.energy_rel_error)
        assert sym.forces_rel_error[op] < FORCE_EQUIVARIANCE_TOL, (op, sym.forces_rel_error)


@pytest.mark.parametrize("name", ["h2o", "nh3", pytest.param("h2o_dimer", marks=pytest.mark.slow)])  # dimer: 20 s
def test_generic_baseline_breaks_rotation_and_permutation(name):
    report = audit(simulator_for(name, model="generic"))
    assert report.max_rel_error["rotation"] > 1e-3
    assert report.max_rel_error["permutation"] > 1e-3
    assert report.max_rel_error["translation"] < ENERGY_INVARIANCE_TOL  # relative vectors only


def test_unshared_alpha_is_caught_by_the_permutation_check():
    model = build_model(builtin_molecule("h2o"), depth=TEST_DEPTH)
    # Give the first encoding gate its own alpha: H1 and H2 of copy 0 no longer share it.
    k = next(i for i, g in enumerate(model.prelude) if isinstance(g, Encode))
    new_index = model.n_parameters
    broken_gate = dataclasses.replace(model.prelude[k], alpha=new_index)
    broken = dataclasses.replace(
        model,
        prelude=(*model.prelude[:k], broken_gate, *model.prelude[k + 1 :]),
        parameters=(*model.parameters, Parameter("alpha_unshared", "alpha")),
    )
    report = audit_model(broken, n_geometries=AUDIT_GEOMETRIES, simulator=compile_exact(broken))
    assert report.max_rel_error["permutation"] > 1e-3
    assert report.max_rel_error["rotation"] < ENERGY_INVARIANCE_TOL  # still rotation invariant


def test_audit_at_given_parameters_is_reproducible():
    sim = simulator_for("h2o", model="generic")
    a, b = audit(sim, seed=4), audit(sim, seed=4)
    assert a.max_rel_error == b.max_rel_error
    theta = np.zeros(sim.model.n_parameters)
    theta[sim.model.scale] = 1.0
    zero = audit_model(sim.model, theta=theta, n_geometries=AUDIT_GEOMETRIES, simulator=sim)
    # All angles zero: the generic circuit ignores the geometry, so nothing can change.
    assert max(zero.energy_rel_error.values()) < ENERGY_INVARIANCE_TOL


def test_audit_cli_json_keys(capsys):
    assert main(["model", "audit", "--molecule", "h2o", "--model", "invariant", "--depth", str(TEST_DEPTH),
                 "--seed", "3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["max_rel_error"]) == {"rotation", "translation", "permutation", "inversion"}
    assert all(isinstance(v, float) for v in out["max_rel_error"].values())
    assert max(out["max_rel_error"].values()) < ENERGY_INVARIANCE_TOL


def test_audit_check_flag_fails_on_a_broken_model(capsys):
    args = ["model", "audit", "--molecule", "h2o", "--depth", str(TEST_DEPTH), "--check", "--json"]
    assert main([*args, "--model", "invariant"]) == 0
    ok = json.loads(capsys.readouterr().out)
    assert ok["checked"]["broken"] == [] and "inversion" in ok["checked"]["operations"]
    assert main([*args, "--model", "generic"]) == 1
    bad = json.loads(capsys.readouterr().out)
    assert {"rotation", "permutation"} <= set(bad["checked"]["broken"])
