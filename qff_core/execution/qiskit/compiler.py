"""The Qiskit compiler: one parametrised circuit template per model, plus the classical maps.

Every gate angle of the template is its own circuit parameter (a *unit*), so a parameter
shift moves exactly one gate. Angles are computed classically from the weights theta and
the geometry (``bind``), in JAX so that their derivatives are exact (autodiff, not finite
differences). Gate forms (all exact):

* singlet on (a, b): H(a), CX(a, b), X(b), Z(a) on |00>;
* encoding exp(-i alpha x.sigma / 2) = RZ(b) RY(g) RZ(phi) RY(-g) RZ(-b), a rotation by
  phi = alpha |x| about n = x / |x| with (g, b) the polar and azimuthal angles of n: five
  units, in time order (-b, -g, phi, g, b);
* Heisenberg exchange exp(-i J sigma_i.sigma_j): one unit per pair, compiled with three CNOTs
  (``_exchange``: exact up to a global phase, which no expectation value sees) instead of
  RXX(2J) RYY(2J) RZZ(2J), six two-qubit gates once lowered (``exchange="rotations"``);
* orbit-summed exchange exp(-i J H), H = sum sigma_i.sigma_j: W diag(exp(-i J lambda)) W^T
  with W the eigenvectors of H (two fixed unitaries) and the diagonal as commuting
  Z-string rotations exp(-i c_S J Z_S) (Walsh expansion of lambda): one unit per string,
  angle c_S J, two-term rule each (a spectrum rule for H itself can have dozens of
  incommensurate frequencies: 49 for NH3 all-to-all, too ill-conditioned to use);
* RZ, the generic model's RX/RY/RZ(a x) and Rot = RZ(omega) RY(theta) RZ(phi): one unit per angle.

Forces need d<O>/dx for each encoding. Rather than the chain rule through (g, b), which is
singular when n is along z (LiH's reference geometry), the derivative of the encoding
matrix is written as a small rotation after it: dPhi/dx_k = (-i w_k.sigma / 2) Phi. The
rotation axis of each of the five units, seen after the gate, spans that space; three of
them (phi's unit, always, and the best-conditioned two others) give d<O>/dx_k as an exact
linear combination of their shift derivatives (``force_coefficients``). Those axes still
become dependent for n along z when phi is near a multiple of pi, so a rotation-invariant
model is evaluated in a frame that keeps every atom off the z axis (``frame.py``): exact, and
the map stays well conditioned. Positions in Angstrom, energies in eV.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from itertools import combinations

import jax
import jax.numpy as jnp
import numpy as np

from qff_core.errors import InputError, ModelBuildError, ResourceError
from qff_core.execution.gates import (
    HEISENBERG_PAIR,
    PAULI_ROTATION,
    Z_STRING,
    ShiftRule,
    enable_x64,
    heisenberg_sum_eig,
)
from qff_core.execution.qiskit.angles import ENCODE_UNITS, PHI_SLOT, encode_angles, encode_coefficients
from qff_core.execution.qiskit.frame import frame_rotation
from qff_core.models.fragment import EXACT_ONLY, AnyModel, FragmentModel
from qff_core.models.ir import (
    CNOT,
    RZ,
    Encode,
    EncodeAxis,
    Exchange,
    ExchangeSum,
    HeisenbergObservable,
    Model,
    Rot,
    Singlet,
    ZObservable,
    light_cone,
)


@dataclass(frozen=True)
class CircuitUnit:
    """One circuit parameter: one gate angle that a shift moves.

    ``gate`` is the gate's position in ``model.gates()``, ``slot`` which of its angles,
    ``weights`` the entries of theta the angle depends on, ``data`` whether it depends on the
    geometry, ``rule`` the exact shift rule for d<O>/d(angle) (radians).
    """

    gate: int
    kind: str
    slot: int
    rule: ShiftRule
    weights: tuple[int, ...]
    data: bool


@dataclass(frozen=True)
class QiskitModel:
    """A model compiled for Qiskit: template, observable, units and the classical maps.

    ``angles_fn(theta, positions (atoms, 3), sign) -> (n_units,)`` and
    ``force_coefficients_fn(theta, positions, sign) -> (n_units, atoms, 3)`` are JAX functions
    of one geometry (``batch_*``: jitted over a batch, plus d(angles)/d(theta) and the
    theta-VJP of the force coefficients); ``sign`` is +1, or -1 for the inverted image. The energy of a geometry is
    ``theta[scale] * mean over images of <O> + theta[offset]`` (eV) and its gradient with
    respect to the positions ``theta[scale] * mean over images of sum_u K_u d<O>/d(angle_u)``.
    """

    model: Model
    template: object  # qiskit.QuantumCircuit (kept untyped: qiskit is imported lazily)
    observable: object  # qiskit.quantum_info.SparsePauliOp
    units: tuple[CircuitUnit, ...]
    images: tuple[float, ...]
    angles_fn: Callable
    force_coefficients_fn: Callable
    batch_angles: Callable
    batch_force_coefficients: Callable
    batch_angle_jacobian: Callable
    batch_force_vjp: Callable

    @property
    def n_units(self) -> int:
        """Number of circuit parameters (columns of a parameter-value row)."""
        return len(self.units)

    def bind(self, theta: np.ndarray, positions_a: np.ndarray, image: float = 1.0) -> np.ndarray:
        """Circuit-parameter values (n, n_units) for a batch of geometries (n, atoms, 3) in Angstrom."""
        theta, positions = self.check(theta, positions_a)
        return np.asarray(self.batch_angles(jnp.asarray(theta), jnp.asarray(positions), float(image)))

    def check(self, theta, positions_a) -> tuple[np.ndarray, np.ndarray]:
        """Validated float64 (theta, positions (n, atoms, 3)); a single geometry becomes a batch of one."""
        theta = np.asarray(theta, dtype=np.float64)
        if theta.shape != (self.model.n_parameters,):
            raise InputError(f"the model has {self.model.n_parameters} parameters; got an array of shape {theta.shape}")
        if not np.all(np.isfinite(theta)):
            raise InputError("the parameter vector holds NaN or infinite values")
        positions = self.model.molecule.validate_positions(positions_a)
        return theta, positions[None] if positions.ndim == 2 else positions


# ----------------------------------------------------------------------------- compiler


def _units_for(model: Model) -> list[CircuitUnit]:
    """One unit per gate angle of the gates inside the observable's light cone (the rest cannot change <O>)."""
    units: list[CircuitUnit] = []
    live = light_cone(model)
    for k, g in enumerate(model.gates()):
        if k not in live:
            continue
        if isinstance(g, Encode):
            units += [CircuitUnit(k, "encode", s, PAULI_ROTATION, (g.alpha,) if s == PHI_SLOT else (), True)
                      for s in range(ENCODE_UNITS)]
        elif isinstance(g, Exchange):
            units += [CircuitUnit(k, "exchange", s, HEISENBERG_PAIR, (g.j,), False) for s in live[k]]
        elif isinstance(g, ExchangeSum):
            _, lam, _ = heisenberg_sum_eig(g.pairs)
            units += [CircuitUnit(k, "exchange_sum", s, Z_STRING, (g.j,), False)
                      for s in range(len(_walsh_z_terms(lam)))]
        elif isinstance(g, RZ):
            units.append(CircuitUnit(k, "rz", 0, PAULI_ROTATION, (g.angle,), False))
        elif isinstance(g, EncodeAxis):
            units.append(CircuitUnit(k, "encode_axis", g.axis, PAULI_ROTATION, (g.scale,), True))
        elif isinstance(g, Rot):
            units += [CircuitUnit(k, "rot", s, PAULI_ROTATION, (g.angles[s],), False) for s in range(3)]
        elif not isinstance(g, (Singlet, CNOT)):  # pragma: no cover - every IR gate is handled
            raise ModelBuildError(f"the Qiskit compiler cannot compile {g!r}")
    return units


