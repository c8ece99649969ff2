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


# -- read-modify-write races between commands (each a separate process) ----------------


def _at_once(*commands: list[str]) -> list[tuple[int, str]]:
    """Start every command before waiting for any; their exit codes and stderr."""
    argv = [[sys.executable, "-m", "csnotify", *c] for c in commands]
    procs = [
        subprocess.Popen(a, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for a in argv
    ]
    return [(p.wait(timeout=120), p.stderr.read() if p.stderr else "") for p in procs]


def _one_line_error(code: int, err: str) -> None:
    assert code in (0, 2), err
    assert "internal error" not in err and "Traceback" not in err, err
    if code == 2:
        assert len(err.strip().splitlines()) == 1, err


def _show(name: str) -> dict | None:
    r = run_process("show", name, "--json")
    return r.json() if r.exit_code == 0 else None


def test_two_updates_at_once_keep_both_changes() -> None:
    for k in range(4):
        assert (
            run_process(
                "subscribe", "VM.*", "--to", f"https://h.example/{k}", "--name", f"s{k}"
            ).exit_code
            == 0
        )
        results = _at_once(["update", f"s{k}", "--level", "WARN"],
                           ["update", f"s{k}", "--title", "changed {type}"])  # fmt: skip
        assert [code for code, _ in results] == [0, 0], results
        sub = _show(f"s{k}")
        assert sub is not None and sub["level"] == "WARN" and sub["title"] == "changed {type}"


def test_ten_add_to_at_once_keep_ten_endpoints() -> None:
    assert (
        run_process("subscribe", "VM.*", "--to", "https://h.example/0", "--name", "s").exit_code
        == 0
    )
    results = _at_once(
        *(["update", "s", "--add-to", f"https://h.example/{i}"] for i in range(1, 11))
    )
    assert [code for code, _ in results] == [0] * 10, results
    sub = _show("s")
    assert sub is not None
    assert sorted(ep["uri"] for ep in sub["endpoints"]) == sorted(
        f"https://h.example/{i}" for i in range(11)
    )


def test_unsubscribe_racing_a_rename_never_claims_a_deletion_that_did_not_happen() -> None:
    for k in range(4):
        a, b = f"a{k}", f"b{k}"
        assert (
            run_process("subscribe", "VM.*", "--to", "https://h.example/", "--name", a).exit_code
            == 0
        )
        (gone, gone_err), (renamed, renamed_err) = _at_once(
            ["unsubscribe", a, "--yes"], ["update", a, "--rename", b]
        )
        _one_line_error(gone, gone_err)
        _one_line_error(renamed, renamed_err)
        assert _show(a) is None
        if gone == 0:  # deleted first: the rename found nothing
            assert renamed == 2 and f"no subscription named {a!r}" in renamed_err
            assert _show(b) is None
        else:  # renamed first: the deletion of the old name found nothing
            assert renamed == 0 and f"{a!r}" in gone_err
            assert _show(b) is not None


def test_update_racing_unsubscribe_is_a_clear_error_or_done_before() -> None:
    for k in range(4):
        name = f"u{k}"
        assert (
            run_process("subscribe", "VM.*", "--to", "https://h.example/", "--name", name).exit_code
            == 0
        )
        (changed, changed_err), (gone, gone_err) = _at_once(
            ["update", name, "--level", "ERROR", "--add-to", "https://more.example/"],
            ["unsubscribe", name, "--yes"],
        )
        _one_line_error(changed, changed_err)
        assert gone == 0, gone_err  # it exists until the deletion, whatever the order
        assert _show(name) is None
        if changed == 2:
            assert f"no subscription named {name!r}" in changed_err
    rows = run_process("list", "--json").json()
    assert rows == []  # no endpoint or subscription left behind half-written
