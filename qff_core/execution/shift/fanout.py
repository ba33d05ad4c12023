"""Run a plan: its chunks fanned out on a dask.distributed Client, one primitive job per chunk.

The evaluator (an Aer or IBM Runtime adapter) only executes: it gets a prepared program and
the parameter-value arrays of one chunk's PUBs and returns their expectation values and
variances. Results are put back in row order, so reassembly never depends on which worker
ran what. Each job gets a ``ShotSeed``: the base seed and the plan rows its PUBs start at.
Evaluators that sample row by row (Aer) seed every row from (seed, row), so the same rows and
seed give the same shots however the rows are split into PUBs, jobs and workers; those that
seed whole jobs (IBM's local testing mode) give the same shots for the same split.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar, runtime_checkable

import numpy as np

from qff_core.errors import EngineError, InputError, TransientError
from qff_core.execution.base import ShotSeed
from qff_core.execution.shift.journal import ChunkResults, JobJournal, plan_digest
from qff_core.execution.shift.planner import Plan
from qff_core.interrupts import raise_if_interrupted

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """Retry a chunk's job on ``TransientError`` only (anything else stops at once), with backoff.

    ``attempts`` counts the first try; the wait before retry k is ``delays_s[k]`` (the last
    entry repeats).
    """

    attempts: int = 3
    delays_s: tuple[float, ...] = (1.0, 4.0, 16.0)

    def __post_init__(self) -> None:
        if self.attempts < 1 or not self.delays_s or min(self.delays_s) < 0:
            raise InputError("a retry policy needs attempts >= 1 and non-negative delays")

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (0-based)."""
        return self.delays_s[min(retry, len(self.delays_s) - 1)]

    def call(self, fn: Callable[[], T]) -> T:
        """``fn()``, retried on TransientError."""
        for attempt in range(self.attempts):
            try:
                return fn()
            except TransientError:
                if attempt + 1 == self.attempts:
                    raise
                time.sleep(self.delay(attempt))
        raise AssertionError("unreachable")  # pragma: no cover


NO_RETRY = RetryPolicy(attempts=1)
DEFAULT_RETRY = RetryPolicy()


class Evaluator(Protocol):
    """Executes PUBs of one prepared program in a single primitive job."""

    def prepare(self, qmodel):
        """The program (ISA circuits, measured groups...) this evaluator runs for a compiled model."""
        ...

    def run(self, program, values: list[np.ndarray], seed: ShotSeed | None) -> list[tuple[np.ndarray, np.ndarray]]:
        """(expectation values, variances) of <O> for each array of rows (rows, n_units)."""
        ...


@runtime_checkable
class RemoteEvaluator(Protocol):
    """An evaluator whose jobs run elsewhere and have ids (IBM Runtime): submitted first, collected later,
    re-attached by id after an interruption. One that says ``runs_here`` (IBM's local testing mode: its jobs are
    threads of this process) runs its chunks one at a time, like a local evaluator."""

    def submit(self, program, values: list[np.ndarray], seed: ShotSeed | None):
        """Submit one job for a chunk's PUBs; returns the job."""
        ...

    def job_id(self, job) -> str:
        """The id to record for re-attaching."""
        ...

    def attach(self, job_id: str):
        """A job submitted earlier, by id."""
        ...

    def collect(self, job) -> list[tuple[np.ndarray, np.ndarray]]:
        """(evs, variances) per PUB of a finished job (waits for it)."""
        ...


def _run_chunk(evaluator: Evaluator, program, values: list[np.ndarray], seed: ShotSeed | None,
               retry: RetryPolicy = NO_RETRY):
    return retry.call(lambda: evaluator.run(program, values, seed))


def _collect(evaluator, program, values, seed, job, retry: RetryPolicy, resubmitted: Callable, failed: Callable):
    """A submitted job's results; on a transient failure, wait and submit the chunk again. A job the
    backend reports as failed (EngineError) is final: ``failed()`` is called (the journal forgets it)."""
    for attempt in range(retry.attempts):
        try:
            return evaluator.collect(job)
        except TransientError:
            if attempt + 1 == retry.attempts:
                raise  # the job may still finish: a rerun re-attaches to it
            time.sleep(retry.delay(attempt))
            job = retry.call(lambda: evaluator.submit(program, values, seed))
            resubmitted(job)
        except EngineError:
            failed()
            raise
    raise AssertionError("unreachable")  # pragma: no cover


def _run_jobs(evaluator, program, pieces, seeds, retry: RetryPolicy, journal: JobJournal | None, digest: str,
              todo: list[int], keep: Callable) -> dict[int, list]:
    """Submit every chunk in ``todo`` (or re-attach to its recorded job), record the ids, then collect, handing
    each finished chunk to ``keep``."""

    def record(i: int, job) -> None:
        if journal is not None:
            journal.record(digest, i, evaluator.job_id(job))

    def forget(i: int) -> None:
        if journal is not None:
            journal.forget(digest, i)

    jobs = {}
    for i in todo:
        job_id = journal.lookup(digest, i) if journal is not None else None
        if job_id is not None:
            jobs[i] = evaluator.attach(job_id)
            continue
        jobs[i] = retry.call(lambda i=i: evaluator.submit(program, pieces[i], seeds[i]))
        record(i, jobs[i])
    results = {}
    for i, job in jobs.items():
        results[i] = _collect(evaluator, program, pieces[i], seeds[i], job, retry, lambda new, i=i: record(i, new),
                              lambda i=i: forget(i))
        keep(i, results[i])
    return results