def _walsh_z_terms(lam: np.ndarray) -> list[tuple[tuple[int, ...], float]]:
    """diag(lam) on s qubits (local qubit 0 most significant) as sum_S c_S Z_S, identity dropped."""
    s = int(np.log2(len(lam)))
    idx = np.arange(len(lam))
    bits = [(idx >> (s - 1 - i)) & 1 for i in range(s)]
    terms = []
    for size in range(1, s + 1):
        for subset in combinations(range(s), size):
            signs = np.prod([1 - 2 * bits[i] for i in subset], axis=0)
            c = float(np.dot(lam, signs)) / len(lam)
            if abs(c) > 1e-12:
                terms.append((subset, c))
    return terms


EXCHANGE_FORMS = ("cx3", "rotations")
"""How an exchange unit is compiled: three CNOTs and four rotations (default), or RXX RYY RZZ."""


def _exchange(qc, j, a: int, b: int, form: str = "cx3") -> None:
    """exp(-i j sigma_a.sigma_b) on qubits a, b (``j`` a circuit parameter or expression).

    ``cx3``: exp(-i j (XX + YY + ZZ)) is a canonical two-qubit gate with equal coefficients; the
    three-CNOT circuit below equals it up to the global phase exp(-i j) (checked against the matrix
    exponential in the tests)."""
    if form == "rotations":
        qc.rxx(2 * j, a, b)
        qc.ryy(2 * j, a, b)
        qc.rzz(2 * j, a, b)
        return
    half_pi = np.pi / 2
    qc.rz(half_pi, b)
    qc.cx(b, a)
    qc.rz(2 * j + half_pi, a)
    qc.ry(2 * j + half_pi, b)
    qc.cx(a, b)
    qc.ry(-2 * j - half_pi, b)
    qc.cx(b, a)
    qc.rz(-half_pi, a)


