"""Prefect flows that use a trained model: molecular dynamics (``md``) and active learning from MD
(``active-learning``), the deployments of the same names.

MD is one task (a trajectory is seconds to minutes of exact simulation). Active learning runs its
rounds as tasks; each round records its stages in the job's ``state.json``, so a retried or re-run
flow continues where the last one stopped and never relabels a finished frame.
"""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.retries import TRANSIENT_DELAYS_S, TRANSIENT_RETRIES, transient_only
from qff_core.active import ActiveLearningConfig, active_learn
from qff_core.interrupts import interruptible
from qff_core.md import MDConfig, run_md


@task(name="md-trajectory", retries=TRANSIENT_RETRIES, retry_delay_seconds=TRANSIENT_DELAYS_S,
      retry_condition_fn=transient_only, persist_result=True, cache_policy=NO_CACHE)
@interruptible
def md_task(config: dict) -> dict:
    """One trajectory (``qff_core.md.run_md``): the summary, with the trajectory and plot paths."""
    return run_md(MDConfig.model_validate(config))


@flow(name="md", log_prints=True)
def md(config: MDConfig) -> dict:
    """Molecular dynamics with a trained run's model; writes the trajectory (extxyz) and a PNG of the traces."""
    summary = md_task(config.model_dump())
    get_run_logger().info(f"{summary['n_frames']} frames in {summary['trajectory']}, energy drift "
                          f"{summary['energy_drift_ev']:+.2e} eV, mean temperature "
                          f"{summary['mean_temperature_k']:.1f} K")
    return summary


@task(name="active-learning-round", retries=TRANSIENT_RETRIES, retry_delay_seconds=TRANSIENT_DELAYS_S,
      retry_condition_fn=transient_only, persist_result=True, cache_policy=NO_CACHE)
@interruptible
def active_learning_round(config: dict, rounds: int) -> dict:
    """Run (or resume) the job up to ``rounds`` rounds."""
    settings = ActiveLearningConfig.model_validate({**config, "rounds": rounds})
    return active_learn(settings, log=print)


@flow(name="active-learning", log_prints=True)
def active_learning(config: ActiveLearningConfig) -> dict:
    """Rounds of MD, committee selection, reference labelling and warm-start retraining (one task per round)."""
    summary: dict = {}
    for k in range(1, config.rounds + 1):
        summary = active_learning_round(config.model_dump(), k)
    return summary


__all__ = ["active_learning", "md"]
