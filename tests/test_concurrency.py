"""Several processes change subscriptions while `listen` delivers: nobody sees "database is
locked", no write is lost, and listen picks every change up without a restart."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from helpers import run_process
from receivers import Receiver
from services import simulator, wait_for

WORKER = """
import subprocess, sys
me, rounds = sys.argv[1], int(sys.argv[2])
def run(*args):
    p = subprocess.run([sys.executable, "-m", "csnotify", *args], capture_output=True, text=True)
    if p.returncode != 0 or "locked" in p.stderr.lower():
        sys.exit(f"{' '.join(args)}: exit {p.returncode}: {p.stderr}")
for k in range(rounds):
    name = f"w{me}-{k}"
    run("subscribe", "VM.*", "--to", f"https://h{me}.example/{k}", "--name", name)
    run("update", name, "--level", "WARN", "--add-to", f"https://extra{me}.example/{k}")
    if k < rounds - 1:
        run("unsubscribe", name, "--yes")
"""


def test_concurrent_changes_while_listening(tmp_path: Path) -> None:
    with Receiver() as rx, simulator(tmp_path, "--rate", "100/s") as sim:
        env = {**os.environ, "CSNOTIFY_CLOUDSTACK_URL": sim.url, "CSNOTIFY_CLOUDSTACK_API_KEY": "test-api-key",
               "CSNOTIFY_CLOUDSTACK_SECRET_KEY": "test-secret-key", "CSNOTIFY_DELIVERY_RETRY_SCHEDULE": "0s"}  # fmt: skip
        assert (
            run_process("subscribe", "*", "--to", rx.url + "/all", "--name", "all").exit_code == 0
        )
        listen = subprocess.Popen([sys.executable, "-m", "csnotify", "-v", "listen", "--source", "api",
                                   "--interval", "0.2"], env=env, stderr=subprocess.PIPE, text=True)  # fmt: skip
        try:
            assert wait_for(lambda: len(rx.requests) > 5, 20)
            workers = [subprocess.Popen([sys.executable, "-c", WORKER, str(i), "6"], stderr=subprocess.PIPE, text=True)
                       for i in range(4)]  # fmt: skip
            results = [(w.wait(timeout=120), w.stderr.read() if w.stderr else "") for w in workers]
            for code, err in results:
                assert code == 0, err
            # a change made now reaches the running listener
            assert (
                run_process(
                    "subscribe", "VM.*", "--to", rx.url + "/late", "--name", "late"
                ).exit_code
                == 0
            )
            assert wait_for(lambda: any(r.path == "/late" for r in rx.requests), 20)
        finally:
            listen.terminate()
            _, err = listen.communicate(timeout=20)
    assert listen.returncode == 0, err
    assert "locked" not in err.lower()
    assert err.count("subscriptions changed") >= 3
    names = sorted(s["name"] for s in run_process("list", "--json").json())
    assert names == ["all", "late", "w0-5", "w1-5", "w2-5", "w3-5"]  # no write lost
    for name in ("w0-5", "w3-5"):
        sub = run_process("show", name, "--json").json()
        assert sub["level"] == "WARN" and len(sub["endpoints"]) == 2
