"""When a Prefect task may retry: only after a transient failure (a network or queue hiccup, a timeout,
``qff_core.errors.TransientError`` anywhere in the exception's causes); bad input and bugs fail at once."""

from __future__ import annotations

from qff_core.errors import TransientError

TRANSIENT_RETRIES = 2
TRANSIENT_DELAYS_S = [10, 60]


def transient_only(task, task_run, state) -> bool:
    """A ``retry_condition_fn``: retry iff the failure was transient."""
    try:
        state.result(raise_on_failure=True)
    except BaseException as exc:
        seen = exc
        while seen is not None:
            if isinstance(seen, TransientError):
                return True
            seen = seen.__cause__
    return False


__all__ = ["TRANSIENT_DELAYS_S", "TRANSIENT_RETRIES", "transient_only"]
