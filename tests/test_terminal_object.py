"""The Terminal object is the CLI's only way to the environment, stdin and the terminal
(as httpie's Environment is): a test swaps it for one made of strings."""

from __future__ import annotations

import ast
import io
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import REPO, Run
from typer import Abort

from csnotify.cli import main
from csnotify.errors import BadInput
from csnotify.exitcodes import ExitCode
from csnotify.output import Terminal

BYPASSES = {"os.environ", "sys.stdin", "sys.stdout", "sys.stderr", "typer.echo", "typer.confirm",
            "typer.prompt", "getpass", "print"}  # fmt: skip
# Where the process's own is still meant: the man page writer (make docs).
ALLOWED = {"manpage.py sys.stdout"}


def test_the_package_reaches_the_environment_and_the_terminal_only_through_it() -> None:
    found = []
    package = REPO / "csnotify"
    for path in sorted(package.rglob("*.py")):
        if path.name == "output.py":  # Terminal itself
            continue
        where = path.relative_to(package).as_posix()
        for node in ast.walk(ast.parse(path.read_text())):
            name = (
                ast.unparse(node)
                if isinstance(node, ast.Attribute)
                else node.names[0].name
                if isinstance(node, ast.Import)
                else node.func.id
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                else None
            )
            if name in BYPASSES and f"{where} {name}" not in ALLOWED:
                found.append(f"{where}:{node.lineno} {name}")
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


def run_main(args: list[str], t: Terminal) -> int:
    """``main`` with a terminal of the test's own, as httpie's tests run ``main(args,
    env=MockEnvironment(...))``; the exit status."""
    with pytest.raises(SystemExit) as done:
        main(args, t)
    return int(done.value.code or 0)


def test_a_command_runs_with_the_terminal_it_is_given(
    tmp_path: Path, cli: Callable[..., Run], capsys: pytest.CaptureFixture[str]
) -> None:
    """The store the terminal's environment names is used (the process's CSNOTIFY_DB is
    left alone), the endpoint is read from its stdin, the table goes to its stdout, errors
    (ours and click's usage errors) to its stderr, and nothing to the process's own."""
    own = tmp_path / "own" / "csnotify.db"
    env = {"CSNOTIFY_DB": str(own), "CSNOTIFY_CONFIG": str(tmp_path / "none.toml"),
           "NO_COLOR": "1"}  # fmt: skip
    t = Terminal(stdout=io.StringIO(), stderr=io.StringIO(),
                 stdin=io.StringIO("https://h.example/hook\n"), environ=env)  # fmt: skip
    assert run_main(["subscribe", "VM.*", "--to", "-", "--name", "mine"], t) == 0
    assert run_main(["list"], t) == 0
    assert run_main(["show", "mine"], t) == 0
    shown = t.stdout.getvalue()  # type: ignore[attr-defined]
    assert shown.startswith("created subscription mine: VM.* -> 1 endpoint(s)\nNAME ")
    assert shown.splitlines()[2].split()[:4] == ["mine", "VM.*", "INFO", "1/1"]
    assert "https://h.example/hook" in shown
    assert own.exists()
    assert cli("list", "--json").json() == []  # the process's store: untouched
    assert run_main(["show", "nobody"], t) == 2
    assert run_main(["list", "--bogus"], t) == 2
    assert run_main(["--nope"], t) == 2
    assert t.stderr.getvalue().splitlines() == [  # type: ignore[attr-defined]
        "csnotify: error: no subscription named 'nobody'; see 'csnotify list'",
        "csnotify: error: no such option: --bogus (see 'csnotify list --help')",
        "csnotify: error: no such option: --nope (see 'csnotify --help')",
    ]
    t.stdout, t.stderr = io.StringIO(), io.StringIO()
    assert run_main(["list", "--help"], t) == 0  # click's own writing too
    assert t.stdout.getvalue().startswith("Usage: csnotify list [OPTIONS]\n")  # type: ignore[attr-defined]
    assert run_main(["token"], t) == 2  # a group without its command: its help, on stderr
    assert t.stderr.getvalue().startswith("Usage: csnotify token [OPTIONS] COMMAND")  # type: ignore[attr-defined]
    assert capsys.readouterr() == ("", "")


class GoneReader(io.StringIO):
    def write(self, text: str) -> int:
        raise BrokenPipeError


