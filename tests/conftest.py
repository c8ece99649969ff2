"""Shared fixtures: every test gets its own store, config and home directory."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import Run
from typer.testing import CliRunner

from csnotify.cli import app


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
    """The real CLI in-process through typer's CliRunner, stdout and stderr apart."""
    runner = CliRunner()

    def run(*args: str, input: str | bytes | None = None, env: dict[str, str] | None = None) -> Run:
        result = runner.invoke(app, list(args), input=input, env=env, prog_name="csnotify")
        if result.exception and not isinstance(result.exception, SystemExit):
            raise result.exception
        return Run(result.exit_code, result.stdout, result.stderr)

    return run


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Three attempts 50 ms apart and a 2 s timeout, so that failing deliveries finish
    quickly."""
    monkeypatch.setenv("CSNOTIFY_DELIVERY_RETRY_SCHEDULE", "0s,0.05s,0.05s")
    monkeypatch.setenv("CSNOTIFY_DELIVERY_TIMEOUT", "2")
