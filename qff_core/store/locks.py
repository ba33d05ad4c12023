"""File locks for the stores that several processes may write at once: datasets and run directories.

``file_lock`` is an exclusive ``flock`` on a lock file beside the store, re-entrant within one
process (a function holding it may call another that takes it), released by the kernel when
the process dies, so a killed holder never leaves the store locked. A clean release removes the
lock file (a process waiting on the removed file notices and locks the new one), so only a killed
holder leaves one behind. ``holder_lock`` adds who
holds it (pid, host, start time, command) to the lock file, refuses at once with
``BusyError`` naming the holder, or waits; a lock left by a process that is gone is taken over
with a message.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path

from qff_core.errors import InputError

_HELD: dict[str, list] = {}  # lock path -> [open handle, depth]: re-entrancy within this process
_GUARD = threading.Lock()


class BusyError(InputError):
    """Another process holds the lock of a store (the message names it)."""


@contextmanager
def file_lock(lock_path: str | Path, *, wait: bool = True) -> Iterator[object]:
    """An exclusive lock on ``lock_path`` (created if needed), re-entrant in this process; yields the open lock
    file. ``wait=False``: BlockingIOError at once when another process holds it."""
    key = str(Path(lock_path).resolve())
    with _GUARD:
        held = _HELD.get(key)
        if held is not None:
            held[1] += 1
    if held is not None:
        try:
            yield held[0]
        finally:
            with _GUARD:
                held[1] -= 1
        return
    Path(key).parent.mkdir(parents=True, exist_ok=True)
    handle = _lock_file(key, wait)
    with _GUARD:
        _HELD[key] = [handle, 1]
    try:
        yield handle
    finally:
        with _GUARD:
            del _HELD[key]
        with suppress(OSError):  # removed while held: a process waiting on it sees that and locks a new file
            os.unlink(key)
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def _lock_file(key: str, wait: bool):
    """The open lock file at ``key``, locked; the file a released holder removed is never the one locked."""
    while True:
        handle = open(key, "a+")  # noqa: SIM115 - the caller closes it, after the lock is released
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            if _is_current(handle, key):
                return handle
        except BaseException:
            handle.close()
            raise
        handle.close()  # its holder released and removed it while we waited: lock the file there now


def _is_current(handle, key: str) -> bool:
    try:
        on_disk = os.stat(key)
    except FileNotFoundError:
        return False
    held = os.fstat(handle.fileno())
    return (on_disk.st_dev, on_disk.st_ino) == (held.st_dev, held.st_ino)


def _holder(handle) -> dict:
    handle.seek(0)
    try:
        return json.loads(handle.read() or "{}")
    except json.JSONDecodeError:
        return {}


def describe_holder(info: dict) -> str:
    """``pid P on host H since T (command)`` from a lock file's record."""
    return (f"pid {info.get('pid', '?')} on {info.get('host', '?')} since {info.get('since', '?')}"
            + (f" ({info['command']})" if info.get("command") else ""))


def _take(lock_path: Path, what: str, wait: bool, notice: Callable[[str], None] | None, hint: str):
    """The entered ``file_lock`` of ``lock_path`` and its handle; BusyError naming the holder unless ``wait``."""
    while True:
        cm = file_lock(lock_path, wait=False)
        try:
            return cm, cm.__enter__()
        except BlockingIOError:
            pass
        try:
            with open(lock_path) as peek:
                info = _holder(peek)
        except FileNotFoundError:
            continue  # released (and removed) this instant: try again
        if not wait:
            raise BusyError(f"{what} is busy: {describe_holder(info)} holds it. Wait for it to finish, or "
                            f"{hint}") from None
        if notice:
            notice(f"{what} is busy ({describe_holder(info)}); waiting for it")
        cm = file_lock(lock_path, wait=True)
        return cm, cm.__enter__()


@contextmanager
def holder_lock(lock_path: str | Path, what: str, *, wait: bool = False,
                notice: Callable[[str], None] | None = None,
                hint: str = "pass --wait to queue behind it") -> Iterator[None]:
    """Hold the lock of ``what`` (a run directory...) and record this process in it.

    Busy: ``BusyError`` naming the holder and ``hint`` (how to wait, where the command can), or with ``wait``
    block until it is free. A record of a
    process that is gone (killed: the kernel released its lock) is taken over, with ``notice``.
    """
    cm, handle = _take(Path(lock_path), what, wait, notice, hint)
    try:
        previous = _holder(handle)  # a clean release leaves no record: one here is of a process that was killed
        if previous.get("pid") and notice is not None:
            notice(f"took over the lock of {what} from {describe_holder(previous)}, which ended without releasing "
                   "it (killed?)")
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "since": datetime.now(UTC).isoformat(timespec="seconds"),
                                 "command": " ".join(os.path.basename(a) if i == 0 else a
                                                     for i, a in enumerate(sys.argv[:6]))}))
        handle.flush()
        yield
    finally:
        try:
            handle.seek(0)
            handle.truncate()  # released cleanly: no holder on record
            handle.flush()
        finally:
            cm.__exit__(None, None, None)


__all__ = ["BusyError", "describe_holder", "file_lock", "holder_lock"]
