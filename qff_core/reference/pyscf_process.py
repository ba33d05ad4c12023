"""PySCF in a child Python process, so that one calculation can be stopped at its ``timeout_s``.

A calculation inside this process cannot be interrupted, and ``multiprocessing`` cannot start
children from Dask's daemonic worker processes; ``subprocess`` can. The child
(``python -m qff_core.reference.pyscf_child``) says ``ready`` once PySCF is imported (~1-2 s,
not counted against any timeout), then answers one JSON line per request line. On a timeout the
parent kills it; the next calculation starts a fresh one. This module is the parent's side.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import qff_core
from qff_core import errors
from qff_core.errors import CalculationTimeoutError, EngineError, QffError
from qff_core.reference.base import CalculationRequest, CalculationResult

STARTUP_TIMEOUT_S = 300.0  # importing PySCF on a loaded node; not part of a calculation's timeout


class PySCFProcess:
    """Parent side: one child process, started on first use, killed on timeout or ``close()``."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen | None = None
        self._stderr = None
        self._buffer = b""

    @property
    def pid(self) -> int | None:
        """The child's process id while it runs."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def compute(self, request: CalculationRequest, timeout_s: float) -> CalculationResult:
        """Run ``request`` in the child; CalculationTimeoutError (child killed) after ``timeout_s`` seconds."""
        self._start()
        self._send({"request": request.to_json()})
        reply = self._receive(timeout_s)
        if reply is None:
            self.close()
            raise CalculationTimeoutError(
                f"PySCF {request.method}/{request.basis} did not finish within {timeout_s:g} s (timeout_s) and "
                "was stopped; raise timeout_s, or choose a cheaper method or basis")
        if "error" in reply:
            raise _error_from(reply["error"])
        return CalculationResult.from_json(reply["result"])

    def close(self) -> None:
        """Kill and reap the child (if any); safe to call twice."""
        proc, self._proc, self._buffer = self._proc, None, b""
        if proc is not None:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            for stream in (proc.stdin, proc.stdout):
                stream.close()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def __del__(self) -> None:  # backstop: an engine dropped without close() leaves no child behind
        with contextlib.suppress(Exception):
            self.close()

    def _start(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            return
        self.close()
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the child; close() closes it
        # The child imports the same qff_core as this process, wherever that was imported from.
        root = str(Path(qff_core.__file__).resolve().parents[1])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
        self._proc = subprocess.Popen([sys.executable, "-m", "qff_core.reference.pyscf_child"], env=env,
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr)
        if self._receive(STARTUP_TIMEOUT_S) != {"ready": True}:
            self.close()
            raise EngineError(f"the PySCF child process did not start within {STARTUP_TIMEOUT_S:g} s")

    def _send(self, message: dict) -> None:
        try:
            self._proc.stdin.write(json.dumps(message).encode() + b"\n")
            self._proc.stdin.flush()
        except BrokenPipeError:
            raise self._died() from None

    def _receive(self, timeout_s: float) -> dict | None:
        """The next JSON line from the child, or None after ``timeout_s`` seconds."""
        deadline = time.monotonic() + timeout_s
        fd = self._proc.stdout.fileno()
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                return None
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                raise self._died()
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return json.loads(line)

    def _died(self) -> EngineError:
        code = self._proc.wait()
        self._stderr.seek(0)
        tail = self._stderr.read().decode(errors="replace").strip()[-1500:]
        self.close()
        return EngineError(f"the PySCF child process exited with status {code}: {tail or '(no output)'}")


def _error_from(error: dict) -> QffError:
    """The exception the child raised, as the same qff class where it is one."""
    cls = getattr(errors, error["type"], None)
    if isinstance(cls, type) and issubclass(cls, QffError):
        return cls(error["message"])
    return EngineError(f"{error['type']}: {error['message']}")
