"""The parameter-shift planner: plan the rows to evaluate, then reassemble their expectation values.

Plan, then run (shared/conventions.md): ``plan_shifts`` returns a frozen ``Plan`` holding
every parameter-value row to bind to the one circuit template (unshifted rows, one- and
two-unit shifts), how the rows are grouped into PUBs and PUBs into chunks, and the linear
maps from the rows' expectation values to first derivatives d<O>/d(angle_u) and mixed second
derivatives d2<O>/d(angle_u)d(angle_v). Nothing runs here; an executor evaluates the rows
(``fanout.run_plan``) and ``Plan.reassemble`` turns the values into energies (eV), forces
(eV/Angstrom), the weight Jacobian dE/dtheta and the force-loss weight gradient, by the
classical chain rule through the angle maps (exact autodiff, no finite differences).

Row counts, per geometry and inversion image: 1 unshifted row; for forces, 2 rows per
position unit (3 per encoding gate, 1 per generic upload rotation); for weight gradients, 2
rows per unit whose angle depends on a trainable weight; for the force-loss gradient, 4 rows
per (position unit, weight unit) pair (2 when they are the same unit: its zero-shift term
is the unshifted row).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp

from qff_core.errors import InputError
from qff_core.execution.gates import ShiftRule
from qff_core.execution.qiskit.angles import PHI_SLOT
from qff_core.execution.qiskit.compiler import QiskitModel


@dataclass(frozen=True)
class Request:
    """What a plan must deliver beyond energies."""

    forces: bool = False
    weight_gradient: bool = False
    force_gradient: bool = False


@dataclass(frozen=True)
class Batching:
    """How rows become PUBs and PUBs become Dask chunks (one primitive job per chunk).

    ``rows_per_pub`` caps a PUB; ``min_chunks`` splits smaller plans further so that every
    worker gets one; ``pubs_per_chunk`` PUBs go into one primitive call.
    """

    rows_per_pub: int = 4096
    pubs_per_chunk: int = 1
    min_chunks: int = 1

    def split(self, n_rows: int) -> tuple[tuple[tuple[int, int], ...], tuple[tuple[int, ...], ...]]:
        """(PUB row ranges, chunks as tuples of PUB indices) for ``n_rows`` rows."""
        if self.rows_per_pub < 1 or self.pubs_per_chunk < 1 or self.min_chunks < 1:
            raise InputError("rows_per_pub, pubs_per_chunk and min_chunks must be positive")
        target = -(-n_rows // (self.min_chunks * self.pubs_per_chunk))
        size = max(1, min(self.rows_per_pub, target))
        pubs = tuple((a, min(a + size, n_rows)) for a in range(0, n_rows, size))
        chunks = tuple(tuple(range(c, min(c + self.pubs_per_chunk, len(pubs))))
                       for c in range(0, len(pubs), self.pubs_per_chunk))
        return pubs, chunks


ENERGIES = Request()
DEFAULT_BATCHING = Batching()


@dataclass(frozen=True)
class ShiftResult:
    """Reassembled outputs of a plan (numpy, float64).

    ``energies`` (n,) eV and their variance; ``forces`` (n, atoms, 3) eV/Angstrom and variance
    (from shot noise, propagated linearly; zero on an exact simulator); ``energy_jacobian``
    (n, n_parameters) dE/dtheta, zero for frozen parameters.
    """

    energies: np.ndarray
    energies_var: np.ndarray
    forces: np.ndarray | None
    forces_var: np.ndarray | None
    energy_jacobian: np.ndarray | None
    plan: Plan = field(repr=False)
    f: np.ndarray = field(repr=False)
    d1: np.ndarray = field(repr=False)
    d2: np.ndarray | None = field(repr=False)

    def force_gradient(self, cotangent: np.ndarray) -> np.ndarray:
        """sum_{i,a,c} cotangent[i,a,c] * d(dE_i/dr_ac)/dtheta, zero for frozen parameters.

        With cotangent = dLoss/d(dE/dr) this is the force term of a loss gradient.
        """
        plan = self.plan
        if self.d2 is None:
            raise InputError("this plan has no second-order shifts; plan it with force_gradient=True")
        q = plan.qmodel
        model = q.model
        n, n_img = plan.n_geometries, len(q.images)
        s = plan.theta[model.scale]
        ct = np.asarray(cotangent, dtype=np.float64).reshape(n, *plan.positions_a.shape[1:])
        grad = np.zeros(model.n_parameters)
        theta = jnp.asarray(plan.theta)
        for k, sign in enumerate(q.images):
            pts = slice(k * n, (k + 1) * n)
            kr = np.einsum("iuac,iac->iu", plan.force_coefficients[pts], ct)  # (n, units)
            d1, d2 = self.d1[pts], self.d2[pts]
            grad[model.scale] += np.sum(kr * d1) / n_img
            vjp = q.batch_force_vjp(theta, jnp.asarray(plan.positions_a), sign,
                                    jnp.asarray(d1[:, :, None, None] * ct[:, None]))
            grad += s * np.asarray(vjp) / n_img
            grad += s * np.einsum("iu,iuv,ivp->p", kr, d2, plan.angle_jacobian[pts]) / n_img
        return grad * plan.trainable


@dataclass(frozen=True)
class Plan:
    """Every row to evaluate for one request, and how to reassemble the results.

    ``values`` (n_rows, n_units) binds to the template. Points are (image, geometry) pairs,
    point = image * n_geometries + geometry. ``first`` maps row values to first derivatives
    at ``first_index`` (point, unit); ``second`` to mixed second derivatives at
    ``second_index`` (point, u, v). Counts are cost: ``n_circuits``, ``n_rows``, ``n_pubs``,
    ``n_chunks``.
    """

    qmodel: QiskitModel = field(repr=False)
    request: Request
    theta: np.ndarray = field(repr=False)
    positions_a: np.ndarray = field(repr=False)
    trainable: np.ndarray = field(repr=False)
    values: np.ndarray = field(repr=False)
    base_rows: np.ndarray = field(repr=False)
    first: sp.csr_matrix = field(repr=False)
    first_index: np.ndarray = field(repr=False)
    second: sp.csr_matrix | None = field(repr=False)
    second_index: np.ndarray | None = field(repr=False)
    force_coefficients: np.ndarray | None = field(repr=False)
    angle_jacobian: np.ndarray | None = field(repr=False)
    pubs: tuple[tuple[int, int], ...]
    chunks: tuple[tuple[int, ...], ...]

    n_circuits: int = 1

    @property
    def n_geometries(self) -> int:
        """Geometries in the batch."""
        return len(self.positions_a)

    @property
    def n_rows(self) -> int:
        """Parameter bindings (rows) to evaluate."""
        return len(self.values)

    @property
    def n_pubs(self) -> int:
        """PUBs the rows are grouped into."""
        return len(self.pubs)

    @property
    def n_chunks(self) -> int:
        """Dask tasks, each one primitive job."""
        return len(self.chunks)

    def cost(self) -> dict:
        """The counts, JSON-ready."""
        return {"circuits": self.n_circuits, "rows": self.n_rows, "pubs": self.n_pubs, "chunks": self.n_chunks,
                "first_derivatives": int(self.first.shape[0]),
                "second_derivatives": 0 if self.second is None else int(self.second.shape[0])}

    def reassemble(self, evs: np.ndarray, variances: np.ndarray | None = None) -> ShiftResult:
        """Energies, forces and the energy Jacobian from the rows' expectation values <O> (and variances)."""
        evs = np.asarray(evs, dtype=np.float64).reshape(-1)
        if evs.shape != (self.n_rows,):
            raise InputError(f"expected {self.n_rows} expectation values, got {evs.shape}")
        var = np.zeros_like(evs) if variances is None else np.asarray(variances, dtype=np.float64).reshape(-1)
        q, model = self.qmodel, self.qmodel.model
        n, n_img, m = self.n_geometries, len(q.images), q.n_units
        s, e0 = self.theta[model.scale], self.theta[model.offset]
        f = evs[self.base_rows]
        d1 = np.zeros((n * n_img, m))
        d1_var = np.zeros((n * n_img, m))
        if self.first.shape[0]:
            d1[self.first_index[:, 0], self.first_index[:, 1]] = self.first @ evs
            d1_var[self.first_index[:, 0], self.first_index[:, 1]] = (self.first.multiply(self.first)) @ var
        d2 = None
        if self.second is not None:
            d2 = np.zeros((n * n_img, m, m))
            vals = self.second @ evs
            p, u, v = self.second_index.T
            d2[p, u, v] = vals
            d2[p, v, u] = vals
        f_img = f.reshape(n_img, n)
        energies = s * f_img.mean(axis=0) + e0
        energies_var = s**2 * var[self.base_rows].reshape(n_img, n).sum(axis=0) / n_img**2
        forces = forces_var = jac = None
        if self.force_coefficients is not None:
            kd = np.einsum("puac,pu->pac", self.force_coefficients, d1).reshape(n_img, n, -1, 3)
            forces = -s * kd.mean(axis=0)
            kv = np.einsum("puac,pu->pac", self.force_coefficients**2, d1_var).reshape(n_img, n, -1, 3)
            forces_var = s**2 * kv.sum(axis=0) / n_img**2
        if self.request.weight_gradient:
            jac = s * np.einsum("pu,puk->pk", d1, self.angle_jacobian)
            jac = jac.reshape(n_img, n, -1).mean(axis=0)
            jac[:, model.scale] += f_img.mean(axis=0)
            jac[:, model.offset] += 1.0
            jac = jac * self.trainable
        return ShiftResult(energies=energies, energies_var=energies_var, forces=forces, forces_var=forces_var,
                           energy_jacobian=jac, plan=self, f=f, d1=d1, d2=d2)


