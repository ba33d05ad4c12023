"""Molecule specs: built-ins, the permutation groups they imply, file loading and bad input."""

from __future__ import annotations

import numpy as np
import pytest

from qff_core.errors import GeometryError, GeometryFileError, InputError, SymmetryError, UnknownElementError
from qff_core.molecules import (
    BUILTIN_NAMES,
    builtin_molecule,
    load_molecule,
    make_molecule,
    molecule_from_xyz,
    molecule_from_yaml,
    read_xyz,
)

H2O_XYZ = """3
water, Angstrom
O 0.000 0.000 0.000
H 0.000 0.757 0.586
H 0.000 -0.757 0.586
"""


@pytest.mark.parametrize(
    ("name", "center", "order", "n_active"),
    [("lih", "Li", 1, 1), ("h2o", "O", 2, 2), ("nh3", "N", 6, 3), ("ch4", "C", 24, 4), ("h2o_dimer", None, 8, 6)],
)
def test_builtins_have_the_expected_centre_and_group(name, center, order, n_active):
    mol = builtin_molecule(name)
    assert (mol.symbols[mol.center] if mol.center is not None else None) == center
    assert mol.group.order() == order
    assert len(mol.active_atoms) == n_active
    # Every group element maps each element onto itself.
    for p in mol.group.elements():
        assert all(mol.symbols[i] == mol.symbols[j] for i, j in enumerate(p))


def test_builtin_geometries_are_sensible():
    h2o = builtin_molecule("h2o")
    d = np.linalg.norm(h2o.positions_a[1:] - h2o.positions_a[0], axis=1)
    assert np.allclose(d, 0.9572)
    nh3 = builtin_molecule("nh3")
    v = nh3.positions_a[1:] - nh3.positions_a[0]
    angle = np.degrees(np.arccos(v[0] @ v[1] / (np.linalg.norm(v[0]) * np.linalg.norm(v[1]))))
    assert angle == pytest.approx(106.67, abs=1e-8)
    assert np.allclose(np.linalg.norm(v, axis=1), 1.012)
    ch4 = builtin_molecule("ch4")
    assert np.allclose(ch4.positions_a[1:].sum(axis=0), 0.0)
    assert set(BUILTIN_NAMES) == {"lih", "h2o", "nh3", "ch4", "h2o_dimer"}


def test_water_dimer_group_can_be_restricted_to_monomer_swaps():
    dimer = builtin_molecule("h2o_dimer")
    full = make_molecule("d", dimer.symbols, dimer.positions_a, center="centroid")
    assert full.group.order() == 48  # S4 on the H atoms times S2 on the O atoms
    assert dimer.group.order() == 8  # H swaps within each monomer, and the monomer swap
    swap = (3, 4, 5, 0, 1, 2)
    assert swap in dimer.group.elements()
    assert (0, 4, 2, 3, 1, 5) not in dimer.group.elements()  # H exchanged across monomers


def test_explicit_permutations_are_checked():
    h2o = builtin_molecule("h2o")
    with pytest.raises(SymmetryError, match="only exchange identical atoms"):
        make_molecule("x", h2o.symbols, h2o.positions_a, permutations=[[1, 0, 2]])
    with pytest.raises(SymmetryError, match="not a permutation"):
        make_molecule("x", h2o.symbols, h2o.positions_a, permutations=[[0, 1, 1]])
    trivial = make_molecule("x", h2o.symbols, h2o.positions_a, permutations=[])
    assert trivial.group.is_trivial


@pytest.mark.parametrize("bad", ["Xx", "Q", "", 0, 200])
def test_unknown_elements_are_rejected(bad):
    with pytest.raises(UnknownElementError):
        make_molecule("x", [bad, "H"], [[0, 0, 0], [0, 0, 1]])


def test_symbols_are_normalised():
    mol = make_molecule("x", ["o", "1", 1], [[0, 0, 0], [0, 0, 1], [0, 1, 0]])
    assert mol.symbols == ("O", "H", "H")