def _build_template(model: Model, n_units: int, exchange: str = "cx3"):
    from qiskit import QuantumCircuit
    from qiskit.circuit import ParameterVector
    from qiskit.circuit.library import PauliEvolutionGate
    from qiskit.quantum_info import SparsePauliOp

    p = ParameterVector("a", n_units)
    qc = QuantumCircuit(model.n_qubits, name=f"qff-{model.kind}-{model.molecule.name}")
    u = 0
    live = light_cone(model)
    for k, g in enumerate(model.gates()):
        if k not in live:
            continue
        if isinstance(g, Singlet):
            a, b = g.qubits
            qc.h(a)
            qc.cx(a, b)
            qc.x(b)
            qc.z(a)
        elif isinstance(g, Encode):
            for gate, i in zip(("rz", "ry", "rz", "ry", "rz"), range(ENCODE_UNITS), strict=True):
                getattr(qc, gate)(p[u + i], g.qubit)
            u += ENCODE_UNITS
        elif isinstance(g, Exchange):
            for s in live[k]:
                _exchange(qc, p[u], *g.pairs[s], exchange)
                u += 1
        elif isinstance(g, ExchangeSum):
            support, lam, vec = heisenberg_sum_eig(g.pairs)
            qiskit_order = list(reversed(support))  # qiskit's first qubit is the least significant bit
            qc.unitary(vec.T, qiskit_order, label="W^T")
            for subset, _ in _walsh_z_terms(lam):
                z_string = SparsePauliOp.from_sparse_list([("Z" * len(subset), list(subset), 1.0)], len(support))
                qc.append(PauliEvolutionGate(z_string, time=p[u]), support)
                u += 1
            qc.unitary(vec, qiskit_order, label="W")
        elif isinstance(g, RZ):
            qc.rz(p[u], g.qubit)
            u += 1
        elif isinstance(g, EncodeAxis):
            (qc.rx, qc.ry, qc.rz)[g.axis](p[u], g.qubit)
            u += 1
        elif isinstance(g, Rot):
            qc.rz(p[u], g.qubit)
            qc.ry(p[u + 1], g.qubit)
            qc.rz(p[u + 2], g.qubit)
            u += 3
        elif isinstance(g, CNOT):
            qc.cx(g.control, g.target)
    assert u == n_units
    return qc


def build_observable(model: Model):
    """The model's observable as a SparsePauliOp on its qubits (a mean of terms, as in the IR)."""
    from qiskit.quantum_info import SparsePauliOp

    obs = model.observable
    n = model.n_qubits
    if isinstance(obs, HeisenbergObservable):
        c = 1.0 / len(obs.pairs)
        terms = [(pp, [a, b], c) for a, b in obs.pairs for pp in ("XX", "YY", "ZZ")]
    elif isinstance(obs, ZObservable):
        c = 1.0 / len(obs.qubits)
        terms = [("Z", [q], c) for q in obs.qubits]
    else:  # pragma: no cover
        raise ModelBuildError(f"the Qiskit compiler cannot measure {obs!r}")
    return SparsePauliOp.from_sparse_list(terms, n).simplify()


