"""The systemd unit for the API: valid, sandboxed like the listener's, runs `serve` on
loopback with the listener's store."""

from __future__ import annotations

import configparser
from pathlib import Path

from helpers import REPO

UNIT = REPO / "contrib" / "csnotify-serve.service"
LISTEN = REPO / "contrib" / "csnotify-listen.service"


def section(path: Path, name: str) -> configparser.SectionProxy:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(path)
    return parser[name]


def test_serve_unit_runs_serve_on_loopback_with_the_listeners_store_and_sandbox() -> None:
    serve, listen = section(UNIT, "Service"), section(LISTEN, "Service")
    assert serve["ExecStart"] == "/opt/csnotify/bin/csnotify serve --listen 127.0.0.1:8787"
    assert serve["Environment"] == listen["Environment"]  # same store and config
    skip = {"ExecStart", "After", "Environment"}
    for key, value in listen.items():
        if key not in skip:
            assert serve.get(key) == value, key