# ----------------------------------------------------------------------------- planning


def _shifted_rows(base: np.ndarray, entries: np.ndarray, rules: list[ShiftRule], rule_of: np.ndarray,
                  first_row: int) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """Rows base[pt] + shift * e_unit for first-order entries (pt, unit), grouped by rule.

    Returns (rows, entry ids, row ids, coefficients) for the sparse map.
    """
    blocks, e_ids, r_ids, coeffs = [], [], [], []
    row = first_row
    for r, rule in enumerate(rules):
        sel = np.nonzero(rule_of[entries[:, 1]] == r)[0]
        if not len(sel):
            continue
        pts, units = entries[sel, 0], entries[sel, 1]
        for shift, c in zip(rule.shifts, rule.coeffs, strict=True):
            block = base[pts].copy()
            block[np.arange(len(sel)), units] += shift
            blocks.append(block)
            e_ids.append(sel)
            r_ids.append(np.arange(row, row + len(sel)))
            coeffs.append(np.full(len(sel), c))
            row += len(sel)
    return (np.concatenate(blocks) if blocks else np.zeros((0, base.shape[1])), e_ids, r_ids, coeffs)


def _second_rows(base: np.ndarray, entries: np.ndarray, rules: list[ShiftRule], rule_of: np.ndarray,
                 first_row: int, base_rows: np.ndarray):
    """Rows for mixed second derivatives at entries (pt, u, v), u <= v; a zero total shift reuses the base row."""
    blocks, e_ids, r_ids, coeffs = [], [], [], []
    row = first_row
    same = entries[:, 1] == entries[:, 2]
    for r1, rule1 in enumerate(rules):
        for r2, rule2 in enumerate(rules):
            mask = (rule_of[entries[:, 1]] == r1) & (rule_of[entries[:, 2]] == r2)
            for diagonal in (False, True):
                sel = np.nonzero(mask & (same == diagonal))[0]
                if not len(sel):
                    continue
                pts, u, v = entries[sel, 0], entries[sel, 1], entries[sel, 2]
                if diagonal:
                    if r1 != r2:  # pragma: no cover - one unit has one rule
                        continue
                    composed = rule1.compose(rule1)
                    terms = [((sh, 0.0), c) for sh, c in zip(composed.shifts, composed.coeffs, strict=True)]
                else:
                    terms = [((s1, s2), c1 * c2) for s1, c1 in zip(rule1.shifts, rule1.coeffs, strict=True)
                             for s2, c2 in zip(rule2.shifts, rule2.coeffs, strict=True)]
                for (s1, s2), c in terms:
                    e_ids.append(sel)
                    coeffs.append(np.full(len(sel), c))
                    if s1 == 0.0 and s2 == 0.0:
                        r_ids.append(base_rows[pts])
                        continue
                    block = base[pts].copy()
                    block[np.arange(len(sel)), u] += s1
                    block[np.arange(len(sel)), v] += s2
                    blocks.append(block)
                    r_ids.append(np.arange(row, row + len(sel)))
                    row += len(sel)
    return (np.concatenate(blocks) if blocks else np.zeros((0, base.shape[1])), e_ids, r_ids, coeffs)


