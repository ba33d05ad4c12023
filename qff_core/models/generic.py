"""The generic (non-symmetric) baseline of the paper on the same data qubits.

Each active atom's relative vector enters as RX(a x) RY(a y) RZ(a z) on each of its qubits
(data re-uploading, one trainable scale a per qubit and layer), followed by a general
rotation Rot on every qubit and a CNOT ring between layers; observable: the mean of Z_i.
"""

from __future__ import annotations

from qff_core.errors import ModelBuildError
from qff_core.models.config import ModelConfig
from qff_core.models.ir import CNOT, EncodeAxis, Gate, Model, Parameter, Rot, ZObservable
from qff_core.molecules import MoleculeSpec


def build_generic(molecule: MoleculeSpec, config: ModelConfig | None = None) -> Model:
    """Build the generic baseline with ``rep`` qubits per active atom and depth ``D``."""
    cfg = config or ModelConfig(model="generic")
    active = molecule.active_atoms
    na = len(active)
    if na == 0:
        raise ModelBuildError(f"{molecule.name} has no atom to encode: a single atom has no geometry")
    n = cfg.rep * na
    parameters: list[Parameter] = []

    def new_param(name: str, kind: str, layer: int) -> int:
        parameters.append(Parameter(name=name, kind=kind, layer=layer))  # type: ignore[arg-type]
        return len(parameters) - 1

    def upload(layer: int) -> list[Gate]:
        gates: list[Gate] = []
        for q in range(n):
            a = new_param(f"a[l{layer},q{q}]", "encoding_scale", layer)
            gates += [EncodeAxis(qubit=q, atom=active[q % na], axis=axis, scale=a) for axis in range(3)]
            angles = tuple(new_param(f"rot[l{layer},q{q},{k}]", "rotation", layer) for k in range(3))
            gates.append(Rot(qubit=q, angles=angles))  # type: ignore[arg-type]
        return gates

    ring = [CNOT(control=q, target=(q + 1) % n) for q in range(n)] if n > 2 else (
        [CNOT(control=0, target=1)] if n == 2 else [])
    prelude = upload(0)
    layers = [tuple(ring + upload(d)) for d in range(1, cfg.depth + 1)]
    scale = len(parameters)
    parameters += [Parameter("s", "scale"), Parameter("e0", "offset")]
    return Model(
        kind="generic",
        molecule=molecule,
        qubit_atoms=tuple(active[q % na] for q in range(n)),
        qubit_copies=tuple(q // na for q in range(n)),
        parameters=tuple(parameters),
        prelude=tuple(prelude),
        layers=tuple(layers),
        observable=ZObservable(qubits=tuple(range(n))),
        scale=scale,
        offset=scale + 1,
        symmetrize_inversion=cfg.symmetrize_inversion,
        hyperparameters=cfg.model_dump(),
    )
