"""The fragment model of a system of identical components (model.md, "Systems of several components").

E(X) = sum_m E_mono(X_m) + sum_{m<n} E_pair(X_m, X_n) + e0: one invariant siVQLM of a single
fragment, shared by every fragment, and one of two fragments (the whole-system model of a pair:
centroid origin, fragment group), shared by every pair. The parameter vector is
[monomer block | pair block | e0]; each block is its sub-model's own vector with the sub-model's
offset frozen at 0, so the two scales and the one global e0 are the output map training normalises.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from itertools import combinations
from typing import Literal

import numpy as np

from qff_core.errors import ModelBuildError
from qff_core.models.config import ModelConfig
from qff_core.models.invariant import build_invariant
from qff_core.models.ir import Model, Parameter
from qff_core.molecules import MoleculeSpec, make_molecule

Fragments = tuple[tuple[int, ...], ...]
EXACT_ONLY = ("fragment models run on the exact executor only (their monomer and pair energies are summed "
              "classically, not in one circuit); train with --executor exact, or use the whole-system model "
              "(--model invariant) on aer or ibm")


@dataclass(frozen=True)
class FragmentModel:
    """A monomer model and a pair model summed over the fragments and fragment pairs of ``molecule``.

    ``parameters`` is the composite vector (names prefixed ``monomer.``/``pair.``); ``scale`` holds
    the index of each sub-model's s, ``offset`` the index of the global e0.
    """

    molecule: MoleculeSpec
    fragments: Fragments
    monomer: Model
    pair: Model
    parameters: tuple[Parameter, ...]
    symmetrize_inversion: bool = False
    hyperparameters: dict = field(default_factory=dict, compare=False, hash=False)
    kind: Literal["fragment"] = "fragment"

    @property
    def monomer_slice(self) -> slice:
        """Where the monomer model's parameters sit in the composite vector."""
        return slice(0, self.monomer.n_parameters)

    @property
    def pair_slice(self) -> slice:
        """Where the pair model's parameters sit in the composite vector."""
        start = self.monomer.n_parameters
        return slice(start, start + self.pair.n_parameters)

    @property
    def scale(self) -> np.ndarray:
        """Indices of the monomer's and the pair's scale s (an index array: numpy fancy indexing works)."""
        return np.array([self.monomer.scale, self.pair_slice.start + self.pair.scale])

    @property
    def offset(self) -> int:
        """Index of the global offset e0 (eV), the last parameter."""
        return self.pair_slice.stop

    @property
    def fragment_pairs(self) -> tuple[tuple[int, int], ...]:
        """Every pair (m, n), m < n, of fragment indices; each gets one pair-model energy."""
        return tuple(combinations(range(len(self.fragments)), 2))

    @property
    def n_qubits(self) -> int:
        """Qubits of the widest circuit (monomer or pair): what one evaluation needs."""
        return max(self.monomer.n_qubits, self.pair.n_qubits)

    @property
    def n_parameters(self) -> int:
        """Length of the composite parameter vector."""
        return len(self.parameters)

    def parameter_counts(self) -> dict[str, int]:
        """Number of parameters of each kind (both blocks and e0)."""
        return dict(Counter(p.kind for p in self.parameters))

    def trainable_mask(self) -> tuple[bool, ...]:
        """Which entries training may change: the sub-models' offsets are frozen (e0 is global)."""
        return tuple(p.trainable for p in self.parameters)

    def summary(self) -> dict:
        """A JSON-ready description: fragments, parameter blocks and each sub-model's own summary."""
        return {
            "molecule": self.molecule.name,
            "model": self.kind,
            "n_qubits": self.n_qubits,
            "n_parameters": self.n_parameters,
            "n_trainable_parameters": sum(self.trainable_mask()),
            "parameters_by_kind": self.parameter_counts(),
            "origin": f"monomer: {self.monomer.molecule.origin_rule}; pair: {self.pair.molecule.origin_rule}",
            "permutation_group_order": self.molecule.group.order(),
            "fragments": [list(f) for f in self.fragments],
            "n_monomer_terms": len(self.fragments),
            "n_pair_terms": len(self.fragment_pairs),
            "parameter_blocks": {
                "monomer": [self.monomer_slice.start, self.monomer_slice.stop],
                "pair": [self.pair_slice.start, self.pair_slice.stop],
                "offset": self.offset,
            },
            "monomer": self.monomer.summary(),
            "pair": self.pair.summary(),
            "symmetrize_inversion": self.symmetrize_inversion,
            "hyperparameters": dict(self.hyperparameters),
        }


