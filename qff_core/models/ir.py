"""The gate-program intermediate representation shared by every compiler.

A model is a flat parameter vector, a prelude (state preparation and the first encoding),
``depth`` layers of identical structure (what a compiler may scan over), an observable and
an output map E = s * <O> + e0. Gates refer to parameters by index, so sharing a parameter
across a symmetry orbit is sharing an index. The exact JAX simulator and the Qiskit
compiler both read this IR and must agree to 1e-8.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, fields
from typing import Literal

from qff_core.molecules import MoleculeSpec

Pair = tuple[int, int]


@dataclass(frozen=True)
class Singlet:
    """Prepare (|01> - |10>)/sqrt(2) on two qubits that start in |00>."""

    qubits: Pair


@dataclass(frozen=True)
class Encode:
    """exp(-i alpha x.sigma / 2) on ``qubit``, x the relative vector of ``atom`` (Angstrom)."""

    qubit: int
    atom: int
    alpha: int


@dataclass(frozen=True)
class Exchange:
    """Product of exp(-i J sigma_i.sigma_j) over disjoint (hence commuting) ``pairs``."""

    pairs: tuple[Pair, ...]
    j: int


@dataclass(frozen=True)
class ExchangeSum:
    """exp(-i J sum_{(i,j) in pairs} sigma_i.sigma_j): the orbit-summed Heisenberg generator."""

    pairs: tuple[Pair, ...]
    j: int


@dataclass(frozen=True)
class RZ:
    """RZ(angle) = exp(-i angle Z / 2) on ``qubit``; used for controlled symmetry breaking."""

    qubit: int
    angle: int


@dataclass(frozen=True)
class EncodeAxis:
    """exp(-i (scale * x_axis) P_axis / 2): the generic model's data re-uploading rotation."""

    qubit: int
    atom: int
    axis: int
    scale: int


@dataclass(frozen=True)
class Rot:
    """RZ(omega) RY(theta) RZ(phi), parameters ``(phi, theta, omega)`` (PennyLane's Rot)."""

    qubit: int
    angles: tuple[int, int, int]


@dataclass(frozen=True)
class CNOT:
    """Controlled NOT."""

    control: int
    target: int


Gate = Singlet | Encode | Exchange | ExchangeSum | RZ | EncodeAxis | Rot | CNOT

GATE_NAMES: dict[type, str] = {
    Singlet: "singlet", Encode: "encode", Exchange: "exchange", ExchangeSum: "exchange_sum",
    RZ: "rz", EncodeAxis: "encode_axis", Rot: "rot", CNOT: "cnot",
}
_PARAM_FIELDS = {"alpha", "j", "angle", "scale", "angles"}


def gate_params(gate: Gate) -> tuple[int, ...]:
    """The parameter indices a gate reads, in a fixed order."""
    out: list[int] = []
    for f in fields(gate):
        if f.name in _PARAM_FIELDS:
            value = getattr(gate, f.name)
            out.extend(value if isinstance(value, tuple) else (value,))
    return tuple(out)


def gate_structure(gate: Gate) -> tuple:
    """A gate with its parameter indices left out: equal structures compile to equal code."""
    return (type(gate), *tuple(getattr(gate, f.name) for f in fields(gate) if f.name not in _PARAM_FIELDS))


def gate_qubits(gate: Gate) -> tuple[int, ...]:
    """The qubits a gate acts on."""
    if isinstance(gate, Singlet):
        return tuple(gate.qubits)
    if isinstance(gate, (Exchange, ExchangeSum)):
        return tuple(sorted({q for pair in gate.pairs for q in pair}))
    if isinstance(gate, CNOT):
        return (gate.control, gate.target)
    return (gate.qubit,)


@dataclass(frozen=True)
class HeisenbergObservable:
    """The mean of sigma_i.sigma_j over ``pairs``; each term lies in [-3, 1]."""

    pairs: tuple[Pair, ...]


@dataclass(frozen=True)
class ZObservable:
    """The mean of Z_i over ``qubits``; lies in [-1, 1]."""

    qubits: tuple[int, ...]


Observable = HeisenbergObservable | ZObservable

ParameterKind = Literal["alpha", "J", "eps", "encoding_scale", "rotation", "scale", "offset"]


@dataclass(frozen=True)
class Parameter:
    """One entry of the flat parameter vector: what it is and whether training moves it."""

    name: str
    kind: ParameterKind
    trainable: bool = True
    layer: int | None = None


