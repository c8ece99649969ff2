"""Helpers the tests share: the CLI as a process, fixture files, store digests."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures"


@dataclass
class Run:
    exit_code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


def run_process(*args: str, input: str | None = None, timeout: float = 60, **kw: Any) -> Run:
    """The CLI as a separate process, as a user or systemd runs it."""
    proc = subprocess.run(
        [sys.executable, "-m", "csnotify", *args],
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        **kw,
    )
    return Run(proc.returncode, proc.stdout, proc.stderr)


def file_digest(path: Path) -> str:
    """Bytes of the store and its WAL, to prove a refused command changed nothing."""
    h = hashlib.sha256()
    for p in (path, path.with_name(path.name + "-wal")):
        h.update(p.read_bytes() if p.exists() else b"<none>")
    return h.hexdigest()


def load_fixture(relative: str) -> Any:
    return json.loads((FIXTURES / relative).read_text())


def answer_json(handler: Any, status: int, body: bytes) -> None:
    """A stand-in server's JSON answer (``handler``: a BaseHTTPRequestHandler)."""
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)
