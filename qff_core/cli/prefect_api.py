"""The Prefect API a command's flows report to: the user's server, or a temporary one that qff owns.

Without ``PREFECT_API_URL`` Prefect would start its own temporary server on the first flow
call; that one lives in the command's process group, so Ctrl-C stops it before the flow has
recorded what happened (minutes of retried, failing API calls), and a killed command leaves it
running. qff starts the same server itself instead: in a session of its own (Ctrl-C reaches
the command only; the server is stopped when the command has finished cleaning up), and with a
parent-death signal, so that SIGKILL of the command takes the server down too.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import ParamSpec, TypeVar

from qff_core.errors import QffError, ResourceError, quiet_own_errors
from qff_core.interrupts import deferred_interrupts, interrupted

P = ParamSpec("P")
R = TypeVar("R")

PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(OSError):  # not Linux: the server outlives a killed parent, as Prefect's own does
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prefect_defaults() -> None:
    """Environment for Prefect, unless the user set it: no telemetry (it locks SQLite), no Dask INFO chatter."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")


@contextmanager
def prefect_api(startup_timeout_s: float = 180.0) -> Iterator[str]:
    """A Prefect API for the block: the configured one (``PREFECT_API_URL``), else a temporary server owned by
    this process (its database in ``PREFECT_HOME``), stopped when the block ends; yields the API URL."""
    prefect_defaults()
    import prefect
    from prefect.settings import PREFECT_API_URL, get_current_settings, temporary_settings

    configured = PREFECT_API_URL.value()
    if configured:
        yield configured
        return
    port = _free_port()
    env = {**os.environ, **get_current_settings().to_environment_variables(exclude_unset=True),
           "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}
    cmd = [sys.executable, "-m", "uvicorn", "--app-dir", str(prefect.__module_path__.parent), "--factory",
           "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(port), "--log-level",
           "error", "--lifespan", "on"]
    log = tempfile.TemporaryFile()  # noqa: SIM115 - the server's stderr (a pipe could fill and block it)
    server = subprocess.Popen(cmd, env=env, start_new_session=True, preexec_fn=_die_with_parent,
                              stdout=subprocess.DEVNULL, stderr=log)
    url = f"http://127.0.0.1:{port}/api"
    try:
        _wait_healthy(server, url, startup_timeout_s, log)
        with temporary_settings(updates={PREFECT_API_URL: url}):
            try:
                yield url
            finally:
                _drain()  # logs and events still queued reach the server before it stops
    finally:
        _stop(server)
        log.close()


def run_flow(flow: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """Call a Prefect flow from a command, Ctrl-C-safe: while Prefect's engine runs an interrupt is only recorded,
    and it is raised inside the flow's tasks (``interruptible``) or by the flow's own checks. Ctrl-C landing while
    Prefect creates a task run would otherwise make its crash handler fail ("Task run is not set", seen in CI); an
    error Prefect still makes of an interrupt is the interrupt again."""
    quiet_own_errors()
    try:
        with deferred_interrupts():
            return flow(*args, **kwargs)
    except (KeyboardInterrupt, QffError):
        raise
    except Exception:
        if interrupted():
            raise KeyboardInterrupt from None
        raise


def _wait_healthy(server: subprocess.Popen, url: str, timeout_s: float, log) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            log.seek(0)
            tail = log.read().decode(errors="replace").strip()[-800:]
            raise ResourceError(f"the temporary Prefect server exited with status {server.returncode}: {tail}; "
                                "run without Prefect (--no-prefect) or set PREFECT_API_URL to a running server")
        try:
            if httpx.get(f"{url}/health", timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise ResourceError(f"the temporary Prefect server did not answer within {timeout_s:g} s; run without Prefect "
                        "(--no-prefect) or set PREFECT_API_URL to a running server")


def _drain(timeout_s: float = 10.0) -> None:
    """Send what Prefect's background log and event workers still hold (otherwise they retry against a stopped
    server at exit, for minutes)."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        with contextlib.suppress(Exception):
            worker.drain_all(timeout=timeout_s)


def _stop(server: subprocess.Popen) -> None:
    if server.poll() is None:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


__all__ = ["prefect_api", "prefect_defaults", "run_flow"]
