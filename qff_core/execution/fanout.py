"""Run a plan: its chunks fanned out on a dask.distributed Client, one primitive job per chunk.

The evaluator (an Aer or IBM Runtime adapter) only executes: it gets a prepared program and
the parameter-value arrays of one chunk's PUBs and returns their expectation values and
variances. Results are put back in row order, so reassembly never depends on which worker
ran what. Seeds are derived per chunk from one base seed: the same plan and seed give the
same numbers on any number of workers.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from qff_core.execution.shift import Plan


class Evaluator(Protocol):
    """Executes PUBs of one prepared program in a single primitive job."""

    def run(self, program, values: list[np.ndarray], seed: int | None) -> list[tuple[np.ndarray, np.ndarray]]:
        """(expectation values, variances) of <O> for each array of rows (rows, n_units)."""
        ...


def chunk_seed(seed: int | None, chunk: int) -> int | None:
    """A reproducible seed for one chunk (None stays None)."""
    return None if seed is None else int(np.random.SeedSequence([seed, chunk]).generate_state(1)[0])


def _run_chunk(evaluator: Evaluator, program, values: list[np.ndarray], seed: int | None):
    return evaluator.run(program, values, seed)


def run_plan(plan: Plan, evaluator: Evaluator, program, *, client=None,
             seed: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Evaluate every row of ``plan``; returns (evs, variances), each (n_rows,).

    With a dask.distributed ``client`` each chunk is one task (the program is scattered to the
    workers once). Without one, an evaluator that can ``submit`` and ``collect`` (remote jobs:
    IBM Runtime) gets every chunk's job submitted before any is awaited; others run here, in order.
    """
    pieces = [[plan.values[a:b] for a, b in (plan.pubs[p] for p in chunk)] for chunk in plan.chunks]
    seeds = [chunk_seed(seed, c) for c in range(len(pieces))]
    if client is None and hasattr(evaluator, "submit"):
        jobs = [evaluator.submit(program, v, s) for v, s in zip(pieces, seeds, strict=True)]
        results = [evaluator.collect(job) for job in jobs]
    elif client is None:
        results = [_run_chunk(evaluator, program, v, s) for v, s in zip(pieces, seeds, strict=True)]
    else:
        [program_future] = client.scatter([program], broadcast=True, hash=False)
        futures = [client.submit(_run_chunk, evaluator, program_future, v, s, pure=False)
                   for v, s in zip(pieces, seeds, strict=True)]
        results = client.gather(futures)
    evs = np.empty(plan.n_rows)
    var = np.empty(plan.n_rows)
    for chunk, chunk_results in zip(plan.chunks, results, strict=True):
        for p, (e, v) in zip(chunk, chunk_results, strict=True):
            a, b = plan.pubs[p]
            evs[a:b] = np.asarray(e).reshape(-1)
            var[a:b] = np.asarray(v).reshape(-1)
    return evs, var
