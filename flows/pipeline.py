"""Prefect flow: the whole chain for one molecule (reference data, training, evaluation, comparison).

``qff_core.pipeline.run_pipeline`` with Prefect stages: reference data is the ``reference-data``
flow (a subflow); the models train in parallel, one Dask worker process per model, in one task
(plain functions in the workers: Prefect tasks in Dask process workers would each try to start
their own temporary API server); evaluations are tasks; the comparison table also becomes a
Prefect markdown artifact.
"""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from flows.reference_data import reference_data
from flows.training import evaluate_task
from qff_core.distributed import ClusterConfig
from qff_core.interrupts import interruptible
from qff_core.pipeline import PipelineConfig, Stages, run_pipeline, train_models
from qff_core.run import TrainConfig


@task(name="train-models")
@interruptible
def train_task(jobs: dict[str, tuple[str, dict]], cluster: dict) -> dict[str, dict]:
    """Train every model of the pipeline at once on the Dask cluster (``jobs``: name -> (run directory,
    TrainConfig fields))."""
    return train_models({k: (d, TrainConfig.model_validate(c)) for k, (d, c) in jobs.items()},
                        cluster=ClusterConfig.model_validate(cluster))


def _reference_data(settings, cluster: ClusterConfig, catalog_dir: str) -> dict:
    return reference_data(settings, cluster=cluster.model_dump(), catalog_dir=catalog_dir)


def _evaluate(run_dir: str) -> dict:
    return evaluate_task(run_dir, krr=True)


def _train(jobs: dict, cluster: ClusterConfig) -> dict[str, dict]:
    return train_task({k: (d, c.model_dump()) for k, (d, c) in jobs.items()}, cluster.model_dump())


@flow(name="pipeline", log_prints=True)
def pipeline(config: PipelineConfig, output_dir: str, force: bool = False) -> dict:
    """Reference data, training and evaluation of every configured model; returns the evaluations."""
    cfg = config
    result = run_pipeline(cfg, output_dir, log=get_run_logger().info, force=force,
                          stages=Stages(generate=_reference_data, train=_train, evaluate=_evaluate))
    create_markdown_artifact(f"```\n{result['table']}\n```", key=f"{cfg.name.replace('_', '-')}-comparison",
                             description="test errors of the trained models (kcal/mol, kcal/mol/A)")
    return result
