"""Prefect flow: reference data for one molecule, computed on Dask, stored in Zarr, catalogued.

The same three steps as ``qff_core.datagen.generate``, each a task (coarse on purpose: a Prefect
task costs ~0.3 s): prepare (validate and sample), compute (fan the pending samples out to Dask
in chunks, record as they return), catalog. The fine-grained work goes straight to a
dask.distributed client, on the cluster the ``cluster`` parameter describes (a
``deploy/dask/*.yaml`` path or its contents).
"""

from __future__ import annotations

from prefect import flow, get_run_logger, task

from flows.retries import TRANSIENT_DELAYS_S, TRANSIENT_RETRIES, transient_only
from qff_core.datagen import GenerateConfig, catalog_dataset, compute_dataset, prepare_dataset
from qff_core.distributed import ClusterConfig, check_submit_command, load_cluster_config
from qff_core.interrupts import interruptible
from qff_core.progress import ProgressReporter
from qff_core.store.dataset import Dataset
from qff_core.store.paths import check_writable_dir


@task(name="prepare-dataset")
@interruptible
def prepare(settings: dict) -> str:
    """Validate the request, sample geometries, create or top up the dataset; returns its path."""
    return str(prepare_dataset(GenerateConfig.model_validate(settings)).path)


@task(name="compute-reference-data", retries=TRANSIENT_RETRIES, retry_delay_seconds=TRANSIENT_DELAYS_S,
      retry_condition_fn=transient_only, persist_result=True)
@interruptible
def compute(settings: dict, path: str, cluster: dict | None) -> dict:
    """Compute every pending or failed sample on Dask (in this process when ``cluster`` is None);
    each chunk is stored as it returns, and a progress line is logged per chunk."""
    # Progress goes to the run's log: Prefect prints it on stderr and keeps it with the run.
    progress = ProgressReporter("reference-data", echo=False, also=get_run_logger().info)
    return compute_dataset(Dataset.open(path), GenerateConfig.model_validate(settings),
                           None if cluster is None else ClusterConfig.model_validate(cluster), progress=progress)


@task(name="catalog-dataset")
@interruptible
def catalog(path: str, catalog_dir: str) -> str:
    """Write the dataset's record into the data catalog."""
    return str(catalog_dataset(Dataset.open(path), catalog_dir))


@flow(name="reference-data", log_prints=True)
def reference_data(settings: GenerateConfig, workers: int | None = None, scheduler: str | None = None,
                   catalog_dir: str = "data_catalog", cluster: str | dict | None = None) -> dict:
    """Generate (or resume) a reference dataset; returns counts, path and catalog record.

    ``cluster``: a cluster YAML path or its settings (default ``$QFF_CLUSTER``, else 2 local
    workers); ``workers`` (0: no Dask) and ``scheduler`` override it as the CLI flags do.
    """
    check_writable_dir(catalog_dir, "--catalog")  # an unwritable catalog fails first,
    config = load_cluster_config(cluster, workers=workers, scheduler=scheduler)  # and bad cluster files,
    if config is not None:
        check_submit_command(config)  # and a missing sbatch/qsub
    fields = settings.model_dump()
    path = prepare(fields)
    summary = compute(fields, path, None if config is None else config.model_dump())
    summary["path"] = path
    summary["catalog_record"] = catalog(path, catalog_dir)
    return summary
