"""Exceptions named by what the caller can do about them (after QCEngine).

``InputError`` and its subclasses: fix the input, never retried. ``ResourceError``: a program,
package or memory is missing; try elsewhere. ``ConvergenceError``: change settings.
``TransientError``: worth a retry.
"""

from __future__ import annotations

import logging


class QffError(Exception):
    """Base class of every error qff raises on purpose."""


class InputError(QffError, ValueError):
    """The input is wrong; the message says what to fix. Never retried."""


class UnknownElementError(InputError):
    """An element symbol that is not in the periodic table."""


class GeometryError(InputError):
    """Coordinates that cannot describe a molecule: bad shape, NaN/inf, atoms too close."""


class GeometryFileError(InputError):
    """A geometry file (XYZ, YAML) that cannot be parsed."""


class SymmetryError(InputError):
    """A symmetry request that does not fit the molecule (non-unique centre, bad permutation)."""


class ModelBuildError(InputError):
    """Model hyperparameters that cannot be realised for this molecule."""


class DatasetDamagedError(InputError):
    """A dataset's stored arrays contradict its status (finished samples without finite numbers: lost or
    corrupted chunks); restore or regenerate it."""


class CheckpointDamagedError(InputError):
    """A checkpoint whose files are incomplete or altered (a chunk missing, truncated, or not matching the checksum
    written with it); use another checkpoint of the run."""


class ResourceError(QffError):
    """A program, package or resource is missing here; install it or run elsewhere."""


class ConvergenceError(QffError):
    """A calculation did not converge; change its settings."""


class TransientError(QffError):
    """A failure that may go away on retry (network, queue, preempted job, timeout)."""


class EngineError(QffError):
    """An engine failed for a reason qff cannot classify; the message carries the engine's own."""


class CalculationTimeoutError(TransientError, TimeoutError):
    """One calculation ran past its ``timeout_s`` and was stopped; that sample alone failed."""


class ClusterUnavailableError(ResourceError):
    """The configured Dask cluster cannot be started here (no ``sbatch``/``qsub``, no scheduler)."""


class WorkerTimeoutError(TransientError):
    """The Dask cluster started, but too few workers connected within ``worker_timeout_s``."""


class ExecutionError(QffError):
    """Circuits could not be run for good (a job failed permanently, or retries ran out); the message says
    what was kept and how to continue."""


class Interrupted(KeyboardInterrupt):
    """Stopped by the user (Ctrl-C, SIGTERM) after keeping what was done; the message says what was kept and
    how to continue. A KeyboardInterrupt, so nothing that catches Exception swallows it."""


class _OwnErrorsWithoutTraceback(logging.Filter):
    """qff's own errors (bad input, a failed engine) say what to do in one line; a log of them (Prefect's flow and
    task logs) keeps that line and drops the traceback (89 lines of stderr for an unknown method)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], QffError):
            record.exc_info = None
            record.exc_text = None
        return True


def quiet_own_errors(loggers: tuple[str, ...] = ("", "prefect", "prefect.flow_runs", "prefect.task_runs")) -> None:
    """The filter on every handler of ``loggers`` (by default Prefect's run loggers, console and API), once."""
    for name in loggers:
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(f, _OwnErrorsWithoutTraceback) for f in handler.filters):
                handler.addFilter(_OwnErrorsWithoutTraceback())
