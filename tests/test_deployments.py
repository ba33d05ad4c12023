"""qff as Prefect deployments, for real: a `prefect server start` of its own, the `qff` process work pool,
`prefect deploy --all --prefect-file deploy/prefect.yaml`, a real worker, deployment runs that complete (and
one with bad parameters that fails with the validation message), and `qff serve` as the no-worker way."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PREFECT = [sys.executable, "-m", "prefect"]
TINY = {"name": "tiny", "dataset": {"molecule": "lih", "engine": "pyscf", "method": "hf", "basis": "sto-3g",
                                    "samples": 16, "chunk_size": 8, "temperature_k": 3000.0},
        "models": {"invariant": {"model": "invariant", "depth": 1}},
        "train": {"steps": 200, "batch_size": 8, "test_size": 4, "val_size": 2, "eval_every": 100,
                  "checkpoint_every": 100}, "workers": 1}

pytestmark = pytest.mark.slow


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path_factory):
    """A real Prefect server on a loopback port with its own PREFECT_HOME (one per test: a served deployment and
    a worker's of the same name do not share a server); yields the environment to reach it."""
    import httpx

    home = tmp_path_factory.mktemp("prefect-server")
    port = _port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env.update({"PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
                "PREFECT_RUNNER_POLL_FREQUENCY": "2", "PREFECT_WORKER_QUERY_SECONDS": "2"})  # pick runs up fast
    proc = subprocess.Popen([*PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 120
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.time() < deadline, "prefect server did not start"
            time.sleep(0.3)
        yield env
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def prefect(env: dict, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*PREFECT, *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)


def flow_run(env: dict, flow_run_id: str) -> dict:
    """State and logs of a flow run, read with the Python client."""
    code = f"""
import asyncio, json
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import LogFilter
async def main():
    async with get_client() as c:
        r = await c.read_flow_run("{flow_run_id}")
        logs = await c.read_logs(log_filter=LogFilter(flow_run_id={{"any_": [r.id]}}))
        print(json.dumps({{"state": r.state.type.value, "message": r.state.message or "",
                          "logs": [l.message for l in logs], "parameters": r.parameters}}))
asyncio.run(main())
"""
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def run_deployment(env: dict, name: str, params: dict, timeout: float = 600) -> dict:
    """`prefect deployment run NAME --params ... --watch`; the finished flow run."""
    done = prefect(env, "deployment", "run", name, "--params", json.dumps(params), "--watch", "--watch-timeout",
                   str(int(timeout)), timeout=timeout + 60)
    flow_run_id = next(line.split("UUID:")[1].strip() for line in done.stdout.splitlines() if "UUID:" in line)
    return flow_run(env, flow_run_id)


def test_deployments_run_on_a_real_worker(server, tmp_path):
    env = server
    assert prefect(env, "work-pool", "create", "qff", "--type", "process").returncode == 0
    deployed = prefect(env, "--no-prompt", "deploy", "--all", "--prefect-file", "deploy/prefect.yaml")
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    listed = prefect(env, "deployment", "ls").stdout
    for name in ("reference-data", "train-model", "evaluate-model", "pipeline", "retrain-nightly"):
        assert name in listed
    nightly = prefect(env, "deployment", "inspect", "retrain/retrain-nightly").stdout
    assert "0 3 * * *" in nightly and str(REPO) in nightly  # daily schedule; the worker runs in this checkout
    worker = subprocess.Popen([*PREFECT, "worker", "start", "--pool", "qff"], env=env, cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        out = tmp_path / "out"
        good = run_deployment(env, "pipeline/pipeline", {"config": TINY, "output_dir": str(out)})
        assert good["state"] == "COMPLETED", good
        summary = json.loads((out / "summary.json").read_text())
        assert summary["invariant"]["run"]["step"] == 200 and (out / "comparison.md").exists()
        assert (out / "data" / "tiny.zarr" / "zarr.json").exists()
        bad = run_deployment(env, "pipeline/pipeline", {"config": {**TINY, "train": {"steps": -5}},
                                                        "output_dir": str(tmp_path / "bad")})
        assert bad["state"] == "FAILED", bad  # failed on validation: not Crashed
        assert "greater than or equal to 1" in bad["message"]
        assert any("greater than or equal to 1" in line for line in bad["logs"])
        assert not (tmp_path / "bad").exists()
    finally:
        _stop_prefect_worker(worker)


def _stop_prefect_worker(worker: subprocess.Popen) -> None:
    """Prefect's own worker (not qff code) sometimes takes over a minute to exit on SIGTERM under load (seen in
    CI after every assertion had passed): its process group is killed after 60 s rather than failing the test."""
    worker.terminate()
    try:
        worker.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=30)


def test_qff_serve_runs_the_same_deployments_without_a_worker(server, tmp_path):
    env = {**server, "PYTHONPATH": str(REPO)}
    served = subprocess.Popen([sys.executable, "-m", "qff_core.cli", "serve", "--only", "retrain-nightly",
                               "evaluate-model"], env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.time() + 120
        while "retrain-nightly" not in prefect(env, "deployment", "ls").stdout:
            assert served.poll() is None and time.time() < deadline, served.stdout.read()
            time.sleep(1)
        # A model that does not exist: the run fails with the registry's message, served from this process.
        missing = run_deployment(env, "retrain/retrain-nightly",
                                 {"config": {"name": "absent", "catalog": str(tmp_path / "catalog")}}, timeout=300)
        assert missing["state"] == "FAILED" and any("no model 'absent'" in line for line in missing["logs"]), \
            json.dumps(missing, indent=1)[-3000:]
        # seen in review: the flow retried this permanent error after 60 s, each time with a full traceback
        assert not any("AwaitingRetry" in line or "Traceback" in line for line in missing["logs"]), \
            json.dumps(missing, indent=1)[-3000:]
    finally:
        served.terminate()
        served.wait(timeout=60)
