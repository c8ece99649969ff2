"""The systemd unit: valid, restarts on failure, sandboxed, runs `listen`."""

from __future__ import annotations

import configparser
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers import REPO

UNIT = REPO / "contrib" / "csnotify-listen.service"


def unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(UNIT)
    return parser


def test_unit_runs_listen_with_restart_and_hardening() -> None:
    service = unit()["Service"]
    assert "csnotify listen --source amqp" in service["ExecStart"]
    assert service["Restart"] == "on-failure"
    assert service["User"] == "csnotify" and service["StateDirectory"] == "csnotify"
    for option in (
        "NoNewPrivileges",
        "ProtectSystem",
        "ProtectHome",
        "PrivateTmp",
        "RestrictAddressFamilies",
    ):
        assert option in service, option
    assert unit()["Install"]["WantedBy"] == "multi-user.target"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    copy = tmp_path / UNIT.name
    copy.write_text(UNIT.read_text().replace("/usr/local/bin/csnotify", "/bin/true"))
    out = subprocess.run(
        ["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, check=False
    )
    problems = [
        ln
        for ln in (out.stdout + out.stderr).splitlines()
        if ln.strip() and "man csnotify" not in ln
    ]
    assert problems == []
