"""Cold start-up of `csnotify --help` and `csnotify list` (50 subscriptions) against
`apprise --version`, measured in the same run, runs interleaved.

Usage: .venv/bin/python bench/startup.py [--runs N]
Target (issue 2): both at most 0.75x the `apprise --version` time.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import write_section

BIN = Path(sys.executable).parent


def populate(db: Path, count: int) -> None:
    from csnotify import subscriptions
    from csnotify.store import Store

    store = Store.open(db)
    for i in range(count):
        spec = subscriptions.SubscriptionInput(
            patterns=[f"VM.{i}.*", "VOLUME.CREATE"],
            to=[f"https://hooks{i}.example.com/cs", f"https://backup{i}.example.com/cs"],
            name=f"sub-{i:02d}",
            key="generate",
            where=["account=admin"],
        )
        subscriptions.subscribe(store, spec)
    store.close()


def timed(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "bench.db"
        populate(db, 50)
        env = {**os.environ, "CSNOTIFY_DB": str(db), "CSNOTIFY_CONFIG": str(Path(tmp) / "c.toml")}
        # Measure as installed: with byte-code caches, which pip writes for apprise at install
        # time; the warm-up runs below write csnotify's (an editable install has none yet).
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        commands = {
            "apprise --version": [str(BIN / "apprise"), "--version"],
            "csnotify --help": [str(BIN / "csnotify"), "--help"],
            "csnotify list": [str(BIN / "csnotify"), "list"],
            "csnotify list --json": [str(BIN / "csnotify"), "list", "--json"],
            "python -c pass": [sys.executable, "-c", "pass"],
        }
        for cmd in commands.values():  # warm the page cache and .pyc files
            timed(cmd, env)
        samples: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.runs):
            for name, cmd in commands.items():
                samples[name].append(timed(cmd, env))
    median = {name: statistics.median(values) for name, values in samples.items()}
    base = median["apprise --version"]
    lines = [
        "## Start-up (bench/startup.py)",
        "",
        f"Command: `.venv/bin/python bench/startup.py --runs {args.runs}`; median of"
        f" {args.runs} interleaved runs each (new processes, byte-code cached as after"
        " installation), output piped. Python"
        f" {platform.python_version()}. Target: `--help` and `list` at most 0.75x"
        " `apprise --version`.",
        "",
        "| command | median ms | ratio to `apprise --version` |",
        "|---|---:|---:|",
    ]
    for name in commands:
        lines.append(f"| `{name}` | {median[name] * 1000:.1f} | {median[name] / base:.2f}x |")
    verdict = all(median[n] / base <= 0.75 for n in ("csnotify --help", "csnotify list"))
    lines += ["", f"Target met: {'yes' if verdict else 'NO'}."]
    body = "\n".join(lines)
    write_section("startup", body)
    print(body)


if __name__ == "__main__":
    main()
