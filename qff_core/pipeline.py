"""The end-to-end pipeline as plain functions: reference data, training of several models, evaluation.

One validated configuration (YAML, pydantic) names the molecule's dataset settings, the models
to compare and the training budget; every file goes under one output folder. ``run_pipeline``
is the chain; its three stages are plain functions by default, and the Prefect flow
(``flows/pipeline.py``) runs the same chain with Prefect-wrapped stages (a subflow, tasks).
``qff demo`` is this pipeline on the embedded H2O defaults.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from qff_core.datagen import GenerateConfig
from qff_core.distributed import ClusterConfig, LocalClusterConfig
from qff_core.errors import InputError, Interrupted
from qff_core.models import ModelConfig
from qff_core.run import TrainConfig
from qff_core.store.paths import check_writable_dir

# Single-threaded XLA per process: training runs one model per core instead of fighting over cores.
SINGLE_THREAD_XLA = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


def single_thread_xla() -> None:
    """Add the single-thread flags to ``XLA_FLAGS`` (before JAX starts its backend), keeping the user's other
    flags and any threading choice of their own."""
    flags = os.environ.get("XLA_FLAGS", "")
    missing = [f for f in SINGLE_THREAD_XLA.split() if f.lstrip("-").split("=")[0] not in flags]
    os.environ["XLA_FLAGS"] = " ".join([flags, *missing]).strip()


class PipelineConfig(BaseModel):
    """What ``qff pipeline`` / ``qff demo`` run."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field("h2o", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
                      description="names the output folder and the dataset: letters, digits, _ . - (no paths)")
    dataset: GenerateConfig = Field(default_factory=lambda: GenerateConfig(
        molecule="h2o", engine="psi4", method="b3lyp", basis="6-31g*", samples=120, temperature_k=500.0,
        seed=2024, chunk_size=10))
    models: dict[str, ModelConfig] = Field(default_factory=lambda: {
        "invariant": ModelConfig(model="invariant", depth=6, rep=2),
        "generic": ModelConfig(model="generic", depth=1, rep=2),  # 34 parameters, as many as the invariant
    }, min_length=1, description="the models to train and compare, by name (at least one)")
    train: dict = Field(default_factory=lambda: {
        "steps": 1500, "batch_size": 64, "learning_rate": 1e-2, "final_learning_rate": 1e-3,
        "force_weight": 10.0, "test_size": 30, "val_size": 15, "eval_every": 250, "checkpoint_every": 250,
        "seed": 0,
    }, description="TrainConfig fields shared by every model (not dataset or model)")
    workers: int = Field(2, ge=1, description="local Dask workers for reference calculations and parallel training")
    cluster: ClusterConfig | None = Field(None, description="where the Dask workers come from instead (a "
                                                            "deploy/dask/*.yaml: SLURM or PBS jobs, a scheduler)")
    output_dir: str | None = Field(None, description="default: runs/<name>-<timestamp>")

    @field_validator("train")
    @classmethod
    def _train_settings_are_valid(cls, train: dict) -> dict:
        """The ``train:`` settings on their own, so that their problems are reported with the other fields'."""
        from pydantic import ValidationError

        try:
            TrainConfig.model_validate({**train, "dataset": "-", "model": {}})
        except ValidationError as exc:
            raise ValueError("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()
                                       if e["loc"] and e["loc"][0] not in ("dataset", "model"))
                             or str(exc)) from None
        return train

    @model_validator(mode="after")
    def _every_training_config_is_valid(self) -> PipelineConfig:
        """The ``train:`` section with each model, validated now: before any reference data is computed."""
        owned = sorted({"dataset", "model"} & set(self.train))
        if owned:
            raise ValueError(f"train: {', '.join(owned)} are set by the pipeline (its dataset; the models: section); "
                             "leave them out of train:")
        for name in self.models:
            self.train_config(name, self.dataset.out)
        return self

    def resolved_cluster(self, n_tasks: int | None = None, processes: bool | None = None) -> ClusterConfig:
        """The Dask cluster: ``cluster``, else ``workers`` local workers (at most ``n_tasks``; ``processes`` None:
        the reference engine chooses)."""
        if self.cluster is not None:
            return self.cluster
        n = self.workers if n_tasks is None else max(1, min(self.workers, n_tasks))
        return ClusterConfig(local=LocalClusterConfig(n_workers=n, processes=processes))

    def resolved_output_dir(self) -> Path:
        """The output folder (named now when not given)."""
        if self.output_dir:
            return Path(self.output_dir)
        return Path("runs") / f"{self.name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"

    def dataset_settings(self, output_dir: Path, engine: str | None = None) -> GenerateConfig:
        """Dataset settings with the store placed in the output folder (and the engine, if overridden)."""
        values = self.dataset.model_dump()
        values["out"] = str(output_dir / "data" / f"{self.name}.zarr")
        if engine:
            values["engine"] = engine
        return GenerateConfig.model_validate(values)

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


