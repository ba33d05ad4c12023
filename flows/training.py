"""Prefect flows: train one model (in segments between checkpoints), evaluate a trained run.

A segment of steps is one task: coarse (a task costs ~0.3 s, a step ~40 ms), and each
segment starts from the last checkpoint, so a retried or re-run flow continues where the
previous one stopped and a crash costs at most one segment. What is expensive lives on disk
(checkpoints, datasets), so task results are persisted but never served from a cache: the same
inputs mean "continue", not "done". Tasks retry transient failures only.
"""

from __future__ import annotations

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from flows.credentials import token_for
from flows.retries import TRANSIENT_DELAYS_S, TRANSIENT_RETRIES, transient_only
from qff_core.distributed import ClusterConfig
from qff_core.evaluation import evaluate_run
from qff_core.execution.config import ExecutorConfig
from qff_core.interrupts import interruptible, raise_if_interrupted
from qff_core.run import TrainConfig
from qff_core.training import format_progress, train


def _print_progress(p: dict) -> None:
    print(format_progress(p))


@task(name="train-segment", retries=TRANSIENT_RETRIES, retry_delay_seconds=TRANSIENT_DELAYS_S,
      retry_condition_fn=transient_only, persist_result=True, cache_policy=NO_CACHE)
@interruptible
def train_segment(run_dir: str, config: dict, resume: bool, steps: int, cluster: dict | None = None,
                  wait: bool = False) -> dict:
    """Up to ``steps`` training steps from the last checkpoint (or from the start).

    ``cluster``: ClusterConfig fields for the executor's Dask fan-out. An IBM API key named by
    the executor's ``token_secret`` is read here, inside the task, so it is never a parameter.
    """
    train_config = TrainConfig.model_validate(config)
    return train(run_dir, train_config, resume=resume, stop_after=steps, progress=_print_progress,
                 cluster=None if cluster is None else ClusterConfig.model_validate(cluster),
                 token=token_for(train_config.executor), wait=wait)


@flow(name="train-model", log_prints=True)
def train_model(config: TrainConfig, run_dir: str, resume: bool = False, segment_steps: int = 1000,
                cluster: dict | None = None, wait: bool = False) -> dict:
    """Train (or continue) one run to its step budget or early stop; returns the trainer's summary of the whole
    flow run (where it started, its wall time), not of the last segment."""
    if segment_steps < 1:
        raise ValueError(f"segment_steps must be at least 1; got {segment_steps}")
    fields = config.model_dump()
    summary = first = train_segment(run_dir, fields, resume, segment_steps, cluster, wait)
    wall_s = first["wall_time_s"]
    while summary["stop_reason"] is None:
        raise_if_interrupted()
        summary = train_segment(run_dir, fields, True, segment_steps, cluster, wait)
        wall_s += summary["wall_time_s"]
    return {**summary, "resumed_from": first["resumed_from"], "wall_time_s": wall_s}


@task(name="evaluate-run", retries=TRANSIENT_RETRIES, retry_delay_seconds=TRANSIENT_DELAYS_S,
      retry_condition_fn=transient_only, persist_result=True, cache_policy=NO_CACHE)
@interruptible
def evaluate_task(run_dir: str, seed: int = 0, plots: bool = True, krr: bool = False, executor: dict | None = None,
                  sets: tuple[str, ...] | None = None, max_test: int | None = None,
                  cluster: dict | None = None, max_qpu_seconds: float | None = None,
                  recalibrate: int | None = None, energies_only: bool = False) -> dict:
    """Test-set metrics, transformed sets, baselines, audit and plots of one run, on any executor
    (an IBM API key named by ``token_secret`` is read here, never passed as a parameter)."""
    settings = ExecutorConfig.model_validate(executor or {})
    return evaluate_run(run_dir, seed=seed, plots=plots, krr=krr, executor=settings, sets=sets, max_test=max_test,
                        cluster=None if cluster is None else ClusterConfig.model_validate(cluster),
                        token=token_for(settings), max_qpu_seconds=max_qpu_seconds, recalibrate=recalibrate,
                        energies_only=energies_only)


@flow(name="evaluate-model", log_prints=True)
def evaluate_model(run_dir: str, seed: int = 0, plots: bool = True, krr: bool = False,
                   executor: ExecutorConfig | None = None, sets: tuple[str, ...] | None = None,
                   max_test: int | None = None, cluster: dict | None = None,
                   max_qpu_seconds: float | None = None, recalibrate: int | None = None,
                   energies_only: bool = False) -> dict:
    """Evaluate one trained run (writes evaluation.json, or evaluation_<executor>.json, and plots into it)."""
    return evaluate_task(run_dir, seed, plots, krr, None if executor is None else executor.model_dump(), sets,
                         max_test, cluster, max_qpu_seconds, recalibrate, energies_only)
