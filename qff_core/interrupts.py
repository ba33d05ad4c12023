"""Ctrl-C and SIGTERM that are never lost.

Python raises ``KeyboardInterrupt`` wherever the main thread is when the signal arrives. If that
is a finaliser (a ``__del__`` or weakref callback, run by the garbage collector at any allocation),
the exception is printed as "Exception ignored" and dropped, and the command carries on as if
nothing happened: seen as a Prefect-mode ``qff train`` that trained on for minutes after Ctrl-C,
the interrupt swallowed by an asyncio transport's ``__del__`` inside a zarr call. So the
handler also records the request, and long loops call ``raise_if_interrupted`` between units
of work (a training step, a chunk of circuits or reference calculations, an MD step), which
re-raises an interrupt that a finaliser swallowed.
"""

from __future__ import annotations

import functools
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")

_requested = threading.Event()
_raise_at_once = [True]  # False while an orchestrator's own code runs (``deferred_interrupts``)


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()  # where signal handlers run


def _on_signal(signum: int, frame: object) -> None:
    _requested.set()
    if _raise_at_once[0]:
        raise KeyboardInterrupt


@contextmanager
def deferred_interrupts() -> Iterator[None]:
    """For the block, an interrupt is only recorded, not raised where it lands; ``raise_if_interrupted`` and
    ``immediate_interrupts`` raise it in code that can handle it. For Prefect's engine: Ctrl-C while it creates
    a task run makes its crash handler fail ("Task run is not set") and replaces the interrupt with that error."""
    if not _in_main_thread():
        yield
        return
    before, _raise_at_once[0] = _raise_at_once[0], False
    try:
        yield
    finally:
        _raise_at_once[0] = before


@contextmanager
def immediate_interrupts() -> Iterator[None]:
    """Inside ``deferred_interrupts``, a block of our own work (a Prefect task's body) where Ctrl-C raises where it
    lands again; one that arrived before the block raises on entry."""
    if not _in_main_thread():  # a task in a worker thread: the main thread's mode stays as it is
        raise_if_interrupted()
        yield
        return
    before, _raise_at_once[0] = _raise_at_once[0], True
    try:
        raise_if_interrupted()
        yield
    finally:
        _raise_at_once[0] = before


def interruptible(fn: Callable[P, R]) -> Callable[P, R]:
    """``fn`` runs under ``immediate_interrupts``: for the body of every Prefect task (put it under ``@task``), so a
    command that defers Ctrl-C while Prefect's engine runs is still interrupted inside the task's own work."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with immediate_interrupts():
            return fn(*args, **kwargs)

    return wrapper


def _quiet_swallowed_interrupts(previous):
    def hook(unraisable) -> None:
        if isinstance(unraisable.exc_value, KeyboardInterrupt) and _requested.is_set():
            return  # raise_if_interrupted acts on it
        previous(unraisable)

    return hook


def raise_if_interrupted() -> None:
    """Raise ``KeyboardInterrupt`` if Ctrl-C or SIGTERM arrived (under ``interrupt_handlers``), even if the
    interrupt raised at the time was swallowed; a no-op otherwise."""
    if _requested.is_set():
        raise KeyboardInterrupt


def interrupted() -> bool:
    """Whether an interrupt was requested under the current ``interrupt_handlers``."""
    return _requested.is_set()


@contextmanager
def interrupt_handlers() -> Iterator[None]:
    """SIGINT and SIGTERM raise ``KeyboardInterrupt`` and are remembered for ``raise_if_interrupted``, for the
    block; the previous handlers come back after it. Outside the main thread (signals cannot be set there) the
    block runs with the handlers it has."""
    if not _in_main_thread():
        yield
        return
    _requested.clear()
    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    previous_hook = sys.unraisablehook
    sys.unraisablehook = _quiet_swallowed_interrupts(previous_hook)
    try:
        yield
    finally:
        sys.unraisablehook = previous_hook
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _requested.clear()


__all__ = [
    "deferred_interrupts",
    "immediate_interrupts",
    "interrupt_handlers",
    "interrupted",
    "interruptible",
    "raise_if_interrupted",
]
