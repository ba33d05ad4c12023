"""Benchmark of reference-data generation: the bare engine against the Prefect + Dask flow.

H2O B3LYP/6-31G* (psi4 by default), 40 geometries: (1) the engine called serially in one
process, (2) the ``reference-data`` flow with 1 Dask worker, (3) with 2 workers, in one run.
The flows run against a Prefect server started before timing (its start-up, ~15 s, is a
one-off per session, not a per-calculation cost), each on a fresh dataset holding the same
geometries. Prints JSON; goals: flow overhead per calculation <= 10% of the bare engine's
time, 2 workers >= 1.8x one.

Run: ``.venv/bin/python benchmarks/bench_reference.py [--engine pyscf] [--n 40]``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

from qff_core.datagen import GenerateConfig
from qff_core.molecules import builtin_molecule
from qff_core.reference import get_engine
from qff_core.store.dataset import Dataset


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", default="psi4")
    parser.add_argument("--method", default="b3lyp")
    parser.add_argument("--basis", default="6-31g*")
    parser.add_argument("--n", type=int, default=40)
    parser.add_argument("--chunk-size", type=int, default=4)
    args = parser.parse_args()

    mol = builtin_molecule("h2o")
    rng = np.random.default_rng(0)
    geometries = mol.positions_a + 0.02 * rng.standard_normal((args.n, *mol.positions_a.shape))
    work = Path(tempfile.mkdtemp(prefix="qff-bench-ref-"))
    settings = GenerateConfig(molecule="h2o", engine=args.engine, method=args.method, basis=args.basis,
                                samples=args.n, chunk_size=args.chunk_size, out=str(work / "unused.zarr"))
    engine = get_engine(args.engine)

    t0 = time.perf_counter()
    for x in geometries:
        engine.compute(settings.request(mol, x))
    bare = time.perf_counter() - t0

    from prefect.testing.utilities import prefect_test_harness

    from flows.reference_data import reference_data

    results = {"engine": engine.found()[1], "level": f"{args.method}/{args.basis}", "n_calculations": args.n,
               "chunk_size": args.chunk_size, "cpus": os.cpu_count(),
               "bare_serial_s": bare, "bare_per_calculation_s": bare / args.n}
    with prefect_test_harness(server_startup_timeout=120):
        for workers in (1, 2):
            out = work / f"flow-{workers}.zarr"
            Dataset.create(out, mol, settings.level()).add_geometries(geometries)
            run = settings.model_copy(update={"out": str(out)}).model_dump()
            t0 = time.perf_counter()
            summary = reference_data(run, workers=workers, catalog_dir=str(work / "catalog"))
            elapsed = time.perf_counter() - t0
            assert summary["n_done"] == args.n, summary
            results[f"flow_{workers}_worker_s"] = elapsed
    one, two = results["flow_1_worker_s"], results["flow_2_worker_s"]
    results["flow_overhead_per_calculation_fraction"] = (one - bare) / bare
    results["speedup_2_workers_vs_1"] = one / two
    results["goals"] = {
        "overhead_le_10_percent": results["flow_overhead_per_calculation_fraction"] <= 0.10,
        "two_workers_ge_1_8x": results["speedup_2_workers_vs_1"] >= 1.8,
    }
    json.dump(results, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
