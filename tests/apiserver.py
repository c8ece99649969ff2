"""``csnotify serve`` as a real process for the API tests: started on a free loopback port
(--listen 127.0.0.1:0), its address read from the line it prints when ready; stopped with
SIGTERM. Tokens come from the real ``csnotify token create``."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from typing import Any

import httpx
from helpers import run_process

READY = re.compile(r"serving the API on (\S+)/v1")


class ApiServer:
    def __init__(
        self,
        *options: str,
        env: dict[str, str] | None = None,
        command: tuple[str, ...] = ("serve", "--listen", "127.0.0.1:0"),
    ) -> None:
        """``command``: what serves the API (``serve``, or ``listen ... --api``)."""
        self.options = options
        self.command = command
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""
        self.stderr_lines: list[str] = []

    def __enter__(self) -> ApiServer:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "csnotify", *self.options, *self.command],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env,
        )
        assert self.proc.stderr is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                break
            self.stderr_lines.append(line)
            found = READY.search(line)
            if found:
                self.url = found.group(1)
                return self
        self.proc.kill()
        raise AssertionError(f"csnotify serve did not start: {''.join(self.stderr_lines)}")

    def stop(self) -> tuple[int, str, str]:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        out, err = self.proc.communicate(timeout=30)
        return self.proc.returncode, out, "".join(self.stderr_lines) + err

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate(timeout=30)

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)


def make_token(account: str, domain: str = "ROOT", scope: str = "account", *extra: str) -> str:
    r = run_process(
        "token", "create", "--account", account, "--domain", domain, "--scope", scope,
        "--json", *extra,
    )  # fmt: skip
    assert r.exit_code == 0, r.stderr
    return str(r.json()["token"])


def is_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    """The answer is RFC 9457 problem+json with this status; its document."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    doc = response.json()
    assert doc["status"] == status and doc["type"] == "about:blank" and doc["title"]
    assert "\n" not in doc["detail"] and "Traceback" not in doc["detail"]
    return doc  # type: ignore[no-any-return]
