"""Model IR from the builders: counts, pairings and the invariance of every layer under the group."""

from __future__ import annotations

import json

import numpy as np
import pytest

from qff_core.cli import main
from qff_core.errors import ModelBuildError
from qff_core.models import ModelConfig, build_model, init_parameters
from qff_core.models.ir import Encode, Exchange, ExchangeSum, HeisenbergObservable, gate_structure
from qff_core.molecules import BUILTIN_NAMES, builtin_molecule, make_molecule
from qff_core.symmetry import PermutationGroup


def qubit_group(model) -> PermutationGroup:
    return PermutationGroup(model.n_qubits, tuple(tuple(g) for g in model.hyperparameters["qubit_group_generators"]))


def test_h2o_invariant_matches_the_paper_layout():
    model = build_model(builtin_molecule("h2o"), ModelConfig(depth=6, rep=2))
    assert model.n_qubits == 4 and model.n_parameters == 34
    assert model.parameter_counts() == {"alpha": 14, "J": 18, "scale": 1, "offset": 1}
    assert model.hyperparameters["singlet_pairs"] == [[0, 1], [2, 3]]  # (H1, k)-(H2, k)
    orbits = sorted(sorted(map(tuple, o)) for o in model.hyperparameters["exchange_orbits"])
    assert orbits == [[(0, 1)], [(0, 3), (1, 2)], [(2, 3)]]
    assert model.observable == HeisenbergObservable(pairs=((0, 1),))
    assert model.qubit_atoms == (1, 2, 1, 2) and model.qubit_copies == (0, 0, 1, 1)


def test_generic_baseline_uses_the_same_qubits():
    mol = builtin_molecule("h2o")
    inv = build_model(mol, depth=6)
    gen = build_model(mol, model="generic", depth=6)
    assert gen.n_qubits == inv.n_qubits
    assert gen.n_parameters == 7 * 4 * 4 + 2  # (D+1) layers x 4 qubits x (scale + 3 angles) + s, e0


@pytest.mark.parametrize("name", BUILTIN_NAMES)
@pytest.mark.parametrize("pattern", ["ring", "all-to-all", "comb"])
def test_every_invariant_layer_is_mapped_to_itself_by_the_group(name, pattern):
    model = build_model(builtin_molecule(name), ModelConfig(depth=3, rep=2, pattern=pattern, blocks=2))
    group = qubit_group(model)
    # Singlets, every exchange orbit and the observable are invariant sets of pairs.
    assert group.leaves_invariant(frozenset(p) for p in model.hyperparameters["singlet_pairs"])
    for g in model.gates():
        if isinstance(g, (Exchange, ExchangeSum)):
            assert group.leaves_invariant(frozenset(p) for p in g.pairs)
        if isinstance(g, Exchange):
            qubits = [q for p in g.pairs for q in p]
            assert len(qubits) == len(set(qubits)), "an Exchange gate must hold disjoint pairs"
    assert group.leaves_invariant(frozenset(p) for p in model.observable.pairs)
    # Encoding parameters are shared exactly along group orbits of (atom, copy).
    for layer in (model.prelude, *model.layers):
        by_qubit = {g.qubit: g.alpha for g in layer if isinstance(g, Encode)}
        for gen in group.generators:
            assert all(by_qubit[gen[q]] == a for q, a in by_qubit.items())
    structures = {tuple(gate_structure(g) for g in layer) for layer in model.layers}
    assert len(structures) == 1


def test_the_comb_couples_copy_0_atoms_and_each_atoms_copies():
    """On H2O the comb is the path H1'-H1-H2-H2' (a tree: it routes on heavy hex without SWAPs)."""
    model = build_model(builtin_molecule("h2o"), ModelConfig(depth=2, pattern="comb"))
    assert model.hyperparameters["exchange_orbits"] == [[[0, 1]], [[0, 2], [1, 3]]]
    assert model.n_parameters == 3 * 2 + 2 * 2 + 2  # alphas: (D+1) layers x 2 copies; J: 2 orbits x D; s, e0


def test_singlet_rules():
    lih1 = build_model(builtin_molecule("lih"), rep=1)
    assert lih1.n_qubits == 2 and lih1.qubit_atoms == (1, None)  # odd qubit count: one ancilla
    ch4 = build_model(builtin_molecule("ch4"), rep=2)
    assert ch4.hyperparameters["singlet_rule"] == "copies of one atom"  # no S4-invariant H matching
    assert ch4.hyperparameters["singlet_pairs"] == [[0, 4], [1, 5], [2, 6], [3, 7]]
    nh3 = build_model(builtin_molecule("nh3"), rep=3)
    assert nh3.n_qubits == 9 + 3  # the third copy of each H is paired with its own ancilla
    dimer = build_model(builtin_molecule("h2o_dimer"), rep=2)
    assert dimer.hyperparameters["singlet_rule"] == "inter-atom within each copy"