def _sparse(e_ids, r_ids, coeffs, n_entries: int, n_rows: int) -> sp.csr_matrix:
    if not e_ids:
        return sp.csr_matrix((n_entries, n_rows))
    return sp.csr_matrix((np.concatenate(coeffs), (np.concatenate(e_ids), np.concatenate(r_ids))),
                         shape=(n_entries, n_rows))


def plan_shifts(qmodel: QiskitModel, theta: np.ndarray, positions_a: np.ndarray, request: Request = ENERGIES,
                batching: Batching = DEFAULT_BATCHING) -> Plan:
    """Plan the rows for energies and what ``request`` asks for, at ``theta`` and a batch of geometries.

    Weight derivatives are taken for trainable parameters only (frozen ones get zeros).
    """
    theta, positions = qmodel.check(theta, positions_a)
    model = qmodel.model
    m = qmodel.n_units
    tj, xj = jnp.asarray(theta), jnp.asarray(positions)
    base = np.concatenate([np.asarray(qmodel.batch_angles(tj, xj, sign)) for sign in qmodel.images])
    n_pts = len(base)
    trainable = np.asarray(model.trainable_mask(), dtype=float)
    need_k = request.forces or request.force_gradient
    need_jac = request.weight_gradient or request.force_gradient
    kcoef = (np.concatenate([np.asarray(qmodel.batch_force_coefficients(tj, xj, sign)) for sign in qmodel.images])
             if need_k else None)
    jac = (np.concatenate([np.asarray(qmodel.batch_angle_jacobian(tj, xj, sign)) for sign in qmodel.images])
           * trainable if need_jac else None)

    pos_mask = np.abs(kcoef).reshape(n_pts, m, -1).max(axis=2) > 0 if need_k else np.zeros((n_pts, m), bool)
    weight_units = np.array([any(trainable[w] for w in u.weights) for u in qmodel.units], dtype=bool)
    first_mask = pos_mask.copy()
    if request.weight_gradient:
        first_mask |= weight_units[None, :]
    first_entries = np.argwhere(first_mask)
    rules: list[ShiftRule] = []
    for u in qmodel.units:
        if u.rule not in rules:
            rules.append(u.rule)
    rule_of = np.array([rules.index(u.rule) for u in qmodel.units])

    base_rows = np.arange(n_pts)
    rows1, e1, r1, c1 = _shifted_rows(base, first_entries, rules, rule_of, n_pts)
    second = second_entries = None
    rows2 = np.zeros((0, m))
    if request.force_gradient:
        pairs = pos_mask[:, :, None] & weight_units[None, None, :]
        pairs = pairs | np.transpose(pairs, (0, 2, 1))
        second_entries = np.argwhere(np.triu(pairs))
        rows2, e2, r2, c2 = _second_rows(base, second_entries, rules, rule_of, n_pts + len(rows1), base_rows)
        second = (e2, r2, c2)
    values = np.concatenate([base, rows1, rows2])
    first = _sparse(e1, r1, c1, len(first_entries), len(values))
    if second is not None:
        second = _sparse(*second, len(second_entries), len(values))
    pubs, chunks = batching.split(len(values))
    return Plan(qmodel=qmodel, request=request, theta=theta, positions_a=positions, trainable=trainable,
                values=values, base_rows=base_rows, first=first, first_index=first_entries, second=second,
                second_index=second_entries, force_coefficients=kcoef, angle_jacobian=jac, pubs=pubs, chunks=chunks)


