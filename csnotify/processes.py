"""Whether a process on this host still runs (listener heartbeats, claims on pending
deliveries), and what "this host" is: the same host name and pid namespace."""

from __future__ import annotations

import os
from pathlib import Path


def pid_namespace() -> str:
    """This process's pid namespace (Linux: the inode of /proc/self/ns/pid; '' where there
    is none). Containers that share a host name (host networking) each have their own:
    a pid seen from one says nothing of a process in another."""
    try:
        link = str(Path("/proc/self/ns/pid").readlink())
    except OSError:
        return ""
    return link.removeprefix("pid:[").removesuffix("]")


PIDNS = pid_namespace()


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
