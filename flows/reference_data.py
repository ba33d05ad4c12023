"""Prefect flow: reference data for one molecule, computed on Dask, stored in Zarr, catalogued.

Tasks are coarse on purpose (a Prefect task costs ~0.3 s): prepare (validate and sample),
compute (fan the pending samples out to Dask in chunks, record as they return), catalog.
The fine-grained work goes straight to a dask.distributed client.
"""

from __future__ import annotations

from prefect import flow, get_run_logger, task

from qff_core.datagen import GenerateSettings, compute_pending, prepare_dataset
from qff_core.distributed import dask_client, workers_need_processes
from qff_core.store.catalog import catalog_record, write_record
from qff_core.store.dataset import Dataset


@task(name="prepare-dataset")
def prepare(settings: dict) -> str:
    """Validate the request, sample geometries, create or top up the dataset; returns its path."""
    return str(prepare_dataset(GenerateSettings.model_validate(settings)).path)


@task(name="compute-reference-data")
def compute(settings: dict, path: str, workers: int, scheduler: str | None) -> dict:
    """Compute every pending or failed sample on Dask; each chunk is stored as it returns."""
    logger = get_run_logger()
    config = GenerateSettings.model_validate(settings)
    dataset = Dataset.open(path)

    def progress(done: int, total: int) -> None:
        logger.info("%d/%d samples computed", done, total)

    if workers == 0 and scheduler is None:
        return compute_pending(dataset, config, progress=progress)
    with dask_client(address=scheduler, n_workers=workers,
                     processes=workers_need_processes(config.engine)) as client:
        return compute_pending(dataset, config, client=client, progress=progress)


@task(name="catalog-dataset")
def catalog(path: str, catalog_dir: str) -> str:
    """Write the dataset's record into the data catalog."""
    return str(write_record(catalog_record(Dataset.open(path)), catalog_dir))


@flow(name="reference-data", log_prints=True)
def reference_data(settings: dict, workers: int = 2, scheduler: str | None = None,
                   catalog_dir: str = "data_catalog") -> dict:
    """Generate (or resume) a reference dataset; returns counts, path and catalog record."""
    path = prepare(settings)
    summary = compute(settings, path, workers, scheduler)
    summary["path"] = path
    summary["catalog_record"] = catalog(path, catalog_dir)
    return summary