def check_inputs(config: PipelineConfig) -> None:
    """What can be checked for nothing before an output folder is claimed: the molecule and the engine's name."""
    from qff_core.molecules import load_molecule
    from qff_core.reference import get_engine

    load_molecule(config.dataset.molecule)
    get_engine(config.dataset.engine, require=False)


def _train_worker(run_dir: str, config: dict, cache_dir: str | None, label: str) -> dict:
    """Train one model in a Dask worker process (plain functions only: no Prefect in workers)."""
    single_thread_xla()  # one core per model (before JAX starts here)
    if cache_dir:
        from qff_core.execution.exact import enable_compilation_cache

        enable_compilation_cache(cache_dir)
    from qff_core.training import format_progress, train

    def progress(p: dict) -> None:
        print(f"  [{label}] {format_progress(p)}", file=sys.stderr, flush=True)

    return train(run_dir, TrainConfig.model_validate(config), resume=True, progress=progress)


def train_models(jobs: dict[str, tuple[str, TrainConfig]], *, cluster: ClusterConfig) -> dict[str, dict]:
    """Train several models at once, one Dask worker per model, on ``cluster`` (resumes existing runs)."""
    from qff_core.distributed import dask_client

    single_thread_xla()
    import jax

    cache = jax.config.jax_compilation_cache_dir  # the workers share this process's compilation cache
    with dask_client(cluster) as client:
        futures = {name: client.submit(_train_worker, run_dir, cfg.model_dump(), cache, name, pure=False)
                   for name, (run_dir, cfg) in jobs.items()}
        return {name: f.result() for name, f in futures.items()}


@dataclass(frozen=True)
class Stages:
    """How ``run_pipeline`` runs its three stages: plain functions by default, Prefect tasks in the flow.

    ``generate(settings, cluster, catalog_dir) -> summary with "path"``; ``train(jobs, cluster) -> summaries``
    with jobs ``{name: (run_dir, TrainConfig)}``; ``evaluate(run_dir) -> evaluation summary`` (with the KRR
    baseline: every comparison the pipeline writes shows the classical model beside the quantum ones).
    """

    generate: Callable[[GenerateConfig, ClusterConfig, str], dict]
    train: Callable[[dict[str, tuple[str, TrainConfig]], ClusterConfig], dict]
    evaluate: Callable[[str], dict]


def _generate_here(settings: GenerateConfig, cluster: ClusterConfig, catalog_dir: str) -> dict:
    from qff_core.datagen import generate
    from qff_core.progress import ProgressReporter

    return generate(settings, cluster=cluster, catalog_dir=catalog_dir, progress=ProgressReporter("reference data"))


def _evaluate_here(run_dir: str) -> dict:
    from qff_core.evaluation import evaluate_run

    return evaluate_run(run_dir, krr=True)


PLAIN = Stages(generate=_generate_here, train=lambda jobs, cluster: train_models(jobs, cluster=cluster),
               evaluate=_evaluate_here)
"""The stages as plain functions (``qff pipeline --no-prefect``)."""


def _kept(config: PipelineConfig, out: Path) -> str:
    """What an interrupted pipeline keeps in ``out``: the samples computed, each run's last checkpoint."""
    from qff_core.store.checkpoint import latest_checkpoint, read_checkpoint
    from qff_core.store.dataset import Dataset

    parts = []
    data = Path(config.dataset_settings(out).out)
    if (data / "zarr.json").exists():
        info = Dataset.open(data).info()
        parts.append(f"{info['n_done']} of {info['n_samples']} reference samples")
    for name in config.models:
        latest = latest_checkpoint(out / "runs" / name / "checkpoints")
        if latest is not None:
            parts.append(f"{name} at step {read_checkpoint(latest).step}")
    return (f"kept {', '.join(parts) or 'nothing yet'} in {out}; run it again with --out-dir {out} to continue "
            "where it stopped")


