"""The fewest two-qubit gates a heavy-hex device needs for the H2O invariant circuit (D=6, rep=2), by exhaustive
search, beside what the transpiler reaches. Prints JSON.

Model of the cost: an exchange unit is 3 CNOTs and may swap its two qubits for free (exp(-iJ s.s) SWAP is, up to
a phase, exp(-i(J + pi/4) s.s), again 3 CNOTs); a singlet is 1 CNOT (and may swap: SWAP|s> = -|s>); a stand-alone
SWAP is 3 CNOTs (2 into an unused qubit in |0>). Gates of one exchange orbit commute and may go in any order;
nothing else is reordered. Dijkstra over (gate, qubit placement) finds the optimum on a path of 4 or 5 physical
qubits and on a T (the subgraphs of heavy hex on 4-5 qubits).

Usage: python benchmarks/exchange_routing_bound.py
"""

from __future__ import annotations

import heapq
import itertools
import json

SINGLETS = ((0, 1), (2, 3))
A, B, C = ((0, 1),), ((1, 2), (0, 3)), ((2, 3),)  # the H2O ring's exchange orbits, in layer order
GRAPHS = {"path4": (4, ((0, 1), (1, 2), (2, 3))), "path5": (5, ((0, 1), (1, 2), (2, 3), (3, 4))),
          "T5": (5, ((0, 1), (1, 2), (2, 3), (1, 4)))}


def fewest_two_qubit_gates(n_positions: int, edges, gates) -> int:
    """Minimum CNOT count of ``gates`` (a list of (pairs of one commuting group, CNOTs per pair))."""
    edge_set = {frozenset(e) for e in edges}
    start = [(0, 0, gates[0][0], perm) for perm in itertools.permutations([0, 1, 2, 3] + [-1] * (n_positions - 4))]
    heapq.heapify(start)
    queue, seen = start, set()
    while queue:
        cost, gi, remaining, perm = heapq.heappop(queue)
        if gi == len(gates):
            return cost
        if (gi, remaining, perm) in seen:
            continue
        seen.add((gi, remaining, perm))
        unit = gates[gi][1]
        for k, (a, b) in enumerate(remaining):
            pa, pb = perm.index(a), perm.index(b)
            if frozenset((pa, pb)) not in edge_set:
                continue
            rest = remaining[:k] + remaining[k + 1:]
            nxt, nrem = (gi, rest) if rest else (gi + 1, gates[gi + 1][0] if gi + 1 < len(gates) else ())
            swapped = list(perm)
            swapped[pa], swapped[pb] = swapped[pb], swapped[pa]
            for p in (perm, tuple(swapped)):
                heapq.heappush(queue, (cost + unit, nxt, nrem, p))
        for i, j in edges:
            if perm[i] < 0 and perm[j] < 0:
                continue
            p = list(perm)
            p[i], p[j] = p[j], p[i]
            heapq.heappush(queue, (cost + (2 if min(perm[i], perm[j]) < 0 else 3), gi, remaining, tuple(p)))
    raise RuntimeError("unreachable: stand-alone SWAPs always make progress")


def circuits(depth: int = 6) -> dict[str, list]:
    """The gate lists: every unit; the light cone (the last layer's copy-1 exchange dropped); and the light cone
    with the first exchange of singlet pair (0, 1) folded into a 1-CNOT preparation of that pair's state."""
    singlets = [((p,), 1) for p in SINGLETS]
    full = singlets + [(g, 3) for _ in range(depth) for g in (A, B, C)]
    cone = full[:-1]
    folded = [((SINGLETS[0],), 1), ((SINGLETS[1],), 1), (B, 3), (C, 3), *cone[5:]]
    return {"all_units": full, "light_cone": cone, "light_cone_and_first_pair_folded": folded}


def transpiled_count() -> int:
    from qiskit_ibm_runtime.fake_provider import FakeTorino

    from qff_core.execution.qiskit.compiler import compile_qiskit, transpile_for
    from qff_core.models import build_model
    from qff_core.molecules import builtin_molecule

    q = compile_qiskit(build_model(builtin_molecule("h2o"), depth=6))
    isa = transpile_for(q, FakeTorino(), optimization_level=3)
    return sum(1 for inst in isa.circuit.data if inst.operation.num_qubits == 2)


def main() -> None:
    out = {name: {g: fewest_two_qubit_gates(*GRAPHS[g], gates) for g in GRAPHS}
           for name, gates in circuits().items()}
    out["ideal_ring_all_units"] = fewest_two_qubit_gates(4, ((0, 1), (1, 2), (2, 3), (3, 0)), circuits()["all_units"])
    out["qff_on_fake_torino_level3"] = transpiled_count()
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
