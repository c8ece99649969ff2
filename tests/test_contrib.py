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


def test_unit_matches_its_install_recipe_and_does_not_restart_on_bad_input() -> None:
    service = unit()["Service"]
    program = service["ExecStart"].split()[0]
    text = UNIT.read_text()
    assert program == "/opt/csnotify/bin/csnotify"
    assert "python3 -m venv /opt/csnotify" in text  # the recipe makes what ExecStart runs
    assert set(service["RestartPreventExitStatus"].split()) == {"2", "3"}
    assert "ReadWritePaths=" in text  # what cmd: programs need to write through the sandbox


def test_the_man_page_is_installed_with_the_package() -> None:
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    shared = project["tool"]["hatch"]["build"]["targets"]["wheel"]["shared-data"]
    assert shared["man/csnotify.1"] == "share/man/man1/csnotify.1"
    assert (REPO / "man" / "csnotify.1").is_file()
    assert "/opt/csnotify/share/man/man1/csnotify.1" in UNIT.read_text()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
@pytest.mark.parametrize("name", ["csnotify-listen.service", "csnotify-serve.service"])
def test_systemd_accepts_the_unit(tmp_path: Path, name: str) -> None:
    unit = REPO / "contrib" / name
    copy = tmp_path / name
    copy.write_text(unit.read_text().replace("/opt/csnotify/bin/csnotify", "/bin/true"))
    out = subprocess.run(
        ["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, check=False
    )
    problems = [
        ln
        for ln in (out.stdout + out.stderr).splitlines()
        if ln.strip() and "man csnotify" not in ln
    ]
    assert problems == []
