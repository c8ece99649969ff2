"""The API source against a CloudStack that goes wrong: 500s, hangs, non-JSON and
truncated answers, injected by a proxy in front of the simulator. The poller backs off,
never moves its cursor past undelivered events, and resumes: every event arrives once."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from helpers import answer_json
from receivers import Receiver
from services import simulator, wait_for


class FaultyApi:
    """Forwards to the simulator, or answers with the fault currently set."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.fault: str | None = None
        self.hits = 0
        self.clean = 0  # answers passed on unchanged
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                proxy.hits += 1
                fault = proxy.fault
                if fault == "hang":
                    time.sleep(5)
                    return
                if fault == "500":
                    self._send(
                        500,
                        b'{"listeventsresponse":{"errorcode":530,"errortext":"internal error"}}',
                    )
                    return
                if fault == "garbage":
                    self._send(200, b"<html>proxy error</html>")
                    return
                with urllib.request.urlopen(proxy.upstream + self.path) as resp:
                    body = resp.read()
                if fault == "truncated":
                    body = body[: len(body) // 2]
                self._send(200, body)
                if fault is None:
                    proxy.clean += 1

            def _send(self, status: int, body: bytes) -> None:
                answer_json(self, status, body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.handle_error = lambda *_a: None  # type: ignore[method-assign]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/client/api"


@pytest.mark.parametrize("fault", ["500", "hang", "garbage", "truncated"])
def test_api_faults_back_off_and_lose_nothing(fault: str, tmp_path: Path) -> None:
    # 300 events at 40/s: most are generated while the API is broken, so they can only
    # come from polls after it recovers (at 150/s a loaded machine had them all read
    # before the fault, and stopped listen before it next polled and said so)
    with Receiver() as rx, simulator(tmp_path, "--count", "300", "--rate", "40/s") as sim:
        proxy = FaultyApi(sim.url.rsplit("/client/api", 1)[0])
        subprocess.run(
            [sys.executable, "-m", "csnotify", "subscribe", "*", "--category", "*", "--to", rx.url],
            check=True,
            capture_output=True,
        )
        env = {**os.environ, "CSNOTIFY_CLOUDSTACK_URL": proxy.url, "CSNOTIFY_CLOUDSTACK_API_KEY": "test-api-key",
               "CSNOTIFY_CLOUDSTACK_SECRET_KEY": "test-secret-key", "CSNOTIFY_DELIVERY_TIMEOUT": "0.5"}  # fmt: skip
        listen = subprocess.Popen([sys.executable, "-m", "csnotify", "listen", "--source", "api", "--interval", "0.2",
                                   "--since", "10m"], env=env, stderr=subprocess.PIPE, text=True)  # fmt: skip
        try:
            assert wait_for(lambda: len(rx.requests) >= 20, 30)
            proxy.fault = fault
            time.sleep(4)
            during = len(rx.requests)
            time.sleep(1)
            assert len(rx.requests) <= during + 1  # nothing new gets through while it is broken
            proxy.fault = None
            clean = proxy.clean
            sim.wait_generated()
            expected = [r["list_item"]["id"] for r in sim.recorded() if r["list_item"]]
            assert wait_for(lambda: len(rx.requests) >= len(expected), 60)
            # polls answered since the recovery (on a loaded machine every event may have
            # been read before the fault, and listen stopped before it polled again)
            assert wait_for(lambda: proxy.clean > clean + 4, 60)
            time.sleep(1)
        finally:
            listen.terminate()
            _, err = listen.communicate(timeout=20)
        proxy.server.shutdown()
    assert listen.returncode == 0, err
    got = [b["event"]["id"] for b in rx.bodies()]
    assert sorted(got) == sorted(expected)  # all of them, each once
    assert err.count("unreachable") == 1 and err.count("reachable again") == 1, err
