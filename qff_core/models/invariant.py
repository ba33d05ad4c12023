"""The symmetry-invariant siVQLM builder (shared/design/model.md) for any molecule spec.

Rotation invariance comes from SU(2)-equivariant encodings, SU(2)-invariant singlets,
Heisenberg layers and a Heisenberg observable. Permutation invariance comes from sharing
every parameter across an orbit of the molecule's permutation group and from building
every layer so that the group maps it to itself.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from itertools import combinations

from qff_core.errors import ModelBuildError
from qff_core.models.config import ModelConfig
from qff_core.models.ir import (
    RZ,
    Encode,
    Exchange,
    ExchangeSum,
    Gate,
    HeisenbergObservable,
    Model,
    Pair,
    Parameter,
    Singlet,
)
from qff_core.molecules import MoleculeSpec
from qff_core.symmetry import Permutation, PermutationGroup

MAX_MATCHING_POINTS = 14
"""Above this many atoms per copy, no search for an invariant inter-atom singlet matching."""


def _perfect_matchings(points: Sequence[int]) -> Iterator[list[Pair]]:
    if not points:
        yield []
        return
    first, rest = points[0], points[1:]
    for i, partner in enumerate(rest):
        for m in _perfect_matchings(rest[:i] + rest[i + 1 :]):
            yield [(first, partner), *m]


def invariant_perfect_matching(group: PermutationGroup) -> list[Pair] | None:
    """The first perfect matching of the group's points that the group maps to itself, if any."""
    n = group.degree
    if n % 2 or n == 0 or n > MAX_MATCHING_POINTS:
        return None
    for m in _perfect_matchings(list(range(n))):
        if group.leaves_invariant(frozenset(p) for p in m):
            return m
    return None


def _pair(i: int, j: int) -> Pair:
    return (i, j) if i < j else (j, i)


def _pair_orbits(pairs: Sequence[Pair], group: PermutationGroup) -> list[list[Pair]]:
    return group.orbits([_pair(*p) for p in pairs], lambda g, p: _pair(g[p[0]], g[p[1]]))


def _is_matching(pairs: Sequence[Pair]) -> bool:
    qubits = [q for p in pairs for q in p]
    return len(qubits) == len(set(qubits))


