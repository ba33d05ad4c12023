"""A whole qff job (a pipeline, or a retrain) as one SLURM batch job, its Dask workers further SLURM jobs.

``render_job`` fills ``deploy/slurm/qff-job.sbatch`` from a cluster file (``ClusterConfig`` of kind
``slurm``: partition, account, extra directives, prologue, Python, log folder) and the command to run;
``submit_job`` writes the script beside its log and submits it with ``sbatch``, returning the job id.
The job runs the plain functions (``--no-prefect``): a batch job has no Prefect server to report to.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from qff_core.distributed import ClusterConfig
from qff_core.errors import ClusterUnavailableError, InputError

TEMPLATE = Path(__file__).resolve().parents[1] / "deploy" / "slurm" / "qff-job.sbatch"
JOB_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


@dataclass(frozen=True)
class BatchJob:
    """A rendered job script and where it goes."""

    name: str
    script: str
    path: Path
    log_dir: Path


def render_job(command: list[str], cluster: ClusterConfig, *, name: str, workdir: Path, description: str,
               memory: str = "4GB", walltime: str | None = None, template: Path = TEMPLATE) -> BatchJob:
    """The batch script running ``qff COMMAND...`` in ``workdir`` on the partition of ``cluster``."""
    if cluster.kind != "slurm":
        raise InputError(f"qff submit writes SLURM batch jobs; the cluster file is of kind {cluster.kind!r}: give a "
                         "kind: slurm file (deploy/dask/slurm.yaml)")
    from qff_core.distributed import check_memory, check_walltime

    if not JOB_NAME.match(name):
        raise InputError(f"job name {name!r}: use letters, digits, _ . - (it names the log file and the script)")
    try:
        memory, walltime = check_memory(memory), check_walltime(walltime) if walltime else None
    except ValueError as exc:
        raise InputError(str(exc)) from None
    jq = cluster.jobqueue
    workdir = Path(workdir).resolve()
    log_dir = (workdir / (jq.log_directory or "logs/slurm")).resolve()
    if any(c.isspace() or c in "%\"'$`\\" for c in str(log_dir)):
        raise InputError(f"the log folder {log_dir} holds a space or one of % \" ' $ ` \\, which #SBATCH --output "
                         "cannot take; run qff submit from another folder or set jobqueue: log_directory")
    directives = [*(["#SBATCH --partition=" + jq.queue] if jq.queue else []),
                  *(["#SBATCH --account=" + jq.account] if jq.account else []),
                  *(f"#SBATCH {d}" for d in jq.job_extra_directives)]
    values = {"job_name": name, "log_dir": str(log_dir), "walltime": walltime or jq.walltime, "memory": memory,
              "directives": "\n".join(directives), "workdir": shlex.quote(str(workdir)),
              "prologue": "\n".join(jq.job_script_prologue), "python": shlex.quote(jq.python or sys.executable),
              "command": " ".join(shlex.quote(c) for c in command), "description": shlex.quote(description)}
    script = template.read_text()
    for key, value in values.items():
        script = script.replace("{{" + key + "}}", value)
    return BatchJob(name=name, script=script, path=log_dir / f"{name}.sbatch", log_dir=log_dir)


def submit_job(job: BatchJob) -> str:
    """Write the script and submit it with ``sbatch``; the job id."""
    job.log_dir.mkdir(parents=True, exist_ok=True)
    job.path.write_text(job.script)
    try:
        done = subprocess.run(["sbatch", "--parsable", str(job.path)], capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise ClusterUnavailableError("sbatch is not installed here: run qff submit on the cluster's login node "
                                      "(or sudo scripts/slurm-local.sh start for a local test cluster)") from None
    if done.returncode != 0:
        raise ClusterUnavailableError(f"sbatch refused the job ({done.stderr.strip() or done.stdout.strip()}); the "
                                      f"script is {job.path}")
    return done.stdout.strip().split(";")[0]


__all__ = ["TEMPLATE", "BatchJob", "render_job", "submit_job"]
