"""The end-to-end pipeline as plain functions: reference data, training of several models, evaluation.

One validated configuration (YAML, pydantic) names the molecule's dataset settings, the models
to compare and the training budget; every file goes under one output folder. The Prefect flow
(``flows/pipeline.py``) runs the same stages as tasks; ``qff demo`` is this pipeline on the
embedded H2O defaults.
"""

from __future__ import annotations

import os
import sys
from datetime import datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from qff_core.datagen import GenerateSettings
from qff_core.models import ModelConfig
from qff_core.training import TrainConfig

# Single-threaded XLA per process: training runs one model per core instead of fighting over cores.
SINGLE_THREAD_XLA = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


class PipelineConfig(BaseModel):
    """What ``qff pipeline`` / ``qff demo`` run."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "h2o"
    dataset: GenerateSettings = Field(default_factory=lambda: GenerateSettings(
        molecule="h2o", engine="psi4", method="b3lyp", basis="6-31g*", samples=120, temperature_k=500.0,
        seed=2024, chunk_size=10))
    models: dict[str, ModelConfig] = Field(default_factory=lambda: {
        "invariant": ModelConfig(model="invariant", depth=6, rep=2),
        "generic": ModelConfig(model="generic", depth=1, rep=2),  # 34 parameters, as many as the invariant
    })
    train: dict = Field(default_factory=lambda: {
        "steps": 1500, "batch_size": 64, "learning_rate": 1e-2, "final_learning_rate": 1e-3,
        "force_weight": 10.0, "test_size": 30, "val_size": 15, "eval_every": 250, "checkpoint_every": 250,
        "seed": 0,
    }, description="TrainConfig fields shared by every model (not dataset or model)")
    workers: int = Field(2, ge=1, description="Dask workers for reference calculations and parallel training")
    output_dir: str | None = Field(None, description="default: runs/<name>-<timestamp>")

    def resolved_output_dir(self) -> Path:
        """The output folder (named now when not given)."""
        if self.output_dir:
            return Path(self.output_dir)
        return Path("runs") / f"{self.name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"

    def dataset_settings(self, output_dir: Path, engine: str | None = None) -> GenerateSettings:
        """Dataset settings with the store placed in the output folder (and the engine, if overridden)."""
        values = self.dataset.model_dump()
        values["out"] = str(output_dir / "data" / f"{self.name}.zarr")
        if engine:
            values["engine"] = engine
        return GenerateSettings.model_validate(values)

    def train_config(self, model: str, dataset_path: str) -> TrainConfig:
        """The TrainConfig of one model."""
        return TrainConfig.model_validate({**self.train, "dataset": dataset_path,
                                           "model": self.models[model].model_dump()})


def choose_engine(requested: str, log=print) -> str:
    """``requested`` if it can run here; psi4 falls back to PySCF (saying so), others fail clearly."""
    from qff_core.reference import get_engine

    engine = get_engine(requested, require=False)
    ok, why = engine.found()
    if ok:
        return requested
    if requested == "psi4":
        log(f"psi4 is not available ({why}); using PySCF instead (same method and basis, agreement checked "
            "in the tests). Install psi4 (apt install psi4, or conda install -c conda-forge psi4) for the "
            "production engine.")
        get_engine("pyscf")
        return "pyscf"
    get_engine(requested)  # raises ResourceError with the reason
    return requested


def _train_worker(run_dir: str, config: dict, cache_dir: str | None, label: str) -> dict:
    """Train one model in a Dask worker process (plain functions only: no Prefect in workers)."""
    if cache_dir:
        from qff_core.execution.exact import enable_compilation_cache

        enable_compilation_cache(cache_dir)
    from qff_core.training import TrainConfig, format_progress, train

    def progress(p: dict) -> None:
        print(f"  [{label}] {format_progress(p)}", file=sys.stderr, flush=True)

    return train(run_dir, TrainConfig.model_validate(config), resume=True, progress=progress)


def train_models(jobs: dict[str, tuple[str, TrainConfig]], *, workers: int) -> dict[str, dict]:
    """Train several models at once, one Dask worker process per model (resumes existing runs)."""
    from distributed import Client, LocalCluster

    os.environ.setdefault("XLA_FLAGS", SINGLE_THREAD_XLA)
    import jax

    cache = jax.config.jax_compilation_cache_dir  # the workers share this process's compilation cache
    n = max(1, min(workers, len(jobs)))
    with LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        futures = {name: client.submit(_train_worker, run_dir, cfg.model_dump(), cache, name, pure=False)
                   for name, (run_dir, cfg) in jobs.items()}
        return {name: f.result() for name, f in futures.items()}


__all__ = ["PipelineConfig", "choose_engine", "train_models"]