def _singlet_pairing(atom_group: PermutationGroup, atom_gens: list[Permutation], rep: int,
                     na: int) -> tuple[list[Pair], dict[int, int], list | None, PermutationGroup]:
    """Singlets (inter-atom within each copy when the group leaves such a matching invariant, else the
    copies of one atom, with an ancilla per leftover copy), the ancillas, the inter-atom matching (or
    None) and the group acting on qubits (copy k of active atom i is qubit k * na + i)."""

    def qubit(i: int, k: int) -> int:
        return k * na + i

    n_data = rep * na
    singlets: list[Pair] = []
    ancilla_of: dict[int, int] = {}
    intra = invariant_perfect_matching(atom_group)
    if intra is not None:
        singlets = [(qubit(i, k), qubit(j, k)) for k in range(rep) for i, j in intra]
    else:
        singlets = [(qubit(i, 2 * c), qubit(i, 2 * c + 1)) for i in range(na) for c in range(rep // 2)]
        if rep % 2:
            for i in range(na):
                ancilla_of[qubit(i, rep - 1)] = n_data + len(ancilla_of)
            singlets += list(ancilla_of.items())
    n_qubits = n_data + len(ancilla_of)
    qubit_gens = []
    for g in atom_gens:
        qg = [0] * n_qubits
        for k in range(rep):
            for i in range(na):
                qg[qubit(i, k)] = qubit(g[i], k)
        for q, anc in ancilla_of.items():
            qg[anc] = ancilla_of[qg[q]]
        qubit_gens.append(tuple(qg))
    qubit_group = PermutationGroup(n_qubits, tuple(qubit_gens))
    if not qubit_group.leaves_invariant(frozenset(p) for p in singlets):  # pragma: no cover - invariant
        raise ModelBuildError("internal error: the singlet pairing is not permutation invariant")
    return singlets, ancilla_of, intra, qubit_group


def build_invariant(molecule: MoleculeSpec, config: ModelConfig | None = None) -> Model:
    """Build the siVQLM of ``molecule``; the IR is exactly invariant by construction.

    One function on purpose (about 100 lines): its local helpers append to one parameter list in
    circuit order, and that order is the parameter vector's, which checkpoints store.
    """
    cfg = config or ModelConfig()
    active = molecule.active_atoms
    na = len(active)
    if na == 0:
        raise ModelBuildError(f"{molecule.name} has no atom to encode: a single atom has no geometry")
    rep, depth = cfg.rep, cfg.depth
    position = {atom: i for i, atom in enumerate(active)}

    def qubit(i: int, k: int) -> int:
        return k * na + i

    n_data = rep * na
    atom_gens: list[Permutation] = [tuple(position[g[a]] for a in active) for g in molecule.group.generators]
    atom_group = PermutationGroup(na, tuple(atom_gens))

    singlets, ancilla_of, intra, qubit_group = _singlet_pairing(atom_group, atom_gens, rep, na)

    parameters: list[Parameter] = []

    def new_param(name: str, kind: str, *, trainable: bool = True, layer: int | None = None) -> int:
        parameters.append(Parameter(name=name, kind=kind, trainable=trainable, layer=layer))  # type: ignore[arg-type]
        return len(parameters) - 1

    # --- encoding: one alpha per (atom orbit, copy, layer).
    atom_orbits = atom_group.point_orbits()
    orbit_of = {i: o for o, orbit in enumerate(atom_orbits) for i in orbit}
    orbit_labels = []
    for orbit in atom_orbits:
        element = molecule.symbols[active[orbit[0]]]
        same = [o for o in atom_orbits if molecule.symbols[active[o[0]]] == element]
        orbit_labels.append(element if len(same) == 1 else f"{element}{same.index(orbit)}")

    def encoding_layer(layer: int) -> list[Gate]:
        alpha = {
            (o, k): new_param(f"alpha[l{layer},c{k},{orbit_labels[o]}]", "alpha", layer=layer)
            for k in range(rep) for o in range(len(atom_orbits))
        }
        return [Encode(qubit=qubit(i, k), atom=active[i], alpha=alpha[orbit_of[i], k])
                for k in range(rep) for i in range(na)]

    # --- exchange pairs: the pattern closed under the group, one J per orbit of pairs.
    data = list(range(n_data))
    if cfg.pattern == "ring":
        base = [(q, (q + 1) % n_data) for q in data] if n_data > 2 else list(combinations(data, 2))
    elif cfg.pattern == "comb":
        spine = [(i, (i + 1) % na) for i in range(na)] if na > 2 else list(combinations(range(na), 2))
        base = spine + [(qubit(i, k), qubit(i, k + 1)) for k in range(rep - 1) for i in range(na)]
    else:
        base = list(combinations(data, 2))
    base += list(ancilla_of.items())
    exchange_orbits = _pair_orbits(base, qubit_group) if base else []
    if not exchange_orbits and depth > 0:
        raise ModelBuildError(f"{molecule.name} with rep={rep} has no qubit pair to couple; use rep >= 2")

    def trainable_layer(layer: int) -> list[Gate]:
        gates: list[Gate] = []
        for b in range(cfg.blocks):
            for o, orbit in enumerate(exchange_orbits):
                j = new_param(f"J[l{layer},b{b},o{o}]", "J", layer=layer)
                cls = Exchange if _is_matching(orbit) else ExchangeSum
                gates.append(cls(pairs=tuple(orbit), j=j))
            if cfg.symmetry_breaking != "off":
                for q in data:
                    eps = new_param(f"eps[l{layer},b{b},q{q}]", "eps",
                                    trainable=cfg.symmetry_breaking == "trainable", layer=layer)
                    gates.append(RZ(qubit=q, angle=eps))
        return gates

    prelude: list[Gate] = [Singlet(qubits=p) for p in singlets] + encoding_layer(0)
    layers = [tuple(trainable_layer(d) + encoding_layer(d)) for d in range(1, depth + 1)]

    if cfg.observable == "singlet":
        first = singlets[0]
        terms = next(o for o in _pair_orbits([first], qubit_group))
    else:
        terms = list(combinations(data, 2)) or list(ancilla_of.items())
    observable = HeisenbergObservable(pairs=tuple(sorted(_pair(*p) for p in terms)))

    scale = new_param("s", "scale")
    offset = new_param("e0", "offset")
    qubit_atoms: list[int | None] = [active[q % na] for q in data] + [None] * len(ancilla_of)
    qubit_copies: list[int | None] = [q // na for q in data] + [None] * len(ancilla_of)
    return Model(
        kind="invariant",
        molecule=molecule,
        qubit_atoms=tuple(qubit_atoms),
        qubit_copies=tuple(qubit_copies),
        parameters=tuple(parameters),
        prelude=tuple(prelude),
        layers=tuple(layers),
        observable=observable,
        scale=scale,
        offset=offset,
        symmetrize_inversion=cfg.symmetrize_inversion,
        hyperparameters={
            **cfg.model_dump(),
            "singlet_pairs": [list(p) for p in singlets],
            "singlet_rule": "inter-atom within each copy" if intra is not None
            else "copies of one atom" + (" + ancillas" if ancilla_of else ""),
            "exchange_orbits": [[list(p) for p in o] for o in exchange_orbits],
            "orbit_summed_generators": sum(not _is_matching(o) for o in exchange_orbits),
            "qubit_group_generators": [list(g) for g in qubit_group.generators],
        },
    )