def test_a_reader_gone_is_the_given_terminals(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`csnotify list | head -1`: the stdout that broke is the terminal's; the process's
    own stdout is neither written nor pointed at /dev/null."""
    env = {"CSNOTIFY_DB": str(tmp_path / "db"), "CSNOTIFY_CONFIG": str(tmp_path / "none.toml")}
    t = Terminal(stdout=GoneReader(), stderr=io.StringIO(), stdin=io.StringIO(), environ=env)
    assert run_main(["--version"], t) == ExitCode.READER_GONE
    assert run_main(["list", "--json"], t) == ExitCode.READER_GONE
    print("still here")
    assert capsys.readouterr() == ("still here\n", "")


def test_a_cmd_program_gets_its_variables_from_the_environment_given() -> None:
    """The core is handed the environment (here not the process's): a cmd: program gets
    the basic variables and the named ones from it, and nothing else of it."""
    from csnotify.channels.base import Message
    from csnotify.channels.command import CommandChannel
    from csnotify.dispatch import synthetic_event
    from csnotify.models import Endpoint, Subscription

    sub = Subscription("s", ["VM.*"], [Endpoint("cmd:/bin/true")])
    given = {"PATH": "/given/bin", "TZ": "Asia/Tokyo", "HTTPS_PROXY": "http://p.example",
             "LDAP_BIND_PW": "secret"}  # fmt: skip
    event = synthetic_event(sub)
    env = CommandChannel(given, ("HTTPS_PROXY",)).environment(Message(event, sub, "cmd:/bin/true"))
    assert env == {"PATH": "/given/bin", "TZ": "Asia/Tokyo", "HTTPS_PROXY": "http://p.example",
                   "CSNOTIFY_EVENT_TYPE": event.type, "CSNOTIFY_EVENT_ID": event.id,
                   "CSNOTIFY_SUBSCRIPTION": "s"}  # fmt: skip


def test_a_dispatched_cmd_program_gets_the_terminals_variables(tmp_path: Path) -> None:
    """Through the whole pipeline: `dispatch` run with a terminal whose environment (not
    the process's) names a variable in delivery.command_env; the program gets its value."""
    out = tmp_path / "seen"
    hook = tmp_path / "hook.sh"
    hook.write_text(f'#!/bin/sh\nprintf %s "$MY_TOKEN_FILE" > {out}\n')
    hook.chmod(0o755)
    env = {"CSNOTIFY_DB": str(tmp_path / "db"), "CSNOTIFY_CONFIG": str(tmp_path / "none.toml"),
           "CSNOTIFY_DELIVERY_COMMAND_ENV": "MY_TOKEN_FILE", "MY_TOKEN_FILE": "/run/given",
           "PATH": "/usr/bin:/bin"}  # fmt: skip
    line = json.dumps({"id": "ev-1", "type": "VM.START", "created": "2026-11-26T10:00:00Z"})
    t = Terminal(stdout=io.StringIO(), stderr=io.StringIO(), stdin=io.StringIO(line + "\n"),
                 environ=env)  # fmt: skip
    assert run_main(["subscribe", "VM.*", "--to", f"cmd:{hook}", "--name", "hook"], t) == 0
    assert run_main(["dispatch", "-"], t) == 0, t.stderr.getvalue()  # type: ignore[attr-defined]
    assert out.read_text() == "/run/given"


def test_default_store_and_config_follow_the_terminals_home_and_xdg(tmp_path: Path) -> None:
    """Without --db/--config or their variables, the store and the config are where the
    terminal's environment (not the process's) puts them: $XDG_DATA_HOME and
    $XDG_CONFIG_HOME when absolute, else under $HOME."""
    home, xdg = tmp_path / "home", tmp_path / "xdg"
    for env, store, config in (
        ({"HOME": str(home)}, home / ".local/share/csnotify/csnotify.db",
         home / ".config/csnotify/config.toml"),
        ({"HOME": str(home), "XDG_DATA_HOME": str(xdg / "data"),
          "XDG_CONFIG_HOME": str(xdg / "config")},
         xdg / "data/csnotify/csnotify.db", xdg / "config/csnotify/config.toml"),
        ({"HOME": str(home), "XDG_DATA_HOME": "relative"},  # ignored, as XDG says
         home / ".local/share/csnotify/csnotify.db", home / ".config/csnotify/config.toml"),
    ):  # fmt: skip
        t = Terminal(stdout=io.StringIO(), stderr=io.StringIO(), stdin=io.StringIO(),
                     environ=env)  # fmt: skip
        assert run_main(["subscribe", "VM.*", "--to", "https://h.example/", "--name",
                         f"s{len(env)}"], t) == 0  # fmt: skip
        assert run_main(["config", "set", "delivery.timeout", "5"], t) == 0
        assert store.exists() and config.exists(), t.stderr.getvalue()  # type: ignore[attr-defined]


class Found:
    def as_json(self) -> dict[str, str]:
        return {"type": "VM.CREATE", "name": "caf\u00e9\x1b[2J"}


def test_one_renderer_writes_json_json_lines_or_the_commands_words() -> None:
    """--json: the result's as_json() (JSON lines with ``lines``: events, simulate, status
    --watch), else the command's text; escape sequences shown escaped either way."""
    from csnotify.cli.common import AppState, render

    def words(app_state: AppState, result: object) -> None:
        app_state.terminal.out(f"{len(result)} found")  # type: ignore[arg-type]

    outputs = []
    for as_json, lines in ((True, True), (True, False), (False, True), (False, False)):
        t = terminal()
        render(AppState(terminal=t, db=None, config=None), [Found(), {"n": 1}], as_json, words,
               lines=lines)  # fmt: skip
        outputs.append(t.stdout.getvalue())  # type: ignore[attr-defined]
    assert outputs[0] == '{"type":"VM.CREATE","name":"caf\u00e9\\u001b[2J"}\n{"n":1}\n'
    assert outputs[1].startswith('[\n  {\n    "type": "VM.CREATE",\n')
    assert outputs[1].endswith('  {\n    "n": 1\n  }\n]\n')
    assert outputs[2] == outputs[3] == "2 found\n"


def test_status_renders_to_the_terminal_it_is_given(tmp_path: Path) -> None:
    env = {"CSNOTIFY_DB": str(tmp_path / "own.db"), "CSNOTIFY_CONFIG": str(tmp_path / "none")}
    t = Terminal(stdout=io.StringIO(), stderr=io.StringIO(), stdin=io.StringIO(), environ=env)
    assert run_main(["status", "--json"], t) == 0
    report = json.loads(t.stdout.getvalue())  # type: ignore[attr-defined]
    assert report["listeners"] == [] and report["subscriptions"]["total"] == 0
    t.stdout = io.StringIO()
    assert run_main(["status"], t) == 0
    assert t.stdout.getvalue().splitlines() == [  # type: ignore[attr-defined]
        "no listener has run with this store yet", "subscriptions: 0 enabled of 0"]  # fmt: skip
