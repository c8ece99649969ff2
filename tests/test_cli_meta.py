"""What every command shares: help with examples, --version, python -m, start-up imports,
plain output when piped, rich tables on a terminal."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import typer
from helpers import REPO, run_process

from csnotify import __version__
from csnotify.cli import app

COMMANDS_OF_THE_FOUNDATION = {
    "subscribe", "list", "show", "update", "unsubscribe", "enable", "disable", "export",
    "import", "config show", "config set", "config import-cmk",
}  # fmt: skip


def all_commands() -> dict[str, object]:
    root = typer.main.get_command(app)
    found: dict[str, object] = {}

    def walk(group, prefix: str) -> None:
        for name, cmd in group.commands.items():
            path = f"{prefix}{name}"
            if hasattr(cmd, "commands"):
                walk(cmd, path + " ")
            else:
                found[path] = cmd

    walk(root, "")
    return found


def test_foundation_commands_exist() -> None:
    assert set(all_commands()) >= COMMANDS_OF_THE_FOUNDATION


@pytest.mark.parametrize("command", sorted(all_commands()))
def test_every_command_has_help_with_an_example(cli, command: str) -> None:
    r = cli(*command.split(), "--help")
    assert r.exit_code == 0
    assert "Example" in r.stdout, f"'csnotify {command} --help' has no example"
    assert f"csnotify {command}" in r.stdout.split("Example", 1)[1]


def test_version_and_python_m() -> None:
    r = run_process("--version")
    assert r.exit_code == 0
    assert r.stdout.strip() == f"csnotify {__version__}"
    script = REPO / ".venv" / "bin" / "csnotify"
    exe = str(script) if script.exists() else "csnotify"
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"csnotify {__version__}"


def test_no_arguments_prints_an_overview(cli) -> None:
    r = cli()
    assert r.exit_code == 0
    assert "csnotify subscribe" in r.stdout
    assert "csnotify --help" in r.stdout


def test_usage_error_exit_code(cli) -> None:
    r = cli("subscribe", "VM.*", expect=2)
    assert r.exit_code == 2
    assert "--to" in r.stderr


USAGE_ERRORS = {
    ("--bogus",): "csnotify: error: no such option: --bogus",
    ("lst",): "csnotify: error: no such command 'lst'; did you mean 'list', 'listen'? (see 'csnotify --help')",
    ("show",): "csnotify: error: missing argument 'NAME' (see 'csnotify show --help')",
    ("deliveries", "--limit", "x"): "csnotify: error: invalid value for '--limit'",
    ("subscribe", "VM.*", "--to"): "csnotify: error: option '--to' requires an argument",
    ("config", "nope"): "csnotify: error: no such command 'nope' (see 'csnotify config --help')",
}  # fmt: skip


@pytest.mark.parametrize("args", USAGE_ERRORS, ids=[" ".join(a) for a in USAGE_ERRORS])
def test_click_usage_errors_are_one_line_like_ours(cli, args: tuple[str, ...]) -> None:
    r = cli(*args, expect=2)
    assert r.exit_code == 2
    assert r.stderr.startswith(USAGE_ERRORS[args]), r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert r.stdout == ""


def test_negative_numbers_are_values_not_options(cli) -> None:
    r = cli("config", "set", "failures.disable_after", "-1", expect=2)
    assert r.exit_code == 2 and "must be at least 0, got '-1'" in r.stderr  # a value, refused
    assert cli("config", "set", "cloudstack.api_key", "-dashed-key").exit_code == 0
    assert cli("config", "show", "--json").json()["cloudstack.api_key"] == "-dashed-key"
    cli("subscribe", "VM.*", "--to", "https://h.example/x", "--name", "s")
    r = cli("update", "s", "--max-per-minute", "-1", expect=2)
    assert r.exit_code == 2 and "--max-per-minute '-1'" in r.stderr
    r = cli("deliveries", "--limit", "-5", expect=2)
    assert r.exit_code == 2 and "-5 is not in the range" in r.stderr


HEAVY = ["apprise", "httpx", "aio_pika", "pika", "aiormq", "sqlite_utils", "rich.table", "pymysql",
         "psycopg", "csnotify.servers"]  # fmt: skip
PROBE = """
import json, sys
sys.argv = ["csnotify", *json.loads(sys.argv[1])]
from csnotify.cli import main
try:
    main()
except SystemExit:
    pass
print(json.dumps(sorted(m for m in sys.modules if m in HEAVY)), file=sys.stderr)
""".replace("HEAVY", json.dumps(HEAVY))


@pytest.mark.parametrize("args", [["--help"], ["list"], ["list", "--json"]])
def test_fast_commands_do_not_import_heavy_modules(args, db_file) -> None:
    run_process("subscribe", "VM.*", "--to", "https://h.example/x")
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(args)], capture_output=True, text=True, check=False
    )
    imported = json.loads(proc.stderr.strip().splitlines()[-1])
    assert imported == [], f"csnotify {' '.join(args)} imported {imported}"


def test_piped_output_is_plain_text(db_file) -> None:
    run_process("subscribe", "VM.*", "--to", "https://h.example/x", "--name", "p")
    for env_extra in ({}, {"NO_COLOR": "1"}):
        r = run_process("list", env={**__import__("os").environ, **env_extra})
        assert "\x1b[" not in r.stdout
        assert r.stdout.splitlines()[0].split()[:2] == ["NAME", "PATTERNS"]


def test_terminal_gets_a_rich_table_and_no_color_is_respected(db_file) -> None:
    import os

    import pexpect

    run_process("subscribe", "VM.*", "--to", "https://h.example/x", "--name", "p")
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "100"}
    child = pexpect.spawn(sys.executable, ["-m", "csnotify", "list"], env=env, dimensions=(24, 100))
    child.expect(pexpect.EOF, timeout=30)
    screen = child.before.decode()
    assert "┃" in screen or "│" in screen  # a rich table, drawn with box characters
    assert "\x1b[" in screen  # with colour/bold on a terminal
    env["NO_COLOR"] = "1"
    child = pexpect.spawn(sys.executable, ["-m", "csnotify", "list"], env=env, dimensions=(24, 100))
    child.expect(pexpect.EOF, timeout=30)
    screen = child.before.decode()
    assert "│" in screen or "┃" in screen
    assert "\x1b[" not in screen
