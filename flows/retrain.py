"""Prefect flow: scheduled retraining of a registered model (``qff_core.retrain``), the ``retrain`` deployment.

A retrain that finds nothing new returns at once (``skipped``); one that trains runs the
candidate's training in segments like ``train-model`` (a crash costs at most one segment, a rerun
resumes), then scores, decides and records in one task.
"""

from __future__ import annotations

from prefect import flow, get_run_logger

from qff_core.retrain import RetrainConfig, retrain


@flow(name="retrain", log_prints=True, retries=1, retry_delay_seconds=60)
def retrain_flow(config: RetrainConfig) -> dict:
    """Retrain ``config.name`` if its dataset grew; promote the candidate only if it is not worse."""
    logger = get_run_logger()
    summary = retrain(config, log=logger.info)
    logger.info(f"{summary['action']}: {summary['reason']}")
    return summary


__all__ = ["retrain_flow"]
