"""The README starts with the two commands for a fresh machine, and documents the JSON keys."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from helpers import REPO


def test_readme_opens_with_the_two_commands() -> None:
    text = (REPO / "README.md").read_text()
    first_block = re.search(r"```\w*\n(.*?)```", text, re.DOTALL)
    assert first_block is not None
    commands = [ln.split("#")[0].strip() for ln in first_block.group(1).splitlines()]
    assert commands[:2] == ["make demo", "make test"]
    assert text.index("make demo") < text.index("## ")


def test_readme_documents_every_json_key(cli) -> None:
    text = (REPO / "README.md").read_text()
    cli("subscribe", "VM.*", "--to", "https://h.example/x", "--name", "d")
    shown = cli("show", "d", "--json").json()
    for key in [*shown, *shown["endpoints"][0]]:
        assert f'"{key}"' in text, f"README does not document JSON key {key!r}"


def test_makefile_targets_create_the_venv() -> None:
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^test: .*\n", makefile, re.MULTILINE)
    assert re.search(r"^demo: venv", makefile, re.MULTILINE)
    assert "-m venv" in makefile
    ci = (REPO / ".ci" / "run").read_text()
    assert ci.splitlines()[1] == "set -euo pipefail"
    assert "make test" in ci


# -- every command shown in the README runs ---------------------------------------------
# (The opening `make demo` / `make test` are what CI and tests/test_demo.py run.)


def console_blocks() -> list[list[str]]:
    text = (REPO / "README.md").read_text()
    blocks = re.findall(r"```console\n(.*?)```", text, re.DOTALL)
    return [[ln[2:] for ln in block.splitlines() if ln.startswith("$ ")] for block in blocks]


def adapt(line: str, sandbox: Path, ports: dict[str, int], tag: str) -> str:
    """Point a README command at this test's sandbox: local ports, files and a stand-in
    program instead of /usr/local/bin, and a bounded run for commands that run forever."""
    line = line.replace("127.0.0.1:8080", f"127.0.0.1:{ports['simulator']}")
    line = line.replace("/tmp/", f"{sandbox}/")
    line = line.replace("/usr/local/bin/dns-update", f"{sandbox}/dns-update")
    line = line.replace("~/.local/csnotify", f"{sandbox}/venv").replace(
        "pip install .", f"pip install -q {REPO}"
    )
    line = line.replace("--exchange cloudstack-events", f"--exchange readme-{tag}")
    if (
        re.search(r"\bcsnotify listen\b", line)
        and "--once" not in line
        and "--duration" not in line
    ):
        line += " --duration 2"
    if re.search(r"\bcsnotify simulate\b", line) and "&" not in line:
        line += " & sleep 1"
    return line


BLOCKS = console_blocks()


def test_readme_has_console_examples() -> None:
    assert len(BLOCKS) >= 8
    assert all(block for block in BLOCKS)


@pytest.mark.parametrize(
    "index",
    [pytest.param(i, marks=[pytest.mark.rabbitmq] if "amqp" in "\n".join(b) else [])
     for i, b in enumerate(BLOCKS)],
    ids=[b[0][:60] for b in BLOCKS],
)  # fmt: skip
def test_readme_console_block_runs(
    index: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os
    import socket
    import subprocess
    import sys
    import uuid

    from services import AMQP_URL, require_rabbitmq, simulator

    block = BLOCKS[index]
    joined = "\n".join(block)
    if "amqp" in joined:
        require_rabbitmq()
    sandbox = tmp_path / "sandbox"
    sandbox.mkdir()
    program = sandbox / "dns-update"
    program.write_text("#!/bin/sh\ncat > /dev/null\n")
    program.chmod(0o755)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        ports = {"simulator": s.getsockname()[1]}
    tag = uuid.uuid4().hex[:8]
    env = {**os.environ, "CSNOTIFY_AMQP_URL": AMQP_URL, "CSNOTIFY_AMQP_EXCHANGE": f"readme-{tag}",
           "CSNOTIFY_AMQP_QUEUE": f"readme-{tag}", "CSNOTIFY_DELIVERY_RETRY_SCHEDULE": "0s"}  # fmt: skip
    bindir = sandbox / "bin"  # `csnotify` as users have it: a program on PATH
    bindir.mkdir()
    (bindir / "csnotify").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m csnotify "$@"\n')
    (bindir / "csnotify").chmod(0o755)
    env["PATH"] = f"{bindir}:{env['PATH']}"
    prelude = ["set -eu", f"cd {sandbox}", "trap 'kill $(jobs -p) 2>/dev/null || true' EXIT"]
    script = "\n".join(prelude + [adapt(line, sandbox, ports, tag) for line in block])
    uses_own_simulator = "csnotify simulate" in joined
    needs_api = re.search(r"csnotify (events|listen --source api|config import-cmk)", joined)
    with (
        contextlib_nullcontext()
        if uses_own_simulator or not needs_api
        else simulator(tmp_path) as sim
    ):
        if sim is not None:
            env |= {"CSNOTIFY_CLOUDSTACK_URL": sim.url, "CSNOTIFY_CLOUDSTACK_API_KEY": "test-api-key",
                    "CSNOTIFY_CLOUDSTACK_SECRET_KEY": "test-secret-key"}  # fmt: skip
            cmk = Path(env["HOME"]) / ".cmk" / "config"
            cmk.parent.mkdir(parents=True, exist_ok=True)
            cmk.write_text(f"[core]\nprofile = lab\n\n[lab]\nurl = {sim.url}\napikey = test-api-key\n"
                           "secretkey = test-secret-key\n")  # fmt: skip
        proc = subprocess.run(
            ["bash", "-c", script],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    if "amqp" in joined:
        from services import Bus

        Bus(AMQP_URL, f"readme-{tag}", f"readme-{tag}").cleanup()
    assert proc.returncode == 0, (
        f"README block failed:\n{script}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    )
    if "tail -n 2" in joined:
        assert proc.stdout.count('"type": "VM.') >= 2  # the tour's log file got VM events


def contextlib_nullcontext():
    import contextlib

    return contextlib.nullcontext()