WORKER_LOSS_ROUNDS = 3
"""How many times chunks lost with a Dask worker (killed, out of memory, restarted by its nanny) are sent again."""


def _fan_out(client, evaluator, program, pieces, seeds, retry: RetryPolicy, todo: list[int],
             keep: Callable) -> dict[int, list]:
    """Every chunk in ``todo`` as one Dask task, the program scattered to the workers; each finished chunk goes to
    ``keep`` as it finishes. A worker that dies takes its tasks and its copy of the scattered program with it: the
    chunks that did not finish are sent again (program scattered anew) up to ``WORKER_LOSS_ROUNDS`` times; finished
    chunks are kept. Errors raised by a chunk itself stop at once."""
    from concurrent.futures import CancelledError

    from distributed import KilledWorker, as_completed
    from distributed.comm.core import CommClosedError

    results: dict[int, list] = {}
    todo = list(todo)
    for _ in range(WORKER_LOSS_ROUNDS):
        if not todo:
            return results
        [program_future] = client.scatter([program], broadcast=True, hash=False)
        futures = {client.submit(_run_chunk, evaluator, program_future, pieces[i], seeds[i], retry, pure=False): i
                   for i in todo}
        lost = []
        for future in as_completed(futures):
            i = futures[future]
            try:
                results[i] = future.result()
            except (CancelledError, KilledWorker, CommClosedError):
                lost.append(i)
                continue
            keep(i, results[i])
        if not lost:
            return results
        todo = sorted(lost)
    raise EngineError(f"{len(todo)} of {len(pieces)} chunks were lost with their Dask workers "
                      f"{WORKER_LOSS_ROUNDS} times (out of memory? see the worker logs); lower rows_per_pub or "
                      "run fewer workers per node")


def run_plan(plan: Plan, evaluator: Evaluator, program, *, client=None, seed: int | None = None,
             retry: RetryPolicy = DEFAULT_RETRY, journal: JobJournal | None = None,
             results: ChunkResults | None = None, tag: str = "") -> tuple[np.ndarray, np.ndarray]:
    """Evaluate every row of ``plan``; returns (evs, variances), each (n_rows,).

    With a dask.distributed ``client`` each chunk is one task (the program is scattered to the
    workers once). Without one, an evaluator that can ``submit`` and ``collect`` (remote jobs:
    IBM Runtime) gets every chunk's job submitted before any is awaited; others (and IBM's local
    testing mode, whose jobs would all run at once in this process) run here, in order.
    A chunk whose job fails with ``TransientError`` is run again under ``retry``. With a
    ``journal`` (remote jobs only) every job id is recorded as soon as it is submitted, and a
    rerun of the same plan (same rows, same ``tag``) re-attaches to the recorded jobs; a job the
    backend reports as failed (EngineError) is forgotten, so the rerun submits its chunk again.
    With ``results`` (any evaluator) every chunk's numbers are kept as it finishes, and a rerun of
    the same plan runs only the chunks that did not finish.
    """
    remote = isinstance(evaluator, RemoteEvaluator) and not getattr(evaluator, "runs_here", False)
    if journal is not None and (client is not None or not remote):
        raise InputError("a job journal needs an evaluator with remote jobs (submit/attach) and no Dask client")
    pieces = [[plan.values[a:b] for a, b in (plan.pubs[p] for p in chunk)] for chunk in plan.chunks]
    seeds = [None if seed is None else ShotSeed(seed, tuple(plan.pubs[p][0] for p in chunk)) for chunk in plan.chunks]
    digest = plan_digest(plan, tag) if journal is not None or results is not None else ""
    done: dict[int, list] = {}
    if results is not None:
        for i in range(len(pieces)):
            if (kept := results.load(digest, i)) is not None:
                done[i] = kept
    todo = [i for i in range(len(pieces)) if i not in done]

    def keep(i: int, chunk_results: list) -> None:
        if results is not None:
            results.save(digest, i, chunk_results)
        raise_if_interrupted()  # after the save: a finished chunk is kept

    if client is None and remote:
        done.update(_run_jobs(evaluator, program, pieces, seeds, retry, journal, digest, todo, keep))
    elif client is None:
        for i in todo:
            done[i] = _run_chunk(evaluator, program, pieces[i], seeds[i], retry)
            keep(i, done[i])
    else:
        done.update(_fan_out(client, evaluator, program, pieces, seeds, retry, todo, keep))
    evs = np.empty(plan.n_rows)
    var = np.empty(plan.n_rows)
    for c, chunk in enumerate(plan.chunks):
        for p, (e, v) in zip(chunk, done[c], strict=True):
            a, b = plan.pubs[p]
            evs[a:b] = np.asarray(e).reshape(-1)
            var[a:b] = np.asarray(v).reshape(-1)
    return evs, var
