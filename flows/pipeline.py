"""Prefect flow: the whole chain for one molecule (reference data, training, evaluation, comparison).

Reference data is the ``reference-data`` flow (a subflow); the models train in parallel, one
Dask worker process per model (plain functions in the workers: Prefect tasks in Dask process
workers would each try to start their own temporary API server); evaluations are tasks; the
comparison table becomes a Prefect markdown artifact and ``comparison.md`` in the output folder.
"""

from __future__ import annotations

import json
from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact

from flows.reference_data import reference_data
from flows.training import evaluate_task
from qff_core.evaluation import summary_table
from qff_core.pipeline import PipelineConfig, choose_engine, train_models


@task(name="train-models")
def train_task(jobs: dict[str, tuple[str, dict]], workers: int) -> dict[str, dict]:
    """Train every model of the pipeline at once on a local Dask cluster."""
    from qff_core.training import TrainConfig

    print(f"training {', '.join(jobs)} in parallel on {min(workers, len(jobs))} Dask worker process(es)")
    return train_models({k: (d, TrainConfig.model_validate(c)) for k, (d, c) in jobs.items()}, workers=workers)


@flow(name="pipeline", log_prints=True)
def pipeline(config: dict, output_dir: str) -> dict:
    """Reference data, training and evaluation of every configured model; returns the evaluations."""
    cfg = PipelineConfig.model_validate(config)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    engine = choose_engine(cfg.dataset.engine)
    settings = cfg.dataset_settings(out, engine)
    print(f"reference data: {settings.samples} {cfg.name} geometries, {engine} {settings.method}/{settings.basis}, "
          f"{settings.sampler} at {settings.temperature_k:g} K")
    data = reference_data(settings.model_dump(), workers=cfg.workers, catalog_dir=str(out / "data_catalog"))
    jobs = {name: (str(out / "runs" / name), cfg.train_config(name, data["path"]).model_dump())
            for name in cfg.models}
    train_task(jobs, cfg.workers)
    evaluations = {name: evaluate_task(run_dir) for name, (run_dir, _) in jobs.items()}
    table = summary_table(evaluations)
    (out / "comparison.md").write_text(f"# {cfg.name}: model comparison\n\n```\n{table}\n```\n")
    (out / "summary.json").write_text(json.dumps({**evaluations, "output_dir": str(out)}, indent=2))
    create_markdown_artifact(f"```\n{table}\n```", key=f"{cfg.name.replace('_', '-')}-comparison",
                             description="test errors of the trained models (kcal/mol, kcal/mol/A)")
    return {**evaluations, "output_dir": str(out), "engine": engine, "dataset": data["path"]}