@pytest.mark.parametrize(
    ("positions", "message"),
    [
        ([[0, 0, 0], [0, 0, np.nan], [0, 1, 0]], "NaN or infinite"),
        ([[0, 0, 0], [0, 0, np.inf], [0, 1, 0]], "NaN or infinite"),
        ([[0, 0, 0], [0, 0, 1]], "expected 3 atoms"),
        ([[0, 0], [0, 1], [1, 0]], "shape"),
        ([[0, 0, 0], [0, 0, 0.05], [0, 1, 0]], "closer than 0.1"),
        ([["a", 0, 0], [0, 0, 1], [0, 1, 0]], "not numbers"),
    ],
)
def test_bad_geometries_are_rejected(positions, message):
    with pytest.raises(GeometryError, match=message):
        make_molecule("x", ["O", "H", "H"], positions)


def test_batch_validation_names_the_sample():
    h2o = builtin_molecule("h2o")
    batch = np.stack([h2o.positions_a] * 3)
    batch[2, 2] = batch[2, 1] + 0.01
    with pytest.raises(GeometryError, match="in sample 2"):
        h2o.validate_positions(batch)


def test_central_atom_rules():
    h2o = builtin_molecule("h2o")
    assert make_molecule("x", h2o.symbols, h2o.positions_a, center="centroid").center is None
    assert make_molecule("x", h2o.symbols, h2o.positions_a, center="O").center == 0
    with pytest.raises(SymmetryError, match="not unique"):
        make_molecule("x", h2o.symbols, h2o.positions_a, center="H")
    with pytest.raises(SymmetryError, match="not unique"):
        make_molecule("x", h2o.symbols, h2o.positions_a, center=1)
    with pytest.raises(SymmetryError, match="out of range"):
        make_molecule("x", h2o.symbols, h2o.positions_a, center=7)
    # With the H swap removed from the group, an H may be the centre.
    assert make_molecule("x", h2o.symbols, h2o.positions_a, center=1, permutations=[]).center == 1


def test_origin_is_translation_covariant():
    dimer = builtin_molecule("h2o_dimer")
    shift = np.array([1.0, -2.0, 3.0])
    assert np.allclose(dimer.origin(dimer.positions_a + shift), dimer.origin(dimer.positions_a) + shift)


def test_xyz_round_trip(tmp_path):
    path = tmp_path / "water.xyz"
    path.write_text(H2O_XYZ + H2O_XYZ.replace("0.586", "0.600"))
    frames = read_xyz(path)
    assert len(frames) == 2 and frames[0][0] == ("O", "H", "H")
    mol = molecule_from_xyz(path)
    assert mol.name == "water" and mol.center == 0 and mol.group.order() == 2
    assert load_molecule(path).symbols == mol.symbols


@pytest.mark.parametrize(
    ("text", "error", "message"),
    [
        ("three\nc\nO 0 0 0\n", GeometryFileError, "atom count"),
        ("3\nc\nO 0 0 0\nH 0 0 1\n", GeometryFileError, "file ends"),
        ("2\nc\nO 0 0 0\nH 0 zero 1\n", GeometryFileError, "not numbers"),
        ("2\nc\nO 0 0 0\nH 0 1\n", GeometryFileError, "symbol x y z"),
        ("2\nc\nO 0 0 0\nZz 0 0 1\n", UnknownElementError, "unknown element"),
        ("2\nc\nO 0 0 0\nH 0 0 0.01\n", GeometryError, "closer than"),
        ("\n\n", GeometryFileError, "no XYZ frame"),
    ],
)
def test_malformed_xyz_files_give_clear_errors(tmp_path, text, error, message):
    path = tmp_path / "bad.xyz"
    path.write_text(text)
    with pytest.raises(error, match=message):
        molecule_from_xyz(path)


def test_missing_file_is_an_input_error(tmp_path):
    with pytest.raises(GeometryFileError, match="cannot read"):
        load_molecule(tmp_path / "nope.xyz")