AnyModel = Model | FragmentModel
"""What ``build_model`` returns and the exact executor, trainer and audit accept."""


def identical_fragments(molecule: MoleculeSpec) -> Fragments:
    """The molecule's fragments, checked: at least two, the same elements in the same order, and
    kept as whole fragments by every permutation of the molecule's group."""
    frags = molecule.fragments
    if not frags:
        raise ModelBuildError(
            f"{molecule.name} records no fragments; list its monomers (`fragments:` in a YAML spec, one list of "
            "atom indices per monomer) or use the whole-system model (--model invariant)")
    if len(frags) < 2:
        raise ModelBuildError(f"{molecule.name} has a single fragment; use --model invariant for one molecule")
    elements = [tuple(molecule.symbols[i] for i in f) for f in frags]
    for f, e in zip(frags[1:], elements[1:], strict=True):
        if e != elements[0]:
            raise ModelBuildError(
                f"fragment {list(f)} of {molecule.name} holds {' '.join(e)}, fragment {list(frags[0])} holds "
                f"{' '.join(elements[0])}: the fragment model shares one monomer model, so every fragment must list "
                "the same elements in the same order; reorder the atom indices, or use --model invariant")
    blocks = {frozenset(f) for f in frags}
    for g in molecule.group.generators:
        if {frozenset(g[i] for i in f) for f in frags} != blocks:
            raise ModelBuildError(
                f"the permutation {list(g)} of {molecule.name} moves atoms between fragments; the fragment model is "
                "invariant only under swaps within fragments and of whole fragments: drop `permutations:` from the "
                "spec (the fragment group is then used) or use --model invariant")
    return frags


def _sub_molecule(molecule: MoleculeSpec, atoms: tuple[int, ...], name: str, **kwargs) -> MoleculeSpec:
    return make_molecule(f"{molecule.name}:{name}", [molecule.symbols[i] for i in atoms],
                         molecule.positions_a[list(atoms)], **kwargs)


def _blocked(prefix: str, parameters: tuple[Parameter, ...]) -> list[Parameter]:
    """A sub-model's parameters under the composite's names; its offset frozen (e0 is global)."""
    return [replace(p, name=f"{prefix}.{p.name}", trainable=p.trainable and p.kind != "offset") for p in parameters]


def build_fragment(molecule: MoleculeSpec, config: ModelConfig | None = None) -> FragmentModel:
    """The fragment model of ``molecule`` (it needs ``fragments``): invariant monomer and pair siVQLMs.

    The monomer model uses ``depth`` and ``rep``; the pair model ``pair_depth`` (default
    ``depth``) and ``pair_rep``; the other settings apply to both.
    """
    cfg = config or ModelConfig(model="fragment")
    frags = identical_fragments(molecule)
    k = len(frags[0])
    common = {**cfg.model_dump(exclude={"pair_depth", "pair_rep"}), "model": "invariant"}
    monomer = build_invariant(_sub_molecule(molecule, frags[0], "monomer"), ModelConfig(**common))
    pair_molecule = _sub_molecule(molecule, frags[0] + frags[1], "pair", center="centroid",
                                  fragments=[list(range(k)), list(range(k, 2 * k))])
    pair_depth = cfg.depth if cfg.pair_depth is None else cfg.pair_depth
    pair = build_invariant(pair_molecule, ModelConfig(**{**common, "depth": pair_depth, "rep": cfg.pair_rep}))
    parameters = (*_blocked("monomer", monomer.parameters), *_blocked("pair", pair.parameters),
                  Parameter("e0", "offset"))
    return FragmentModel(
        molecule=molecule, fragments=frags, monomer=monomer, pair=pair, parameters=parameters,
        symmetrize_inversion=cfg.symmetrize_inversion,
        hyperparameters={**cfg.model_dump(), "pair_depth": pair_depth},
    )