def _unit_groups(model: Model, units: list[CircuitUnit]):
    """The units grouped for vectorised angle maps: encodings (unit indices (n, 5), alpha index, atom); upload
    rotations, angle = theta[w] * x[atom, axis] (units, w, atom, axis); linear ones, angle = c * theta[w]
    (units, w, c)."""
    gates = model.gates()
    enc_units, enc_alpha, enc_atom = [], [], []
    axis_units, axis_scale, axis_atom, axis_axis = [], [], [], []
    lin_units, lin_weight, lin_coeff = [], [], []
    for i, un in enumerate(units):
        g = gates[un.gate]
        if isinstance(g, Encode):
            if un.slot == 0:
                enc_units.append(list(range(i, i + ENCODE_UNITS)))
                enc_alpha.append(g.alpha)
                enc_atom.append(g.atom)
        elif isinstance(g, EncodeAxis):
            axis_units.append(i)
            axis_scale.append(g.scale)
            axis_atom.append(g.atom)
            axis_axis.append(g.axis)
        else:
            lin_units.append(i)
            lin_weight.append(un.weights[0])
            lin_coeff.append(_walsh_z_terms(heisenberg_sum_eig(g.pairs)[1])[un.slot][1]
                             if isinstance(g, ExchangeSum) else 1.0)
    enc_units_a, enc_alpha_a, enc_atom_a = (np.asarray(v, dtype=int).reshape(-1, *s) for v, s in
                                            ((enc_units, (ENCODE_UNITS,)), (enc_alpha, ()), (enc_atom, ())))
    axis = [np.asarray(v, dtype=int) for v in (axis_units, axis_scale, axis_atom, axis_axis)]
    lin = (np.asarray(lin_units, dtype=int), np.asarray(lin_weight, dtype=int), np.asarray(lin_coeff))
    return enc_units_a, enc_alpha_a, enc_atom_a, axis, lin


def rotation_invariant(model: Model) -> bool:
    """The model's energy is exactly invariant under rotations: an invariant model without symmetry-breaking RZ."""
    return model.kind == "invariant" and not any(isinstance(g, RZ) for g in model.gates())