@dataclass(frozen=True)
class Model:
    """A complete model: molecule, qubits, parameters, gates, observable and output map.

    ``qubit_atoms[q]`` is the atom encoded on qubit ``q`` (``None`` for an unencoded
    ancilla) and ``qubit_copies[q]`` its copy index. Energies are ``theta[scale] * <O> +
    theta[offset]`` in eV; with ``symmetrize_inversion`` the expectation is averaged over X
    and its inversion -X through the origin.
    """

    kind: Literal["invariant", "generic"]
    molecule: MoleculeSpec
    qubit_atoms: tuple[int | None, ...]
    qubit_copies: tuple[int | None, ...]
    parameters: tuple[Parameter, ...]
    prelude: tuple[Gate, ...]
    layers: tuple[tuple[Gate, ...], ...]
    observable: Observable
    scale: int
    offset: int
    symmetrize_inversion: bool = False
    hyperparameters: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def n_qubits(self) -> int:
        """All qubits, ancillas included."""
        return len(self.qubit_atoms)

    @property
    def n_parameters(self) -> int:
        """Length of the parameter vector (s and e0 included)."""
        return len(self.parameters)

    @property
    def depth(self) -> int:
        """Number of repeated layers after the prelude."""
        return len(self.layers)

    def gates(self) -> tuple[Gate, ...]:
        """Every gate in execution order."""
        return self.prelude + tuple(g for layer in self.layers for g in layer)

    def parameter_counts(self) -> dict[str, int]:
        """Number of parameters of each kind."""
        return dict(Counter(p.kind for p in self.parameters))

    def trainable_mask(self) -> tuple[bool, ...]:
        """Which entries of the parameter vector training may change."""
        return tuple(p.trainable for p in self.parameters)

    def summary(self) -> dict:
        """A JSON-ready description: qubits, parameters by kind, gates per layer."""

        def counts(gates: tuple[Gate, ...]) -> dict[str, int]:
            return dict(Counter(GATE_NAMES[type(g)] for g in gates))

        obs = self.observable
        return {
            "molecule": self.molecule.name,
            "model": self.kind,
            "n_qubits": self.n_qubits,
            "n_data_qubits": sum(a is not None for a in self.qubit_atoms),
            "n_ancillas": sum(a is None for a in self.qubit_atoms),
            "n_parameters": self.n_parameters,
            "n_trainable_parameters": sum(self.trainable_mask()),
            "parameters_by_kind": self.parameter_counts(),
            "origin": self.molecule.origin_rule,
            "permutation_group_order": self.molecule.group.order(),
            "qubits": [
                {"qubit": q, "atom": a, "element": None if a is None else self.molecule.symbols[a], "copy": k}
                for q, (a, k) in enumerate(zip(self.qubit_atoms, self.qubit_copies, strict=True))
            ],
            "depth": self.depth,
            "gates_per_layer": [{"layer": "prelude", "gates": counts(self.prelude)}]
            + [{"layer": i + 1, "gates": counts(layer)} for i, layer in enumerate(self.layers)],
            "layer_structure": [_describe_gate(g) for g in (self.layers[0] if self.layers else ())],
            "prelude_structure": [_describe_gate(g) for g in self.prelude],
            "observable": {
                "type": "heisenberg_mean" if isinstance(obs, HeisenbergObservable) else "z_mean",
                "terms": [list(p) for p in obs.pairs] if isinstance(obs, HeisenbergObservable)
                else list(obs.qubits),
            },
            "symmetrize_inversion": self.symmetrize_inversion,
            "outside_light_cone": _outside_light_cone(self),
            "hyperparameters": dict(self.hyperparameters),
        }


def observable_qubits(obs: Observable) -> frozenset[int]:
    """The qubits the observable measures."""
    if isinstance(obs, HeisenbergObservable):
        return frozenset(q for pair in obs.pairs for q in pair)
    return frozenset(obs.qubits)


def light_cone(model: Model) -> dict[int, tuple[int, ...]]:
    """The gates inside the observable's backward light cone: gate index in ``model.gates()`` -> live slots.

    A gate after which no path of gates reaches a measured qubit cannot change <O> (it acts on qubits that are
    traced out), so a circuit may leave it out exactly. The slots of an ``Exchange`` are its pairs (disjoint and
    commuting, so each is judged alone); every other gate is one slot, ``(0,)``.
    """
    active = set(observable_qubits(model.observable))
    live: dict[int, tuple[int, ...]] = {}
    for k, g in reversed(list(enumerate(model.gates()))):
        if isinstance(g, Exchange):
            slots = tuple(s for s, pair in enumerate(g.pairs) if active.intersection(pair))
            for s in slots:
                active.update(g.pairs[s])
        else:
            slots = (0,) if active.intersection(gate_qubits(g)) else ()
            if slots:
                active.update(gate_qubits(g))
        if slots:
            live[k] = slots
    return live


def dead_parameters(model: Model) -> tuple[int, ...]:
    """Trainable parameters that no gate inside the light cone reads: their gradient is exactly zero."""
    gates = model.gates()
    read = {model.scale, model.offset}
    for k in light_cone(model):
        read.update(gate_params(gates[k]))
    return tuple(i for i, p in enumerate(model.parameters) if p.trainable and i not in read)


def _outside_light_cone(model: Model) -> dict:
    """What the observable cannot see: gates (and pair slots) left out of compiled circuits, dead parameters."""
    live = light_cone(model)
    dropped = [{**_describe_gate(g), "index": k, "slots": [s for s in range(len(g.pairs) if isinstance(g, Exchange)
                                                                         else 1) if s not in live.get(k, ())]}
               for k, g in enumerate(model.gates()) if live.get(k) != _all_slots(g)]
    return {"gates": dropped, "dead_parameters": [model.parameters[i].name for i in dead_parameters(model)]}


def _all_slots(g: Gate) -> tuple[int, ...]:
    return tuple(range(len(g.pairs))) if isinstance(g, Exchange) else (0,)


def _describe_gate(g: Gate) -> dict:
    out: dict = {"gate": GATE_NAMES[type(g)]}
    for f in fields(g):
        v = getattr(g, f.name)
        out[f.name] = [list(p) for p in v] if f.name == "pairs" else (list(v) if isinstance(v, tuple) else v)
    return out