def test_yaml_spec_with_fragments_and_xyz(tmp_path):
    (tmp_path / "w.xyz").write_text(H2O_XYZ)
    (tmp_path / "w.yaml").write_text("name: w\nxyz: w.xyz\ncenter: O\n")
    assert molecule_from_yaml(tmp_path / "w.yaml").center == 0
    dimer = builtin_molecule("h2o_dimer")
    spec = {
        "name": "dimer",
        "symbols": list(dimer.symbols),
        "positions_a": dimer.positions_a.tolist(),
        "center": "centroid",
        "fragments": [[0, 1, 2], [3, 4, 5]],
    }
    import yaml

    (tmp_path / "d.yaml").write_text(yaml.safe_dump(spec))
    mol = load_molecule(tmp_path / "d.yaml")
    assert mol.center is None and mol.group.order() == 8


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: x\nsymbols: [O]\n", "give 'symbols' and 'positions_a'"),
        ("name: x\nsymbols: [H, H]\npositions_a: [[0,0,0],[0,0,1]]\ncolour: red\n", "colour"),
        ("name: [unclosed\n", "not valid YAML"),
        ("name: x\nsymbols: [H, H, H]\npositions_a: [[0,0,0],[0,0,1],[0,1,0]]\nfragments: [[0,1]]\n", "partition"),
        ("name: x\nsymbols: [O, H, H]\npositions_a: [[0,0,0],[0,0,1],[0,1,0]]\ncharge: 1\n",
         "multiplicity 1 is impossible with 9 electrons"),
        ("name: x\nsymbols: [O, H, H]\npositions_a: [[0,0,0],[0,0,1],[0,1,0]]\nmultiplicity: 2\n",
         "multiplicity 2 is impossible with 10 electrons"),
        ("name: x\nsymbols: [O, H, H]\npositions_a: [[0,0,0],[0,0,1],[0,1,0]]\ncharge: 20\n", "leaves -10 electrons"),
        ("name: x\nsymbols: [O, H, Xx]\npositions_a: [[0,0,0],[0,0,1],[0,1,0]]\n", "unknown element 'Xx'"),
        ("name: x\nsymbols: [H, H, H, H]\npositions_a: [[0,0,0],[0,0,1],[0,1,0],[1,0,0]]\n"
         "fragments: [[0,1],[2,3]]\npermutations: [[1,0,2,3]]\n", "fragments or permutations, not both"),
    ],
)
def test_bad_yaml_specs(tmp_path, text, message):
    path = tmp_path / "m.yaml"
    path.write_text(text)
    with pytest.raises(InputError, match=message) as caught:
        molecule_from_yaml(path)
    assert str(path) in str(caught.value)  # the message names the file


def test_a_radical_with_its_multiplicity_is_accepted():
    from qff_core.molecules.spec import make_molecule

    oh = make_molecule("oh", ["O", "H"], [[0, 0, 0], [0, 0, 0.97]], multiplicity=2)
    assert oh.multiplicity == 2
    cation = make_molecule("h2o+", ["O", "H", "H"], [[0, 0, 0], [0, 0, 1], [0, 1, 0]], charge=1, multiplicity=2)
    assert cation.charge == 1


def test_unknown_builtin_lists_the_choices():
    with pytest.raises(InputError, match="h2o_dimer"):
        builtin_molecule("benzene")


def test_large_groups_are_not_enumerated():
    import numpy as np

    rng = np.random.default_rng(0)
    positions = np.vstack([[0.0, 0.0, 0.0], rng.normal(size=(10, 3)) * 3])
    mol = make_molecule("c_h10", ["C"] + ["H"] * 10, positions)
    assert mol.group.order(limit=1000) is None  # 10! elements
    p = mol.group.random_element(rng)
    assert p != tuple(range(11)) and p[0] == 0 and sorted(p) == list(range(11))
