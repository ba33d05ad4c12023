"""Dask clients from configuration: a local cluster by default, or a running scheduler."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


def workers_need_processes(engine: str) -> bool:
    """In-process engines (PySCF) need one process per worker; psi4 runs as a subprocess, so
    threads in one process parallelise it just as well and start in milliseconds, not seconds."""
    return engine.lower() != "psi4"


@contextmanager
def dask_client(*, address: str | None = None, n_workers: int = 2, processes: bool = True) -> Iterator:
    """A dask.distributed Client: connected to ``address``, else on a new LocalCluster.

    Local workers run one calculation at a time (``threads_per_worker=1``); ``processes``
    chooses worker processes (for engines that hold the GIL) or threads of this process.
    """
    from distributed import Client, LocalCluster

    if address:
        with Client(address) as client:
            yield client
        return
    with LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=processes,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        yield client
