"""The HTTP API against the CLI for the same operation on the same store (50 subscriptions
of one account): `GET /v1/subscriptions` against `csnotify list --json`, and
`POST /v1/subscriptions` against `csnotify subscribe`, as operations per second. The API
is `csnotify serve` as a process, called over one keep-alive connection with a bearer
token; the CLI is a new process per operation, as a script calling it would run it.

Usage: .venv/bin/python bench/api.py [--requests N] [--runs N]
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import write_section

PUBLIC = "https://93.184.216.34/hook"  # a public address: the policy needs no DNS for it


def populate(db: Path, count: int) -> None:
    from csnotify import subscriptions
    from csnotify.store import Store

    store = Store.open(db)
    for i in range(count):
        spec = subscriptions.SubscriptionInput(
            patterns=[f"VM.{i}.*"], to=[f"{PUBLIC}/{i}"], name=f"sub-{i:02d}", key="generate"
        )
        subscriptions.subscribe(store, spec, owner=("account", "acme", "ROOT/customers"))
    store.close()


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "csnotify", *args], env=env, capture_output=True, text=True,
        check=True,
    )  # fmt: skip


def per_second(count: int, seconds: float) -> float:
    return count / seconds if seconds else float("inf")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=500, help="API requests per operation")
    parser.add_argument("--runs", type=int, default=20, help="CLI processes per operation")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "bench.db"
        populate(db, 50)
        env = {**os.environ, "CSNOTIFY_DB": str(db), "CSNOTIFY_CONFIG": str(Path(tmp) / "c.toml")}
        token = cli(env, "token", "create", "--account", "acme", "--domain", "ROOT/customers",
                    "--json").stdout  # fmt: skip
        bearer = re.search(r'"token": "([^"]+)"', token).group(1)  # type: ignore[union-attr]
        serve_env = {
            **env,
            "CSNOTIFY_API_RATE_LIMIT": "0",
            "CSNOTIFY_API_MAX_SUBSCRIPTIONS": "100000",
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "csnotify", "-q", "serve", "--listen", "127.0.0.1:0"],
            env=serve_env, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert proc.stderr is not None
        url = re.search(r"on (\S+)/v1", proc.stderr.readline()).group(1)  # type: ignore[union-attr]
        results: dict[str, tuple[float, float]] = {}
        try:
            with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {bearer}"}) as http:
                for _ in range(20):  # warm-up
                    http.get("/v1/subscriptions").raise_for_status()
                start = time.perf_counter()
                for _ in range(args.requests):
                    http.get("/v1/subscriptions").raise_for_status()
                api_list = per_second(args.requests, time.perf_counter() - start)
                cli(env, "list", "--json")  # warm-up (byte-code caches)
                start = time.perf_counter()
                for _ in range(args.runs):
                    cli(env, "list", "--json")
                cli_list = per_second(args.runs, time.perf_counter() - start)
                start = time.perf_counter()
                for i in range(args.requests):
                    body = {"name": f"api-{i}", "patterns": ["VM.*"],
                            "endpoints": [{"uri": f"{PUBLIC}/api/{i}"}]}  # fmt: skip
                    http.post("/v1/subscriptions", json=body).raise_for_status()
                api_create = per_second(args.requests, time.perf_counter() - start)
                start = time.perf_counter()
                for i in range(args.runs):
                    cli(env, "subscribe", "VM.*", "--to", f"{PUBLIC}/cli/{i}", "--name", f"cli-{i}")
                cli_create = per_second(args.runs, time.perf_counter() - start)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        results["list"] = (api_list, cli_list)
        results["create"] = (api_create, cli_create)
    rows = [
        "| operation | API requests/s | CLI operations/s | API / CLI |",
        "|---|---:|---:|---:|",
        f"| list: `GET /v1/subscriptions` vs `csnotify list --json`"
        f" | {results['list'][0]:.0f} | {results['list'][1]:.1f}"
        f" | {results['list'][0] / results['list'][1]:.1f}x |",
        f"| create: `POST /v1/subscriptions` vs `csnotify subscribe`"
        f" | {results['create'][0]:.0f} | {results['create'][1]:.1f}"
        f" | {results['create'][0] / results['create'][1]:.1f}x |",
    ]
    body = (
        "## HTTP API against the CLI (bench/api.py)\n\n"
        f"Command: `.venv/bin/python bench/api.py --requests {args.requests} --runs {args.runs}`;"
        f" Python {platform.python_version()}. One store (SQLite), 50 subscriptions of one"
        " account; the API over one keep-alive connection with a bearer token, requests one"
        " after another; the CLI a new process per operation, run while the server is up and"
        " idle. Both lists read the same 50 subscriptions; the creates follow, API first.\n\n"
        + "\n".join(rows)
    )
    write_section("api", body)
    print(body)


if __name__ == "__main__":
    main()