MARKER = "pipeline.json"
"""The configuration of the pipeline an output folder holds (written first): a rerun of it resumes."""


def _wanted(config: PipelineConfig) -> dict:
    return config.model_dump(mode="json", exclude={"output_dir", "cluster", "workers"})  # where it runs may change


def check_output_dir(config: PipelineConfig, output_dir: str | Path, *, force: bool = False) -> bool:
    """Whether ``output_dir`` can take ``config`` (nothing written); returns whether it holds a run of it to resume.

    An empty or new folder, or one holding a run of the same configuration, is fine; any other
    non-empty folder is refused (its files would be overwritten) unless ``force``.
    """
    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out-dir {out} is a file; give a folder")
    marker = out / MARKER
    wanted = _wanted(config)
    if out.is_dir() and any(out.iterdir()):
        previous = json.loads(marker.read_text()) if marker.exists() else None
        if previous == wanted:  # resuming when it holds more than the marker and Prefect's database
            return any(p.name not in (MARKER, "prefect") for p in out.iterdir())
        if not force:
            what = ("holds a run of another pipeline configuration (" + ", ".join(
                sorted(k for k in wanted if previous.get(k) != wanted[k])) + " differ)") if previous is not None \
                else "is not empty and holds no qff pipeline run"
            raise InputError(f"--out-dir {out} {what}; choose a new or empty --out-dir, or pass --force to write into "
                             "it (comparison.md and summary.json there are replaced)")
    return False


def start_output_dir(config: PipelineConfig, output_dir: str | Path, *, force: bool = False) -> bool:
    """Claim ``output_dir`` for ``config`` before any work (``check_output_dir``, then its marker written);
    returns whether it resumes a previous run of it."""
    out = Path(output_dir)
    check_writable_dir(out, "--out-dir")
    if check_output_dir(config, out, force=force):
        return True
    marker, wanted = out / MARKER, _wanted(config)
    out.mkdir(parents=True, exist_ok=True)
    tmp = marker.with_name(f"{MARKER}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(wanted, indent=2))
    os.replace(tmp, marker)
    return False


def run_pipeline(config: PipelineConfig, output_dir: str | Path, *, stages: Stages = PLAIN,
                 log: Callable[[str], None] | None = None, force: bool = False) -> dict:
    """Reference data, training and evaluation of every configured model, under ``output_dir``.

    Resumes a previous run of the same configuration in ``output_dir``; refuses a folder holding
    anything else unless ``force`` (``start_output_dir``). Writes ``comparison.md`` (the
    comparison table) and ``summary.json``; returns the evaluations by model name plus
    ``output_dir``, ``engine``, ``dataset`` and ``table``.
    """
    from qff_core.evaluation import summary_table

    log = log or (lambda line: print(line, flush=True))
    out = Path(output_dir)
    check_inputs(config)  # a bad molecule or engine name claims no output folder
    engine = choose_engine(config.dataset.engine, log=log)
    if start_output_dir(config, out, force=force):
        log(f"{out} holds an earlier run of this pipeline: resuming it")
    try:
        settings = config.dataset_settings(out, engine)
        log(f"reference data: {settings.samples} {config.name} geometries, {engine} {settings.method}/"
            f"{settings.basis}, {settings.sampler} at {settings.temperature_k:g} K")
        data = stages.generate(settings, config.resolved_cluster(), str(out / "data_catalog"))
        jobs = {name: (str(out / "runs" / name), config.train_config(name, data["path"])) for name in config.models}
        cluster = config.resolved_cluster(len(jobs), processes=True)
        log(f"training {', '.join(jobs)} in parallel on Dask ({cluster.kind} cluster)")
        stages.train(jobs, cluster)
        evaluations = {name: stages.evaluate(run_dir) for name, (run_dir, _) in jobs.items()}
    except KeyboardInterrupt:
        raise Interrupted(_kept(config, out)) from None
    table = summary_table(evaluations)
    (out / "comparison.md").write_text(f"# {config.name}: model comparison\n\n```\n{table}\n```\n")
    (out / "summary.json").write_text(json.dumps({**evaluations, "output_dir": str(out)}, indent=2))
    return {**evaluations, "output_dir": str(out), "engine": engine, "dataset": data["path"], "table": table}


__all__ = ["MARKER", "PLAIN", "PipelineConfig", "Stages", "check_inputs", "check_output_dir", "choose_engine",
           "run_pipeline", "start_output_dir", "train_models"]

