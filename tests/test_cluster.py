"""Dask clusters from configuration: YAML files, flag overrides, job scripts, scripted failures.

The real SLURM run is in ``test_slurm.py``.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from qff_core.distributed import (
    ClusterConfig,
    JobQueueConfig,
    dask_client,
    job_script,
    load_cluster_config,
)
from qff_core.errors import ClusterUnavailableError, InputError, WorkerTimeoutError

DEPLOY = Path(__file__).resolve().parents[1] / "deploy" / "dask"


def test_deploy_examples_load():
    local, slurm, pbs = (ClusterConfig.load(DEPLOY / f"{k}.yaml") for k in ("local", "slurm", "pbs"))
    assert (local.kind, local.local.n_workers, local.local.processes) == ("local", 2, None)
    assert (slurm.kind, slurm.jobs, slurm.jobqueue.queue) == ("slurm", 4, "compute")
    assert slurm.jobqueue.walltime == "02:00:00"
    assert (pbs.kind, pbs.jobqueue.queue) == ("pbs", "workq")
    assert slurm.expected_workers() == 16  # 4 jobs x 4 worker processes


def test_flags_override_the_file(tmp_path, monkeypatch):
    slurm = DEPLOY / "slurm.yaml"
    assert load_cluster_config(slurm, workers=2).jobs == 2  # --workers: jobs for slurm/pbs
    assert load_cluster_config(DEPLOY / "local.yaml", workers=3).local.n_workers == 3
    addressed = load_cluster_config(slurm, workers=5, scheduler="tcp://10.0.0.1:8786")
    assert (addressed.kind, addressed.address) == ("address", "tcp://10.0.0.1:8786")
    assert load_cluster_config(slurm, workers=0) is None  # compute in this process
    assert load_cluster_config(None) == ClusterConfig()  # 2 local workers
    monkeypatch.setenv("QFF_CLUSTER", str(slurm))
    assert load_cluster_config(None).kind == "slurm"
    assert load_cluster_config({"kind": "local", "local": {"n_workers": 1}}).local.n_workers == 1
    assert ClusterConfig().for_engine("pyscf").local.processes is True  # PySCF in the worker itself
    assert ClusterConfig().for_engine("pyscf", timeout_s=60).local.processes is False  # in a child process
    assert ClusterConfig().for_engine("psi4").local.processes is False  # psi4 executable: threads suffice


@pytest.mark.parametrize(("text", "match"), [
    ("kind: sge\n", "kind"),
    ("kind: address\n", "address: tcp://host:port"),
    ("kind: slurm\njobqueue: {cores: 0}\n", "cores"),
    ("kind: slurm\nqueue: debug\n", "queue"),  # a jobqueue setting at the wrong level
    ("- just a list\n", "mapping"),
])
def test_bad_cluster_files_say_what_to_fix(tmp_path, text, match):
    path = tmp_path / "cluster.yaml"
    path.write_text(text)
    with pytest.raises(InputError, match=match):
        ClusterConfig.load(path)
    with pytest.raises(InputError, match="cannot read"):
        ClusterConfig.load(tmp_path / "missing.yaml")


JOB = JobQueueConfig(queue="debug", account="proj7", cores=2, processes=2, memory="3GB", walltime="00:05:00",
                       job_extra_directives=["--exclusive"], job_script_prologue=["export OMP_NUM_THREADS=1"],
                       interface="lo", log_directory="logs/dask")


def test_slurm_job_script_has_the_configured_settings():
    script = job_script(ClusterConfig(kind="slurm", jobqueue=JOB))
    for line in ["#SBATCH -p debug", "#SBATCH -A proj7", "#SBATCH --cpus-per-task=2", "#SBATCH -t 00:05:00",
                 "#SBATCH --exclusive", "#SBATCH -e logs/dask/qff-dask-%J.err", "export OMP_NUM_THREADS=1"]:
        assert line in script.splitlines(), (line, script)
    assert "#SBATCH --mem=3G" in script  # dask-jobqueue rounds to its own units
    worker = script.splitlines()[-1]
    assert worker.startswith(f"{sys.executable} -m distributed.cli.dask_worker tcp://127.0.0.1:")  # this venv
    assert "--nworkers 2" in worker and "--nthreads 1" in worker and "--interface lo" in worker


def test_pbs_job_script_has_the_configured_settings():
    script = job_script(ClusterConfig(kind="pbs", jobqueue=JOB.model_copy(update={"job_extra_directives": ["-m n"]})))
    lines = script.splitlines()
    for line in ["#PBS -q debug", "#PBS -A proj7", "#PBS -l walltime=00:05:00", "#PBS -m n",
                 "export OMP_NUM_THREADS=1"]:
        assert line in lines, (line, script)
    assert any(x.startswith("#PBS -l select=1:ncpus=2:mem=") for x in lines)
    assert lines[-1].startswith(f"{sys.executable} -m distributed.cli.dask_worker")


def test_slurm_without_sbatch_fails_at_once(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    t0 = time.perf_counter()
    with pytest.raises(ClusterUnavailableError, match=r"(?s)sbatch.*not on PATH.*slurm-local.sh start"), \
            dask_client(ClusterConfig(kind="slurm")):
        pass
    assert time.perf_counter() - t0 < 5


def _fake_commands(tmp_path: Path, sbatch: str) -> None:
    """Scripted job-system failures: an ``sbatch`` (and a no-op ``scancel``) on PATH."""
    for name, body in {"sbatch": sbatch, "scancel": "exit 0"}.items():
        path = tmp_path / name
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(0o755)


def test_rejected_job_submission_fails_fast_with_the_schedulers_message(tmp_path, monkeypatch):
    _fake_commands(tmp_path, 'echo "sbatch: error: invalid partition specified: nope" >&2; exit 1')
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    config = ClusterConfig(kind="slurm", jobqueue={"queue": "nope", "interface": "lo"}, worker_timeout_s=60)
    t0 = time.perf_counter()
    with pytest.raises(ClusterUnavailableError, match="invalid partition specified: nope"), dask_client(config):
        pass
    assert time.perf_counter() - t0 < 30  # not the 60 s worker timeout


def test_jobs_that_never_start_time_out(tmp_path, monkeypatch):
    _fake_commands(tmp_path, 'echo "Submitted batch job 4242"')  # accepted, but no worker ever runs
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    config = ClusterConfig(kind="slurm", jobs=2, jobqueue={"interface": "lo"}, worker_timeout_s=2)
    t0 = time.perf_counter()
    with pytest.raises(WorkerTimeoutError, match=r"(?s)0 of 2 Dask workers connected within 2 s.*worker_timeout_s"), \
            dask_client(config):
        pass
    assert time.perf_counter() - t0 < 20


def test_address_kind_connects_and_fails_clearly(tmp_path):
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, processes=False, dashboard_address=None,
                      scheduler_kwargs={"dashboard_address": ":0"}) as cluster, \
            dask_client(ClusterConfig(kind="address", address=cluster.scheduler_address)) as client:
        assert client.submit(sum, [1, 2]).result(timeout=30) == 3
    with pytest.raises(ClusterUnavailableError, match="no Dask scheduler answers"), \
            dask_client(ClusterConfig(kind="address", address="tcp://127.0.0.1:9", worker_timeout_s=2)):
        pass


def test_generate_with_a_cluster_file_shows_progress(tmp_path, capsys):
    import json

    from qff_core.cli import main

    cluster = tmp_path / "cluster.yaml"
    cluster.write_text("kind: local\nlocal: {n_workers: 2, processes: false}\n")
    code = main(["dataset", "generate", "--engine", "pyscf", "--method", "hf", "--basis", "sto-3g",
                 "--samples", "4", "--chunk-size", "2", "--no-prefect", "--cluster", str(cluster),
                 "--out", str(tmp_path / "d.zarr"), "--catalog", str(tmp_path / "catalog"), "--json"])
    out, err = capsys.readouterr()
    assert code == 0 and json.loads(out)["n_done"] == 4
    lines = [x for x in err.splitlines() if x.startswith("[qff dataset generate]")]
    assert len(lines) == 2, err  # one per chunk
    assert "2/4 samples (50%), 0 failed" in lines[0] and "ETA" in lines[0]
    assert "4/4 samples (100%), 0 failed" in lines[1] and lines[1].endswith("done")


def test_generate_on_slurm_without_sbatch_stops_before_any_work(tmp_path, monkeypatch, capsys):
    from qff_core.cli import main

    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch
    out = tmp_path / "d.zarr"
    code = main(["dataset", "generate", "--engine", "pyscf", "--method", "hf", "--basis", "sto-3g",
                 "--cluster", str(DEPLOY / "slurm.yaml"), "--out", str(out), "--catalog", str(tmp_path / "c")])
    assert code == 2 and "`sbatch`, which is not on PATH" in capsys.readouterr().err
    assert not out.exists()  # no sampling, no dataset, no Prefect server started


def test_submit_renders_a_batch_job_of_the_whole_pipeline(tmp_path, capsys, lih):
    """The script qff submit would hand to sbatch, as text (dask-jobqueue tests its job scripts the same way)."""
    import yaml

    from qff_core.cli import main
    from qff_core.run import TrainConfig
    from qff_core.training import train

    cluster = tmp_path / "slurm.yaml"
    cluster.write_text(yaml.safe_dump({"kind": "slurm", "jobs": 2, "jobqueue": {
        "queue": "compute", "account": "proj123", "cores": 2, "processes": 2, "memory": "4GB",
        "walltime": "03:00:00", "job_extra_directives": ["--exclusive"],
        "job_script_prologue": ["module load python", "export OMP_NUM_THREADS=1"], "python": "/opt/venv/bin/python",
        "log_directory": "logs/jobs"}}))
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({"pipeline": {"name": "tiny", "workers": 1}}))
    assert main(["submit", "--config", str(config), "--cluster", str(cluster), "--out-dir", str(tmp_path / "out"),
                 "--dry-run"]) == 0
    script = capsys.readouterr().out
    lines = script.splitlines()
    assert lines[0] == "#!/bin/bash" and "{{" not in script
    for directive in ("#SBATCH --job-name=qff-tiny", "#SBATCH --time=03:00:00", "#SBATCH --partition=compute",
                      "#SBATCH --account=proj123", "#SBATCH --exclusive", "#SBATCH --mem=4GB"):
        assert directive in lines, directive
    assert f"#SBATCH --output={Path.cwd() / 'logs' / 'jobs'}/qff-tiny-%j.out" in lines
    assert "module load python" in lines and "export OMP_NUM_THREADS=1" in lines
    command = lines[-1]
    assert command.startswith("exec /opt/venv/bin/python -m qff_core.cli pipeline --config ")
    assert f"--cluster {cluster.resolve()}" in command and f"--out-dir {(tmp_path / 'out').resolve()}" in command
    assert command.endswith("--no-prefect --json")
    # An output path is quoted wherever it appears: the echo of the description too
    weird = tmp_path / "x_$(touch PWNED)"
    assert main(["submit", "--config", str(config), "--cluster", str(cluster), "--out-dir", str(weird),
                 "--dry-run"]) == 0
    echo = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("echo "))
    assert echo.endswith(f"'pipeline tiny -> {weird.resolve()}'")
    # A retrain section submits `qff retrain` with every setting of the file, for a model that is registered.
    run, catalog = tmp_path / "lih-run", tmp_path / "catalog"
    train(run, TrainConfig(dataset=lih, model={"depth": 1}, steps=2, batch_size=2, test_size=2, val_size=2,
                           eval_every=1, checkpoint_every=1))
    assert main(["models", "register", str(run), "--name", "lih", "--promote", "--catalog", str(catalog)]) == 0
    capsys.readouterr()
    config.write_text(yaml.safe_dump({"retrain": {"name": "lih", "catalog": str(catalog), "steps": 5,
                                                  "tolerance": 0.5, "from_scratch": True, "wait": False}}))
    assert main(["submit", "--config", str(config), "--cluster", str(cluster), "--dry-run"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].endswith(
        f"-m qff_core.cli retrain --model lih --json --catalog {catalog.resolve()} --from-scratch --steps 5 "
        "--tolerance 0.5 --no-wait")
    config.write_text(yaml.safe_dump({"retrain": {"name": "h2o", "catalog": str(catalog)}}))
    assert main(["submit", "--config", str(config), "--cluster", str(cluster), "--dry-run"]) == 2
    assert "no model 'h2o'" in capsys.readouterr().err
    # Names and resources a batch system would choke on (or a shell would run) are refused.
    config.write_text(yaml.safe_dump({"pipeline": {"name": "tiny", "workers": 1}}))
    for flags, message in ((["--job-name", "a\nrm -rf ~"], "job name"), (["--walltime=-5"], "not a duration"),
                           (["--memory", ""], "not an amount")):
        assert main(["submit", "--config", str(config), "--cluster", str(cluster), "--dry-run", *flags]) == 2
        assert message in capsys.readouterr().err
    # A cluster that is not SLURM is refused.
    local = tmp_path / "local.yaml"
    local.write_text("kind: local\n")
    assert main(["submit", "--config", str(config), "--cluster", str(local), "--dry-run"]) == 2
    assert "kind: slurm" in capsys.readouterr().err


def test_a_busy_local_worker_is_not_restarted_after_five_minutes():
    """A long Aer job can hold a worker's GIL past distributed's default 5-minute heartbeat limit on a loaded
    machine: local clusters allow an hour."""
    from qff_core.distributed import dask_client

    with dask_client(n_workers=1, processes=False) as client:
        assert client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.worker_ttl) == 3600


def test_two_local_clusters_at_once_start_quietly():
    """Two qff commands on one machine: the second local cluster's scheduler found distributed's default HTTP port
    8787 taken and warned about it ("Perhaps you already have a cluster running?")."""
    import socket
    import warnings

    from qff_core.distributed import dask_client

    with socket.socket() as held, dask_client(n_workers=1, processes=False) as first:
        held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            held.bind(("0.0.0.0", 8787))  # the port the warning is about (unless another cluster holds it already)
            held.listen()
        except OSError:
            pass
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)
            with dask_client(n_workers=1, processes=False) as second:
                assert second.submit(sum, [1, 2]).result(timeout=30) == 3
        assert first.submit(sum, [3, 4]).result(timeout=30) == 7


def test_a_jobqueue_cluster_leaves_ctrl_c_to_the_command():
    """Importing dask_jobqueue sets SIGINT to sys.exit() for the whole process (exit 0, nothing saved); qff's
    import keeps the handler the command had. In a fresh process, so the import really runs."""
    import subprocess

    probe = (
        "import signal\n"
        "from qff_core.distributed import import_jobqueue\n"
        "ours = signal.getsignal(signal.SIGINT)\n"
        "import_jobqueue()\n"
        "kept = signal.getsignal(signal.SIGINT) is ours\n"
        "import sys; del sys.modules['dask_jobqueue.runner']\n"
        "import dask_jobqueue.runner\n"  # the premise: a plain import replaces it
        "print(kept, signal.getsignal(signal.SIGINT) is ours)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["True", "False"], out.stderr


@pytest.mark.parametrize(("field", "value", "ok"), [
    ("walltime", "02:00:00", True), ("walltime", "1-12:00:00", True), ("walltime", "30", True),
    ("walltime", 7200, True), ("walltime", "-01:00:00", False), ("walltime", -3600, False),
    ("walltime", "banana", False), ("walltime", "00:00:00", False),
    ("memory", "16GB", True), ("memory", "500MB", True), ("memory", "4G", True), ("memory", "-16GB", False),
    ("memory", "", False), ("memory", "lots", False),
])
def test_job_resources_are_checked_when_the_cluster_file_is_read(field, value, ok):
    """A walltime or memory sbatch would refuse is refused here, before a job is rendered or submitted."""
    from pydantic import ValidationError

    if ok:
        JobQueueConfig(**{field: value})
    else:
        with pytest.raises(ValidationError, match=field):
            JobQueueConfig(**{field: value})
