"""Whether a process still runs: for leftovers (locks, partial writes, scratch folders) named by their owner's pid."""

from __future__ import annotations

import os
from pathlib import Path


def pid_alive(pid: int) -> bool:
    """True if a process with this pid runs on this host (also one of another user's, which we may not signal).

    A zombie (killed, not yet reaped by its parent: a long-lived worker that started it, say) is not alive:
    what it left behind is free to clean up. Without ``/proc`` (macOS) only the signal check is made.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


__all__ = ["pid_alive"]
