"""``qff submit``: a whole pipeline (or a retrain) as one SLURM batch job, its Dask workers further jobs."""

from __future__ import annotations

import argparse
from pathlib import Path

from qff_core.cli.common import emit, load_config, validated
from qff_core.errors import InputError


def _retrain_command(retrain) -> list[str]:
    """``qff retrain`` with every setting the file gave (the job must run what the file says)."""
    command = ["retrain", "--model", retrain.name, "--json"]
    for name in sorted(retrain.model_fields_set - {"name"}):
        value, flag = getattr(retrain, name), "--" + name.replace("_", "-")
        if name == "wait":
            command += [] if value else ["--no-wait"]
        elif isinstance(value, bool):
            command += [flag] if value else []
        elif value is None:
            continue
        elif name in ("catalog", "runs_dir"):
            command += [flag, str(Path(value).resolve())]
        else:
            command += [flag, str(value)]
    return command


def _command(args: argparse.Namespace, cluster_file: Path) -> tuple[list[str], str, str]:
    """(qff command line, job name, description) of the config file: a ``retrain:`` section retrains, anything
    else is a pipeline. What ``qff retrain`` or ``qff pipeline`` would refuse at once is refused here, before a job
    waits in the queue to fail."""
    loaded = load_config(args.config)
    config_file = str(Path(args.config).resolve())
    if "retrain" in loaded:
        from qff_core.registry import load
        from qff_core.retrain import RetrainConfig

        others = sorted(set(loaded) - {"retrain"})
        if others:
            raise InputError(f"{args.config} has a retrain: section and {', '.join(others)}; a job runs one of them: "
                             "split the file")
        if args.out_dir:
            raise InputError("--out-dir is the pipeline's output folder; a retrain puts its candidate in retrain: "
                             "runs_dir (default: beside the production run)")
        retrain = validated(RetrainConfig, dict(loaded["retrain"] or {}), f"retrain settings in {args.config}")
        load(retrain.name, retrain.catalog)  # the model exists in that catalog
        return _retrain_command(retrain), f"qff-retrain-{retrain.name}", f"retrain {retrain.name}"
    from qff_core.pipeline import PipelineConfig, check_inputs, check_output_dir

    values = dict(loaded.get("pipeline", loaded))
    pipeline = validated(PipelineConfig, values, f"pipeline settings in {args.config}")
    out = Path(args.out_dir or pipeline.resolved_output_dir()).resolve()
    check_inputs(pipeline)
    check_output_dir(pipeline, out)
    command = ["pipeline", "--config", config_file, "--cluster", str(cluster_file), "--out-dir", str(out),
               "--no-prefect", "--json"]
    return command, f"qff-{pipeline.name}", f"pipeline {pipeline.name} -> {out}"


def cmd_submit(args: argparse.Namespace) -> int:
    """Render the batch script; print it (``--dry-run``) or submit it with sbatch and print the job id."""
    from qff_core.batch import render_job, submit_job
    from qff_core.distributed import load_cluster_config

    if args.cluster is None:
        raise InputError("say where the workers come from: --cluster FILE (kind: slurm, see deploy/dask/slurm.yaml)")
    cluster_file = Path(args.cluster).resolve()
    cluster = load_cluster_config(cluster_file)
    command, name, description = _command(args, cluster_file)
    job = render_job(command, cluster, name=args.job_name or name, workdir=Path.cwd(), description=description,
                     memory=args.memory, walltime=args.walltime)
    if args.dry_run:
        print(job.script, end="")
        return 0
    job_id = submit_job(job)
    emit(args, {"job_id": job_id, "script": str(job.path), "log": str(job.log_dir / f"{job.name}-{job_id}.out")},
         f"submitted {description} as SLURM job {job_id}; script {job.path}, log "
         f"{job.log_dir / f'{job.name}-{job_id}.out'}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """``qff submit``."""
    p = sub.add_parser("submit", help="submit a whole pipeline (or a retrain) as a SLURM batch job")
    p.add_argument("--config", type=Path, required=True,
                   help="the pipeline's YAML (as qff pipeline --config), or a file with a retrain: section")
    p.add_argument("--cluster", type=Path, default=None, help="SLURM cluster YAML for the Dask workers "
                                                              "(deploy/dask/slurm.yaml): partition, account, ...")
    p.add_argument("--out-dir", default=None, help="the pipeline's output folder (default: its output_dir)")
    p.add_argument("--job-name", default=None, help="the batch job's name (default qff-<name>)")
    p.add_argument("--memory", default="4GB", help="memory of the batch job itself (default 4GB)")
    p.add_argument("--walltime", default=None, help="of the batch job (default: the cluster file's)")
    p.add_argument("--dry-run", action="store_true", help="print the batch script instead of submitting it")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_submit)


__all__ = ["register"]
