"""``qff demo`` and ``qff pipeline``: reference data, training and evaluation of several models, one folder."""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from qff_core.cli.common import config_section, logger, validated
from qff_core.pipeline import PipelineConfig


def _run(config: PipelineConfig, args: argparse.Namespace) -> int:
    """Run the pipeline (the Prefect flow, or with ``--no-prefect`` the plain functions) and print the comparison."""
    from qff_core.pipeline import check_inputs, run_pipeline, start_output_dir

    out = Path(args.out_dir) if args.out_dir else config.resolved_output_dir()
    check_inputs(config)
    start_output_dir(config, out, force=args.force)  # before anything is written there (Prefect's database too)
    log = logger(args)
    log(f"qff {args.command}: {config.name}, models {', '.join(config.models)}; everything goes under {out}",
        flush=True)
    t0 = time.perf_counter()
    if args.no_prefect:
        result = run_pipeline(config, out, log=log, force=args.force)
    else:
        from qff_core.cli.prefect_api import prefect_api, run_flow

        if not os.environ.get("PREFECT_API_URL") and not os.environ.get("PREFECT_HOME"):
            os.environ["PREFECT_HOME"] = str((out / "prefect").resolve())  # the temporary server's database too
        with prefect_api():
            from flows.pipeline import pipeline

            result = run_flow(pipeline, config.model_dump(), str(out), force=args.force)
    evaluations = {k: result[k] for k in config.models}
    log(f"\n{config.name}: {result['engine']} reference data, {time.perf_counter() - t0:.0f} s in total")
    log(result["table"])
    for name, summary in evaluations.items():
        for kind, path in summary.get("plots", {}).items():
            log(f"{name} {kind}: {path}")
    log(f"comparison: {out / 'comparison.md'}; summary: {out / 'summary.json'}")
    if args.json:
        print(json.dumps({**evaluations, "output_dir": str(out)}, indent=2))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """The main job: H2O reference data (psi4), invariant and generic models trained, evaluated, compared."""
    return _run(PipelineConfig(), args)


def cmd_pipeline(args: argparse.Namespace) -> int:
    """The whole chain from one YAML file (sections: name, dataset, models, train, workers, output_dir)."""
    values = config_section(args.config, "pipeline")
    if args.cluster is not None:
        from qff_core.yamlfile import load_mapping

        values["cluster"] = load_mapping(args.cluster, "cluster file")
    config = validated(PipelineConfig, values, f"pipeline settings in {args.config}")
    return _run(config, args)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--force", action="store_true", help="write into a non-empty --out-dir that holds no run of "
                                                         "this configuration (its comparison and summary are replaced)")
    p.add_argument("--no-prefect", action="store_true", help="run the plain functions instead of the Prefect flow")
    p.add_argument("--json", action="store_true")


def register(sub: argparse._SubParsersAction) -> None:
    """``qff demo`` and ``qff pipeline``."""
    demo = sub.add_parser("demo", help="the main job: the H2O pipeline on embedded defaults")
    demo.add_argument("--out-dir", help="output folder (default runs/h2o-<timestamp>)")
    _common(demo)
    demo.set_defaults(func=cmd_demo)
    pipe = sub.add_parser("pipeline", help="reference data, training and evaluation from one YAML file")
    pipe.add_argument("--config", type=Path, required=True)
    pipe.add_argument("--out-dir", help="output folder (default: the file's output_dir, else runs/<name>-<time>)")
    pipe.add_argument("--cluster", type=Path, default=None, help="Dask cluster YAML for the reference calculations "
                                                               "and the training (deploy/dask/*.yaml)")
    _common(pipe)
    pipe.set_defaults(func=cmd_pipeline)
