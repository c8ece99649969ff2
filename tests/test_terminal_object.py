"""The Terminal object is the CLI's only way to the environment, stdin and the terminal
(as httpie's Environment is): a test swaps it for one made of strings."""

from __future__ import annotations

import ast
import io
from pathlib import Path

import pytest
from helpers import REPO
from typer import Abort

from csnotify.errors import BadInput
from csnotify.output import Terminal

BYPASSES = {"os.environ", "sys.stdin", "typer.echo", "typer.confirm", "typer.prompt", "getpass"}


def test_commands_reach_the_environment_and_the_terminal_only_through_it() -> None:
    found = []
    for path in sorted((REPO / "csnotify" / "cli").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            name = (
                ast.unparse(node)
                if isinstance(node, ast.Attribute)
                else node.names[0].name
                if isinstance(node, ast.Import)
                else None
            )
            if name in BYPASSES:
                found.append(f"{path.name}:{node.lineno} {name}")
    assert found == []


def terminal(stdin: str = "") -> Terminal:
    return Terminal(stdout=io.StringIO(), stderr=io.StringIO(), stdin=io.StringIO(stdin),
                    environ={"NO_COLOR": "1"})  # fmt: skip


def test_confirm_asks_again_until_answered_and_end_of_input_aborts() -> None:
    t = terminal("maybe\ny\n")
    assert t.confirm("Delete it?") is True
    assert t.stdout.getvalue() == (  # type: ignore[attr-defined]
        "Delete it? [y/N]: Error: invalid input\nDelete it? [y/N]: "
    )
    assert terminal("\n").confirm("Delete it?", err=True) is False
    with pytest.raises(Abort):
        terminal("").confirm("Delete it?")


def test_file_or_stdin_is_read_in_one_place(tmp_path: Path) -> None:
    assert terminal("from stdin\n").read_text("-") == "from stdin\n"
    assert terminal("raw").read_bytes("-") == b"raw"
    (tmp_path / "ok.txt").write_text("from a file")
    assert terminal().read_text(str(tmp_path / "ok.txt")) == "from a file"
    (tmp_path / "latin.txt").write_bytes(b"caf\xe9")
    with pytest.raises(BadInput, match=r"latin.txt is not UTF-8 text; try again"):
        terminal().read_text(str(tmp_path / "latin.txt"), "; try again")
    with pytest.raises(BadInput, match=r"cannot read .*missing: No such file"):
        terminal().read_bytes(str(tmp_path / "missing"))
