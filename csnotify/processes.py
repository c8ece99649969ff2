"""Whether a process on this host still runs (listener heartbeats, claims on pending
deliveries)."""

from __future__ import annotations

import os
from pathlib import Path


def alive(pid: int, named: str | None = None) -> bool:
    """``pid`` exists (someone else's process counts); with ``named``, only if its command
    line contains that word, so that a reused pid is not taken for ours."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if named is None:
        return True
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # no /proc here: trust the pid
    return named.encode() in cmdline
