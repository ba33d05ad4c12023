"""Dask clients from configuration: a local cluster by default, or a running scheduler."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def dask_client(*, address: str | None = None, n_workers: int = 2) -> Iterator:
    """A dask.distributed Client: connected to ``address``, else on a new LocalCluster.

    Local workers are single-threaded processes: engines such as PySCF hold the GIL and
    psi4 runs as a subprocess, so one calculation per process is the efficient grain.
    """
    from distributed import Client, LocalCluster

    if address:
        with Client(address) as client:
            yield client
        return
    with LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        yield client