def compile_qiskit(model: AnyModel, *, exchange: str = "cx3", off_axis_frame: bool = True) -> QiskitModel:
    """Compile ``model`` into a parametrised circuit template and its classical angle maps.

    ``exchange``: how exchange units are compiled (``EXCHANGE_FORMS``). ``off_axis_frame``: evaluate
    a rotation-invariant model in the frame of ``frame.py`` (False only to measure what it prevents).
    A fragment model has no single circuit: ModelBuildError (it runs on the exact executor).
    """
    if exchange not in EXCHANGE_FORMS:
        raise InputError(f"exchange must be one of {', '.join(EXCHANGE_FORMS)}; got {exchange!r}")
    if isinstance(model, FragmentModel):
        raise ModelBuildError(EXACT_ONLY)
    try:
        import qiskit  # noqa: F401
    except ImportError as exc:  # pragma: no cover - qiskit is a dependency
        raise ResourceError("qiskit is not installed: pip install qiskit") from exc
    enable_x64()
    units = _units_for(model)
    template = _build_template(model, len(units), exchange)
    observable = build_observable(model)
    center = model.molecule.center
    n_atoms = model.molecule.n_atoms

    turn = off_axis_frame and rotation_invariant(model)

    def relative(positions: jnp.ndarray, sign) -> jnp.ndarray:
        origin = positions.mean(axis=0) if center is None else positions[center]
        x = positions - origin
        if turn:  # evaluate in a frame with every atom off the z axis (exact by invariance; frame.py says why)
            x = x @ frame_rotation(x).T
        return sign * x

    enc_units_a, enc_alpha_a, enc_atom_a, axis, lin = _unit_groups(model, units)
    m = len(units)

    def angles_fn(theta: jnp.ndarray, positions: jnp.ndarray, sign=1.0) -> jnp.ndarray:
        x = relative(positions, sign)
        out = jnp.zeros(m)
        if len(enc_alpha_a):
            out = out.at[enc_units_a].set(jax.vmap(encode_angles)(theta[enc_alpha_a], x[enc_atom_a]))
        if len(axis[0]):
            out = out.at[axis[0]].set(theta[axis[1]] * x[axis[2], axis[3]])
        if len(lin[0]):
            out = out.at[lin[0]].set(lin[2] * theta[lin[1]])
        return out

    def force_coefficients_fn(theta: jnp.ndarray, positions: jnp.ndarray, sign=1.0) -> jnp.ndarray:
        x = relative(positions, sign)
        jx = jax.jacfwd(relative)(positions, sign)  # (atoms, 3, atoms, 3), linear in positions
        out = jnp.zeros((m, n_atoms, 3))
        if len(enc_alpha_a):
            c = jax.vmap(encode_coefficients)(theta[enc_alpha_a], x[enc_atom_a])  # (n_enc, 5, 3)
            out = out.at[enc_units_a].set(jnp.einsum("eik,ekbc->eibc", c, jx[enc_atom_a]))
        if len(axis[0]):
            out = out.at[axis[0]].set(theta[axis[1]][:, None, None] * jx[axis[2], axis[3]])
        return out

    batch_force = jax.vmap(force_coefficients_fn, in_axes=(None, 0, None))

    def force_vjp(theta, positions, sign, cotangent):
        """d/dtheta of sum(cotangent * K(theta)) for a batch: exact, by reverse-mode autodiff."""
        _, pullback = jax.vjp(lambda t: batch_force(t, positions, sign), theta)
        return pullback(cotangent)[0]

    return QiskitModel(
        model=model,
        template=template,
        observable=observable,
        units=tuple(units),
        images=(1.0, -1.0) if model.symmetrize_inversion else (1.0,),
        angles_fn=angles_fn,
        force_coefficients_fn=force_coefficients_fn,
        batch_angles=jax.jit(jax.vmap(angles_fn, in_axes=(None, 0, None))),
        batch_force_coefficients=jax.jit(batch_force),
        batch_angle_jacobian=jax.jit(jax.vmap(jax.jacfwd(angles_fn), in_axes=(None, 0, None))),
        batch_force_vjp=jax.jit(force_vjp),
    )


# ----------------------------------------------------------------------------- transpilation


@dataclass(frozen=True)
class IsaProgram:
    """A template transpiled to a backend's ISA, with the observable mapped through its layout."""

    circuit: object  # qiskit.QuantumCircuit
    observable: object  # qiskit.quantum_info.SparsePauliOp
    target: str


TRANSPILER_SEED = 11
"""Layout and routing are randomised: a fixed seed gives the same circuit (and gate counts) every time."""


def transpile_for(qmodel: QiskitModel, backend=None, *, optimization_level: int = 1,
                  basis_gates: tuple[str, ...] | None = None) -> IsaProgram:
    """Transpile the template once for ``backend`` (a BackendV2, e.g. AerSimulator or a fake backend).

    Without a backend the circuit is lowered to ``basis_gates`` (default rz, sx, x, cx). The
    circuit parameters must survive unchanged: their order is the column order of ``bind``.
    """
    from qiskit.transpiler import generate_preset_pass_manager

    if backend is not None:
        pm = generate_preset_pass_manager(optimization_level=optimization_level, backend=backend,
                                          seed_transpiler=TRANSPILER_SEED)
        target = getattr(backend, "name", type(backend).__name__)
    else:
        gates = list(basis_gates or ("rz", "sx", "x", "cx"))
        pm = generate_preset_pass_manager(optimization_level=optimization_level, basis_gates=gates,
                                          seed_transpiler=TRANSPILER_SEED)
        target = "+".join(gates)
    isa = pm.run(qmodel.template)
    if list(isa.parameters) != list(qmodel.template.parameters):
        raise ModelBuildError(
            f"transpiling for {target} changed the circuit parameters; use a lower optimization_level"
        )
    obs = qmodel.observable.apply_layout(isa.layout) if isa.layout is not None else qmodel.observable
    return IsaProgram(circuit=isa, observable=obs, target=str(target))