def test_orbit_summed_generator_where_no_invariant_matching_exists():
    nh3 = build_model(builtin_molecule("nh3"), pattern="all-to-all", depth=1)
    sums = [g for g in nh3.layers[0] if isinstance(g, ExchangeSum)]
    assert any(sorted(g.pairs) == [(0, 1), (0, 2), (1, 2)] for g in sums)  # three H of one copy


def test_symmetry_breaking_parameters():
    mol = builtin_molecule("h2o")
    frozen = build_model(mol, depth=2, symmetry_breaking="frozen")
    trainable = build_model(mol, depth=2, symmetry_breaking="trainable")
    assert frozen.parameter_counts()["eps"] == 2 * 4
    assert not any(p.trainable for p in frozen.parameters if p.kind == "eps")
    assert all(p.trainable for p in trainable.parameters if p.kind == "eps")


def test_symmetry_breaking_eps_sets_the_angles_and_zero_keeps_exact_invariance():
    from qff_core.audit import audit_model

    mol = builtin_molecule("h2o")
    errors = {}
    for eps in (0.0, 0.1):
        model = build_model(mol, depth=2, symmetry_breaking="frozen", symmetry_breaking_eps=eps)
        theta = init_parameters(model, seed=1)
        angles = theta[[i for i, p in enumerate(model.parameters) if p.kind == "eps"]]
        assert (np.all(angles == 0) if eps == 0 else 0.03 < np.std(angles) < 0.3)
        errors[eps] = audit_model(model, theta=theta, n_geometries=4).max_rel_error["rotation"]
    assert errors[0.0] < 1e-10 < 1e-4 < errors[0.1]
    with pytest.raises(ValueError, match=r"symmetry-breaking trainable\|frozen"):
        ModelConfig(symmetry_breaking_eps=0.1)
    # settings another model would silently ignore (seen in review: recorded in the run, doing nothing)
    with pytest.raises(ValueError, match="generic baseline has no symmetry to break"):
        ModelConfig(model="generic", symmetry_breaking="trainable")
    with pytest.raises(ValueError, match="pair model of the fragment model"):
        ModelConfig(model="invariant", pair_depth=2)


def test_initial_parameters_distinguish_paired_copies():
    model = build_model(builtin_molecule("ch4"), depth=2)  # singlets on copies of one atom
    theta = init_parameters(model, seed=0)
    alphas = {(model.qubit_copies[g.qubit]): theta[g.alpha] for g in model.prelude if isinstance(g, Encode)}
    assert abs(alphas[0] - alphas[1]) > 0.2
    assert theta[model.scale] == 1.0 and theta[model.offset] == 0.0


def test_impossible_models_are_refused():
    with pytest.raises(ModelBuildError, match="single atom"):
        build_model(make_molecule("he", ["He"], [[0, 0, 0]]))
    with pytest.raises(ValueError):
        build_model(builtin_molecule("h2o"), depth=-1)


def test_model_show_cli_json(capsys):
    assert main(["model", "show", "--molecule", "h2o", "--model", "invariant", "--depth", "6", "--rep", "2",
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n_qubits"] == 4 and out["n_parameters"] == 34
    assert out["parameters_by_kind"] == {"alpha": 14, "J": 18, "scale": 1, "offset": 1}
    assert len(out["gates_per_layer"]) == 7 and out["gates_per_layer"][1]["gates"] == {"exchange": 3, "encode": 4}


def test_cli_reads_a_config_file_and_flags_override(tmp_path, capsys):
    cfg = tmp_path / "model.yaml"
    cfg.write_text("model:\n  depth: 3\n  rep: 1\n")
    assert main(["model", "show", "--config", str(cfg), "--rep", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["depth"] == 3 and out["n_qubits"] == 4


def test_cli_errors_say_what_to_fix(tmp_path, capsys):
    bad = tmp_path / "bad.xyz"
    bad.write_text("2\n\nO 0 0 0\nH 0 0 nan\n")
    assert main(["model", "show", "--molecule", str(bad)]) == 2
    assert "NaN" in capsys.readouterr().err
    assert main(["model", "show", "--molecule", "benzene"]) == 2
    assert "choose one of" in capsys.readouterr().err


def test_cli_compilation_cache_location(tmp_path, monkeypatch, capsys):
    import jax

    from qff_core.execution.exact import enable_compilation_cache

    previous = jax.config.jax_compilation_cache_dir
    cache = tmp_path / "jax-cache"
    monkeypatch.setenv("QFF_JAX_CACHE_DIR", str(cache))
    try:
        assert main(["model", "show", "--molecule", "lih", "--json"]) == 0
        assert cache.is_dir() and jax.config.jax_compilation_cache_dir == str(cache)
        monkeypatch.setenv("QFF_JAX_CACHE_DIR", "off")
        jax.config.update("jax_compilation_cache_dir", None)
        assert main(["model", "show", "--molecule", "lih", "--json"]) == 0
        assert jax.config.jax_compilation_cache_dir is None
    finally:
        if previous:
            enable_compilation_cache(previous)
    capsys.readouterr()
