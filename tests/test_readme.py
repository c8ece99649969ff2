"""The README starts with the two commands for a fresh machine, and documents the JSON keys."""

from __future__ import annotations

import re

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
