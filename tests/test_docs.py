"""The man page and the completion scripts are generated from the CLI, checked in, and kept
in step with it; the man page renders cleanly; names complete from the store."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
from helpers import REPO, run_process

from csnotify.manpage import render

SECTIONS = ["NAME", "SYNOPSIS", "DESCRIPTION", "COMMANDS", "ENDPOINTS", "SIGNING", "FILES",
            "ENVIRONMENT", "EXIT STATUS", "EXAMPLES", "SEE ALSO"]  # fmt: skip


def test_man_page_is_current() -> None:
    checked_in = (REPO / "man" / "csnotify.1").read_text()
    assert checked_in == render(), "man/csnotify.1 is stale: run 'make docs'"


def test_man_page_has_the_sections_and_every_command() -> None:
    text = render()
    headings = [line[4:].strip('"') for line in text.splitlines() if line.startswith(".SH ")]
    assert headings == SECTIONS
    from test_cli_meta import all_commands

    for command in all_commands():
        assert f'.SS "{command.replace("-", chr(92) + "-")}"' in text, command


@pytest.mark.skipif(shutil.which("groff") is None, reason="groff not installed")
def test_man_page_renders_without_warnings() -> None:
    out = subprocess.run(
        ["groff", "-ww", "-z", "-man", str(REPO / "man" / "csnotify.1")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0 and out.stderr == "", out.stderr


@pytest.mark.parametrize(
    ("shell", "name"), [("bash", "csnotify.bash"), ("zsh", "_csnotify"), ("fish", "csnotify.fish")]
)
def test_completion_scripts_are_current(shell: str, name: str) -> None:
    r = run_process("completion", shell)
    assert r.exit_code == 0
    assert (REPO / "completions" / name).read_text() == r.stdout, (
        f"completions/{name} is stale: run 'make docs'"
    )


def test_unknown_shell() -> None:
    r = run_process("completion", "tcsh")
    assert r.exit_code == 2 and "unknown shell" in r.stderr


def complete(words: str, cword: int) -> list[str]:
    env = {
        **os.environ,
        "_CSNOTIFY_COMPLETE": "complete_bash",
        "COMP_WORDS": words,
        "COMP_CWORD": str(cword),
    }
    out = subprocess.run(
        [sys.executable, "-m", "csnotify"], env=env, capture_output=True, text=True, check=False
    )
    return out.stdout.split()


def test_names_and_commands_complete(db_file) -> None:
    for name in ("vm-hooks", "vm-mail", "alerts"):
        assert (
            run_process(
                "subscribe", "VM.*", "--to", "https://h.example/x", "--name", name
            ).exit_code
            == 0
        )
    assert complete("csnotify show vm", 2) == ["vm-hooks", "vm-mail"]
    assert complete("csnotify enable a", 2) == ["alerts"]
    assert "subscribe" in complete("csnotify sub", 1)
    assert "--format" in complete("csnotify subscribe --for", 2)


def test_values_complete(db_file) -> None:
    secret_uri = "smseagle://eagletoken0042@127.0.0.1:9/+15551230000"
    for args in (["subscribe", "VM.*", "--to", "https://h.example/a", "--to", secret_uri,
                  "--name", "pager"],
                 ["subscribe", "VM.*", "--to", "https://other.example/b", "--name", "other"],
                 ["mute", "pager", "--for", "1h", "--reason", "x"],
                 ["mute", "other", "--for", "1h", "--reason", "y"]):  # fmt: skip
        assert run_process(*args).exit_code == 0
    assert run_process("unmute", "1").exit_code == 0
    assert complete("csnotify subscribe VM.* --level ", 4) == ["INFO", "WARN", "ERROR"]
    assert complete("csnotify match VM.START --level E", 4) == ["ERROR"]
    assert complete("csnotify update pager --format c", 4) == ["cloudevents", "cloudstack"]
    assert complete("csnotify export --format ", 3) == ["json", "toml"]
    assert complete("csnotify listen --source ", 3) == ["api", "amqp", "stdin"]
    assert complete("csnotify completion ", 2) == ["bash", "zsh", "fish"]
    assert complete("csnotify config set delivery.re", 3) == ["delivery.retry_schedule"]
    assert complete("csnotify unmute ", 2) == ["2"]  # mute 1 has ended
    # endpoints of the subscription on the line, masked as list shows them
    assert complete("csnotify disable pager --endpoint ", 4) == [
        "https://h.example/a",
        "smseagle://********@127.0.0.1:9/+15551230000",
    ]
    assert complete("csnotify enable other --endpoint ", 4) == ["https://other.example/b"]
    assert complete("csnotify update pager --remove-to sms", 4) == [
        "smseagle://********@127.0.0.1:9/+15551230000"
    ]


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash not installed")
def test_bash_completion_script_loads(tmp_path) -> None:
    script = REPO / "completions" / "csnotify.bash"
    out = subprocess.run(
        ["bash", "-c", f"source {script} && complete -p csnotify"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert "-F _csnotify_completion csnotify" in out.stdout


def test_nothing_reads_outside_the_repository() -> None:
    """A fresh clone has nothing beside it: no code, test or bench may reach into the
    steering directory next to the checkout (samples live in tests/fixtures, the design
    in docs/)."""
    sibling = "/".join(("..", "shared"))  # spelled apart: this file names no path outside
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    offenders = [
        name
        for name in tracked
        if name.endswith((".py", "Makefile", ".ci/run", ".toml"))
        and name != "tests/test_docs.py"
        and (sibling in (text := (REPO / name).read_text()) or '"shared" /' in text)
    ]
    assert offenders == []
