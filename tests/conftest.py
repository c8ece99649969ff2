"""Shared fixtures: every test gets its own store, config and home directory."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import Run
from typer.testing import CliRunner

from csnotify.cli import app

# Whole files that start the CLI as processes, services or terminals for most of their
# tests: `pytest -m "not slow"` leaves them out (`make test` runs everything).
SLOW_FILES = {
    "test_api_faults.py", "test_api_realities.py", "test_bus_events.py", "test_concurrency.py",
    "test_contrib.py", "test_crash.py", "test_demo.py", "test_listen.py", "test_outbox.py",
    "test_readme.py", "test_simulator.py", "test_status.py", "test_terminal.py",
}  # fmt: skip
SERVER_MARKS = {"mysql": "mariadb", "postgresql": "postgresql"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test for what it needs: a RabbitMQ broker (the ``bus`` fixture), a
    database server (a ``backend``, ``server_db`` or ``kind`` of mysql or postgresql), and
    ``slow`` for those and for the end-to-end files above."""
    for item in items:
        needs = set()
        if "bus" in getattr(item, "fixturenames", ()):
            needs.add("rabbitmq")
        params = getattr(getattr(item, "callspec", None), "params", {})
        for name in ("backend", "server_db", "kind"):
            if params.get(name) in SERVER_MARKS:
                needs.add(SERVER_MARKS[params[name]])
        needs.update(m.name for m in item.iter_markers() if m.name in {"rabbitmq", "slow"})
        if needs or item.path.name in SLOW_FILES:
            needs.add("slow")
        for mark in sorted(needs):
            item.add_marker(mark)


@pytest.fixture(autouse=True)
def private_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the store, config, XDG dirs and HOME at a temporary folder."""
    for name in list(os.environ):
        if name.startswith("CSNOTIFY_") or name == "NO_COLOR":
            monkeypatch.delenv(name)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / ".local" / "share"))
    monkeypatch.setenv("CSNOTIFY_DB", str(tmp_path / "state" / "csnotify.db"))
    monkeypatch.setenv("CSNOTIFY_CONFIG", str(tmp_path / "etc" / "config.toml"))
    return tmp_path


@pytest.fixture
def db_file(tmp_path: Path) -> Path:
    return tmp_path / "state" / "csnotify.db"


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    return tmp_path / "etc" / "config.toml"


@pytest.fixture
def cli() -> Callable[..., Run]:
    """The real CLI in-process through typer's CliRunner, stdout and stderr apart.

    A call fails the test unless the command exits with ``expect`` (0 unless said):
    a test that wants a refusal says which status, ``expect=None`` takes any."""
    runner = CliRunner()

    def run(
        *args: str,
        input: str | bytes | None = None,
        env: dict[str, str] | None = None,
        expect: int | None = 0,
    ) -> Run:
        result = runner.invoke(app, list(args), input=input, env=env, prog_name="csnotify")
        if result.exception and not isinstance(result.exception, SystemExit):
            raise result.exception
        if expect is not None and result.exit_code != expect:
            pytest.fail(
                f"csnotify {' '.join(args)}: exit status {result.exit_code}, expected {expect}"
                f"\nstdout: {result.stdout}\nstderr: {result.stderr}",
                pytrace=False,
            )
        return Run(result.exit_code, result.stdout, result.stderr)

    return run


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Three attempts 50 ms apart and a 2 s timeout, so that failing deliveries finish
    quickly."""
    monkeypatch.setenv("CSNOTIFY_DELIVERY_RETRY_SCHEDULE", "0s,0.05s,0.05s")
    monkeypatch.setenv("CSNOTIFY_DELIVERY_TIMEOUT", "2")