def _rows_of(rule: ShiftRule) -> int:
    return len(rule)


def count_shifts(qmodel: QiskitModel, n_geometries: int, request: Request = ENERGIES,
                 batching: Batching = DEFAULT_BATCHING) -> dict:
    """The counts ``plan_shifts`` would give, from the model's structure alone (nothing is evaluated).

    For pricing a run before it starts (a training step, an evaluation): rows are parameter
    bindings. Assumes every position unit has a non-zero coefficient (true unless a generic
    upload scale is exactly 0).
    """
    model = qmodel.model
    trainable = model.trainable_mask()
    position: list[ShiftRule] = []  # one entry per position unit per point
    both: list[ShiftRule] = []  # units that are position and weight units
    weight: list[ShiftRule] = []
    for u in qmodel.units:
        is_weight = any(trainable[w] for w in u.weights)
        if is_weight:
            weight.append(u.rule)
        # Three units per encoding (phi's, weight-dependent, and two others), every upload rotation.
        if (u.kind == "encode" and u.slot in (0, 1, PHI_SLOT)) or u.kind == "encode_axis":
            position.append(u.rule)
            if is_weight:
                both.append(u.rule)
    need_p = request.forces or request.force_gradient
    per_point = 1
    first = (len(position) if need_p else 0) + (len(weight) - (len(both) if need_p else 0)
                                                 if request.weight_gradient else 0)
    per_point += sum(map(_rows_of, position)) if need_p else 0
    if request.weight_gradient:
        per_point += sum(map(_rows_of, weight)) - (sum(map(_rows_of, both)) if need_p else 0)
    second = 0
    if request.force_gradient:
        total = sum(_rows_of(p) for p in position) * sum(_rows_of(w) for w in weight)
        diag = sum(_rows_of(r) ** 2 for r in both)
        dup = (sum(_rows_of(r) for r in both) ** 2 - diag) // 2  # {u, v} both in P and W counted twice
        composed = sum(len(r.compose(r)) - (0.0 in r.compose(r).shifts) for r in both)
        per_point += total - dup - diag + composed
        second = len(position) * len(weight) - len(both) * (len(both) - 1) // 2
    points = n_geometries * len(qmodel.images)
    rows = points * per_point
    pubs, chunks = batching.split(rows)
    return {"circuits": 1, "rows": rows, "pubs": len(pubs), "chunks": len(chunks),
            "first_derivatives": points * first, "second_derivatives": points * second}
