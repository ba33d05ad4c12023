"""``qff dataset generate`` and ``qff dataset info``: reference data in Zarr."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from qff_core.cli.common import (
    add_cluster_args,
    add_config_flags,
    cluster_config_from_args,
    config_section,
    emit,
    given_values,
    logger,
    validated,
)
from qff_core.datagen import GenerateConfig, preflight, settings_not_drawn
from qff_core.store.catalog import catalog_dir

_SKIP = ("keywords", "scan_range_a")  # set in the --config file


def cmd_generate(args: argparse.Namespace) -> int:
    """Sample geometries and compute reference energies and forces into a Zarr dataset."""
    values = {**config_section(args.config, "dataset"), **given_values(args, GenerateConfig)}
    settings = validated(GenerateConfig, values, "dataset settings")
    log = logger(args)
    cluster = cluster_config_from_args(args)  # a bad cluster file fails before any work
    preflight(settings)  # and a bad molecule, path, engine or geometry file before a workflow starts
    note = settings_not_drawn(settings)
    if note:  # on stderr, with --json too
        print(f"qff: note: {note}", file=sys.stderr)
    t0 = time.perf_counter()
    if args.no_prefect:
        from qff_core.datagen import generate
        from qff_core.progress import ProgressReporter

        summary = generate(settings, cluster=cluster, catalog_dir=catalog_dir(args.catalog), log=log,
                           progress=ProgressReporter("qff dataset generate"))
    else:
        from qff_core.cli.prefect_api import prefect_api, run_flow

        with prefect_api():
            from flows.reference_data import reference_data

            summary = run_flow(reference_data, settings.model_dump(), workers=0 if cluster is None else None,
                               cluster=None if cluster is None else cluster.model_dump(),
                               catalog_dir=str(catalog_dir(args.catalog)))
    summary["seconds"] = time.perf_counter() - t0
    busy = f", {summary['busy_elsewhere']} being computed by another process" if summary.get("busy_elsewhere") else ""
    plural = "" if summary["computed"] == 1 else "s"
    log(f"computed {summary['computed']} sample{plural} in {summary['seconds']:.1f} s "
        f"({summary['failed']} failed{busy}); "
        f"the dataset holds {summary['n_done']} done, {summary['n_failed']} failed, {summary['n_pending']} pending "
        f"of {summary['n_samples']}")
    if args.json:
        print(json.dumps(summary, indent=2))
    return 0 if summary["n_failed"] == 0 else 3


def cmd_info(args: argparse.Namespace) -> int:
    """Counts, units, provenance and failures of a dataset."""
    from qff_core.store.dataset import Dataset

    info = Dataset.open(args.path).info()
    text = "\n".join([
        f"{info['path']}: {info['molecule']['name']} ({' '.join(info['molecule']['symbols'])}), "
        f"schema {info['schema_version']}",
        f"samples {info['n_samples']}: done {info['n_done']}, failed {info['n_failed']}, pending {info['n_pending']}",
        f"level of theory: {info['level_of_theory']}; engines: {', '.join(info['engine_versions']) or '-'}",
        f"units: {info['units']}",
        *[f"  samples {seg['start']}-{seg['stop'] - 1}: " + ", ".join(f"{k} {v}" for k, v in seg.items()
                                                          if k not in ("start", "stop", "minimum", "sha256"))
          for seg in info["segments"]],
        *[f"  failed sample {i}: {msg}" for i, msg in info["failures"].items()],
        *([f"DAMAGED: {len(info['damaged'])} finished samples hold NaN or infinite numbers (samples "
           f"{', '.join(map(str, info['damaged'][:10]))}{' ...' if len(info['damaged']) > 10 else ''}): a chunk was "
           "lost or corrupted; restore the dataset or regenerate it"] if info["damaged"] else []),
    ])
    emit(args, info, text)
    return 1 if info["damaged"] else 0


def cmd_export(args: argparse.Namespace) -> int:
    """Finished samples as extended XYZ (energy and forces per frame, eV and eV/Angstrom)."""
    from qff_core.interchange import export_extxyz
    from qff_core.store.dataset import Dataset

    summary = export_extxyz(Dataset.open(args.path), args.out, energy_key=args.energy_key, forces_key=args.forces_key)
    skipped = f" ({summary['n_skipped']} unfinished samples left out)" if summary["n_skipped"] else ""
    emit(args, summary, f"wrote {summary['n_frames']} frames to {summary['path']}{skipped}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    """Frames with energies and forces (extxyz or ASE database) as a qff dataset, catalogued."""
    from qff_core.datagen import catalog_dataset
    from qff_core.interchange import import_frames
    from qff_core.molecules import load_molecule
    from qff_core.store.dataset import Dataset
    from qff_core.store.paths import check_writable_dir

    catalog = catalog_dir(args.catalog)
    check_writable_dir(catalog, "--catalog")
    summary = import_frames(args.file, load_molecule(args.molecule), args.out, level_of_theory=args.level_of_theory,
                            energy_key=args.energy_key, forces_key=args.forces_key,
                            allow_stretched=args.allow_stretched)
    summary["catalog_record"] = str(catalog_dataset(Dataset.open(args.out), catalog))
    text = (f"{args.file} was imported into {args.out} before; nothing added" if summary["already_imported"] else
            f"imported {summary['imported']} frames into {summary['path']} ({summary['n_done']} samples); "
            f"record {summary['catalog_record']}")
    emit(args, summary, text)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """``qff dataset generate|info|export|import``."""
    dataset = sub.add_parser("dataset", help="reference datasets").add_subparsers(dest="action", required=True)
    gen = dataset.add_parser("generate", help="sample geometries and compute reference data (resumable)")
    gen.add_argument("--config", type=Path, help="YAML file with dataset settings; flags override it")
    add_config_flags(gen, GenerateConfig, skip=_SKIP)
    gen.add_argument("--temperature", dest="temperature_k", type=float, default=None, help=argparse.SUPPRESS)
    add_cluster_args(gen)
    gen.add_argument("--catalog", type=Path, default=None,
                     help="catalog directory for the record (default $QFF_CATALOG, else data_catalog)")
    gen.add_argument("--no-prefect", action="store_true", help="run the plain functions instead of the Prefect flow")
    gen.add_argument("--json", action="store_true")
    gen.set_defaults(func=cmd_generate)
    info = dataset.add_parser("info", help="what a dataset holds")
    info.add_argument("path", type=Path)
    info.add_argument("--json", action="store_true")
    info.set_defaults(func=cmd_info)
    keys = argparse.ArgumentParser(add_help=False)
    keys.add_argument("--energy-key", default="energy", help="info key of the energy (eV); MACE: REF_energy")
    keys.add_argument("--forces-key", default="forces", help="per-atom array of the forces (eV/A); MACE: REF_forces")
    keys.add_argument("--json", action="store_true")
    exp = dataset.add_parser("export", parents=[keys], help="finished samples as extended XYZ (MACE, NequIP, ASE)")
    exp.add_argument("path", type=Path, help="the dataset")
    exp.add_argument("--format", choices=["extxyz"], default="extxyz")
    exp.add_argument("--out", type=Path, required=True, help="the .extxyz file to write")
    exp.set_defaults(func=cmd_export)
    imp = dataset.add_parser("import", parents=[keys], help="frames with energies and forces (extxyz, ASE db) as a "
                                                           "dataset")
    imp.add_argument("file", type=Path, help=".xyz/.extxyz file or ASE database (.db)")
    imp.add_argument("--molecule", required=True, help="the molecule: built-in name or .xyz/.yaml spec")
    imp.add_argument("--out", type=Path, required=True, help="dataset to create (or append to, same level of theory)")
    imp.add_argument("--level-of-theory", default=None, help="what the energies are, e.g. 'B3LYP/6-31G* (ORCA 5)'")
    imp.add_argument("--catalog", type=Path, default=None,
                     help="catalog directory for the record (default $QFF_CATALOG, else data_catalog)")
    imp.add_argument("--allow-stretched", action="store_true",
                     help="skip the check refusing positions that look like Bohr (every atom far from its neighbours)")
    imp.set_defaults(func=cmd_import)
