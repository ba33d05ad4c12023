"""Prefect flow: scheduled retraining of a registered model (``qff_core.retrain``), the ``retrain`` deployment.

A retrain that finds nothing new returns at once (``skipped``); one that trains resumes its
candidate after a crash (a rerun continues it), then scores, decides and records. The task retries
transient failures only: an unknown model or a refused setting fails at once, with one line.
"""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.retries import TRANSIENT_DELAYS_S, TRANSIENT_RETRIES, transient_only
from qff_core.errors import quiet_own_errors
from qff_core.retrain import RetrainConfig, retrain


@task(name="retrain-model", retries=TRANSIENT_RETRIES, retry_delay_seconds=TRANSIENT_DELAYS_S,
      retry_condition_fn=transient_only, cache_policy=NO_CACHE)
def retrain_task(config: RetrainConfig) -> dict:
    """One retrain (resumes a candidate a crash left)."""
    return retrain(config, log=get_run_logger().info)


@flow(name="retrain", log_prints=True)
def retrain_flow(config: RetrainConfig) -> dict:
    """Retrain ``config.name`` if its dataset grew; promote the candidate only if it is not worse."""
    quiet_own_errors()
    summary = retrain_task(config)
    get_run_logger().info(f"{summary['action']}: {summary['reason']}")
    return summary


__all__ = ["retrain_flow", "retrain_task"]
