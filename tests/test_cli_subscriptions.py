"""subscribe / list / show / update / unsubscribe / enable / disable through the real CLI
on a real SQLite file."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from helpers import file_digest

HOOK = "https://hooks.example.com/cs"
MAIL = "mailto://alerts:mailpass@localhost:2525?to=ops@example.com"


def test_subscribe_then_list_and_show(cli, db_file: Path) -> None:
    r = cli("subscribe", "VM.*", "--to", HOOK, "--name", "vm-hooks")
    assert r.exit_code == 0, r.stderr
    assert "created subscription vm-hooks" in r.stdout

    listed = cli("list", "--json").json()
    assert [s["name"] for s in listed] == ["vm-hooks"]
    sub = listed[0]
    assert sub["patterns"] == ["VM.*"]
    assert sub["level"] == "INFO"
    assert sub["enabled"] is True
    assert sub["endpoints"][0]["uri"] == HOOK
    assert sub["endpoints"][0]["kind"] == "webhook"
    assert sub["endpoints"][0]["consecutive_failures"] == 0

    shown = cli("show", "vm-hooks", "--json").json()
    assert shown == sub
    text = cli("show", "vm-hooks").stdout
    assert "VM.*" in text and HOOK in text


def test_json_keys_are_stable(cli) -> None:
    cli("subscribe", "VM.*", "--to", HOOK, "--name", "a")
    sub = cli("show", "a", "--json").json()
    assert list(sub) == [
        "name", "enabled", "patterns", "level", "where", "format", "key", "title", "body",
        "group_wait", "categories", "states", "created", "updated", "owner", "endpoints",
    ]  # fmt: skip
    assert list(sub["endpoints"][0]) == [
        "uri", "kind", "enabled", "disabled_reason", "consecutive_failures", "total_failures",
        "total_successes", "last_error", "last_error_at", "last_success_at", "max_per_minute",
        "total_muted", "total_folded", "strict_order", "total_dropped", "warnings", "backlog",
        "oldest_pending", "next_attempt", "pending_error",
    ]  # fmt: skip


def test_all_design_options_are_stored(cli, tmp_path: Path) -> None:
    prog = tmp_path / "hook.sh"
    prog.write_text("#!/bin/sh\ncat >/dev/null\n")
    prog.chmod(0o755)
    r = cli(
        "subscribe", "VM.START", "vm.stop", "--name", "full",
        "--to", HOOK, "--to", MAIL, "--to", f"cmd:{prog} --zone example.org",
        "--key", "my plain secret", "--level", "warn",
        "--where", "account=admin", "--where", "resource_name~^web-",
        "--format", "cloudevents", "--title", "{type} on {resource_name}",
        "--body", "{description:.50}", "--disabled",
    )  # fmt: skip
    assert r.exit_code == 0, r.stderr
    sub = cli("show", "full", "--json", "--reveal").json()
    assert sub["patterns"] == ["VM.START", "vm.stop"]
    assert [e["kind"] for e in sub["endpoints"]] == ["webhook", "apprise", "command"]
    assert sub["level"] == "WARN"
    assert sub["where"] == ["account=admin", "resource_name~^web-"]
    assert sub["format"] == "cloudevents"
    assert sub["key"] == "my plain secret"
    assert sub["key_whsec"] == "whsec_bXkgcGxhaW4gc2VjcmV0"
    assert sub["title"] == "{type} on {resource_name}"
    assert sub["body"] == "{description:.50}"
    assert sub["enabled"] is False


def test_generated_name_is_readable_and_unique(cli) -> None:
    cli("subscribe", "VM.*", "--to", HOOK)
    cli("subscribe", "VM.*", "--to", "https://other.example.com/x")
    cli("subscribe", "VM.*", "--to", HOOK)
    names = [s["name"] for s in cli("list", "--json").json()]
    assert names == [
        "vm-all-to-hooks-example",
        "vm-all-to-hooks-example-2",
        "vm-all-to-other-example",
    ]


def test_key_generate_gives_whsec_secret_shown_once(cli) -> None:
    r = cli("subscribe", "VM.*", "--to", HOOK, "--key", "generate", "--name", "signed")
    assert r.exit_code == 0
    line = next(ln for ln in r.stdout.splitlines() if "whsec_" in ln)
    key = line.split()[-1]
    assert key.startswith("whsec_") and len(key) > 30
    assert key not in cli("list").stdout
    assert key not in cli("show", "signed").stdout
    assert cli("show", "signed", "--reveal", "--json").json()["key"] == key


def test_secrets_masked_in_every_output_form(cli) -> None:
    cli("subscribe", "*", "--to", MAIL, "--to", HOOK, "--key", "topsecretkey", "--name", "s")
    outputs = {
        "list": cli("list").stdout,
        "list --json": cli("list", "--json").stdout,
        "show": cli("show", "s").stdout,
        "show --json": cli("show", "s", "--json").stdout,
        "export": cli("export").stdout,
        "export toml": cli("export", "--format", "toml").stdout,
    }
    for form, text in outputs.items():
        assert "topsecretkey" not in text, form
        assert "mailpass" not in text, form
    assert "********" in outputs["show"]
    revealed = {
        "list --reveal": cli("list", "--json", "--reveal").stdout,
        "show --reveal": cli("show", "s", "--reveal").stdout,
        "export --with-secrets": cli("export", "--with-secrets").stdout,
    }
    for form, text in revealed.items():
        assert "topsecretkey" in text, form
        assert "mailpass" in text, form


def test_rotate_key_shows_new_secret_once(cli) -> None:
    cli("subscribe", "VM.*", "--to", HOOK, "--key", "old-secret", "--name", "r")
    r = cli("update", "r", "--rotate-key")
    assert r.exit_code == 0, r.stderr
    new_key = r.stdout.split()[-1]
    assert new_key.startswith("whsec_")
    assert cli("show", "r", "--json", "--reveal").json()["key"] == new_key
    assert new_key not in cli("show", "r").stdout


def test_update_keeps_counters_of_endpoints_that_stay(cli, db_file: Path) -> None:
    import sqlite3

    cli("subscribe", "VM.*", "--to", HOOK, "--name", "u")
    conn = sqlite3.connect(db_file)
    conn.execute("UPDATE endpoints SET total_successes = 7")
    conn.commit()
    conn.close()
    r = cli("update", "u", "--add-to", "https://b.example.com/", "--pattern", "VOLUME.*",
            "--level", "ERROR", "--where", "account=ops", "--title", "{type}")  # fmt: skip
    assert r.exit_code == 0, r.stderr
    sub = cli("show", "u", "--json").json()
    assert sub["patterns"] == ["VOLUME.*"]
    assert sub["level"] == "ERROR"
    assert sub["where"] == ["account=ops"]
    assert [(e["uri"], e["total_successes"]) for e in sub["endpoints"]] == [
        (HOOK, 7),
        ("https://b.example.com/", 0),
    ]
    cli("update", "u", "--remove-to", HOOK, "--no-where", "--rename", "u2")
    sub = cli("show", "u2", "--json").json()
    assert [e["uri"] for e in sub["endpoints"]] == ["https://b.example.com/"]
    assert sub["where"] == []


def test_enable_disable_subscription_and_endpoint(cli, db_file: Path) -> None:
    import sqlite3

    cli("subscribe", "VM.*", "--to", HOOK, "--to", "https://b.example.com/", "--name", "e")
    assert cli("disable", "e").exit_code == 0
    assert cli("show", "e", "--json").json()["enabled"] is False
    assert cli("disable", "e", "--endpoint", HOOK).exit_code == 0
    eps = cli("show", "e", "--json").json()["endpoints"]
    assert eps[0]["enabled"] is False and eps[0]["disabled_reason"] == "disabled by operator"
    assert eps[1]["enabled"] is True

    conn = sqlite3.connect(db_file)
    conn.execute("UPDATE endpoints SET consecutive_failures = 9, total_failures = 12")
    conn.commit()
    conn.close()
    assert cli("enable", "e", "--endpoint", HOOK).exit_code == 0
    eps = cli("show", "e", "--json").json()["endpoints"]
    assert eps[0]["enabled"] is True and eps[0]["consecutive_failures"] == 0
    assert eps[0]["total_failures"] == 0 and eps[0]["disabled_reason"] is None
    assert eps[1]["consecutive_failures"] == 9  # the other endpoint was not touched
    assert cli("enable", "e").exit_code == 0
    sub = cli("show", "e", "--json").json()
    assert sub["enabled"] is True
    assert all(e["consecutive_failures"] == 0 for e in sub["endpoints"])


def test_unsubscribe(cli) -> None:
    cli("subscribe", "VM.*", "--to", HOOK, "--name", "gone")
    r = cli("unsubscribe", "gone", "--yes")
    assert r.exit_code == 0
    assert cli("list", "--json").json() == []


def test_list_empty_says_how_to_start(cli) -> None:
    r = cli("list")
    assert r.exit_code == 0
    assert r.stdout == ""
    assert "csnotify subscribe" in r.stderr


# -- validation: one line on stderr, exit 2, store byte-identical ------------------------

BAD_SUBSCRIBE = [
    (["", "--to", HOOK], "empty event-type pattern"),
    (["VM..START", "--to", HOOK], "malformed event-type pattern"),
    (["VM START", "--to", HOOK], "malformed event-type pattern"),
    (["VM.*", "--to", HOOK, "--level", "DEBUG"], "unknown level"),
    (["VM.*", "--to", HOOK, "--where", "account"], "malformed --where"),
    (["VM.*", "--to", HOOK, "--where", "=admin"], "field name is missing"),
    (["VM.*", "--to", HOOK, "--where", "colour=blue"], "unknown field 'colour'"),
    (["VM.*", "--to", HOOK, "--where", "resource_name~(["], "invalid regular expression"),
    (["VM.*", "--to", "hooks.example.com/cs"], "not an URI"),
    (["VM.*", "--to", "https://"], "no host"),
    (["VM.*", "--to", "nosuchservice://abc"], "Apprise cannot use this URI"),
    (["VM.*", "--to", "cmd:/nonexistent/program --x"], "not an absolute path to an executable"),
    (["VM.*", "--to", "cmd:"], "no program after 'cmd:'"),
    (["VM.*", "--to", HOOK, "--name", "taken"], "exists"),
    (["VM.*", "--to", HOOK, "--name", "bad name!"], "invalid name"),
    (["VM.*", "--to", HOOK, "--format", "xml"], "unknown format"),
    (["VM.*", "--to", HOOK, "--key", "whsec_not base64!"], "not base64"),
    (["VM.*", "--to", HOOK, "--title", "{raw.__class__}"], "not an event field"),
    (["VM.*", "--to", HOOK, "--title", "{0.__init__}"], "not an event field"),
    (["VM.*", "--to", HOOK, "--body", "{type!r}"], "only plain"),
    (["VM.*", "--to", HOOK, "--to", HOOK], "given twice"),
    (["VM.*", "--to", "https://hooks.example.com/a b"], "contains ' '; an URI has no spaces"),
    (["VM.*", "--to", "ntfy://ntfy.example.com/top\x1bic"], "contains '\\x1b'"),
    (["VM.*", "--to", "cmd:/bin/echo hello\x07"], "contains '\\x07'"),
]


@pytest.mark.parametrize(("args", "message"), BAD_SUBSCRIBE, ids=[m for _, m in BAD_SUBSCRIBE])
def test_bad_subscribe_input_changes_nothing(cli, db_file: Path, args, message) -> None:
    cli("subscribe", "X.*", "--to", HOOK, "--name", "taken", "--key", "k")
    before = file_digest(db_file)
    r = cli("subscribe", *args, expect=2)
    assert r.exit_code == 2
    assert message in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("csnotify: error: ")
    assert "Traceback" not in r.stderr
    assert r.stdout == ""
    assert file_digest(db_file) == before


@pytest.mark.parametrize(
    "args",
    [
        ["show", "vm-hoks"],
        ["update", "vm-hoks", "--level", "ERROR"],
        ["enable", "vm-hoks"],
        ["disable", "vm-hoks"],
        ["unsubscribe", "vm-hoks", "--yes"],
    ],
)
def test_unknown_name_suggests_close_names(cli, db_file: Path, args) -> None:
    cli("subscribe", "VM.*", "--to", HOOK, "--name", "vm-hooks")
    before = file_digest(db_file)
    r = cli(*args, expect=2)
    assert r.exit_code == 2
    assert r.stderr.strip() == (
        "csnotify: error: no subscription named 'vm-hoks'; did you mean 'vm-hooks'?"
    )
    assert file_digest(db_file) == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--level", "LOUD"], "unknown level"),
        (["--to", "nosuch://x"], "Apprise cannot use"),
        (["--where", "nope=1"], "unknown field"),
        (["--rename", "other"], "exists"),
        (["--endpoint-typo"], "no such option"),
        (["--remove-to", "https://not.there/"], "has no endpoint"),
        (["--rotate-key", "--key", "x"], "cannot be combined"),
    ],
)
def test_bad_update_changes_nothing(cli, db_file: Path, args, message) -> None:
    cli("subscribe", "VM.*", "--to", HOOK, "--name", "u")
    cli("subscribe", "VM.*", "--to", HOOK, "--name", "other")
    before = file_digest(db_file)
    r = cli("update", "u", *args, expect=2)
    assert r.exit_code == 2
    assert message in r.stderr
    assert file_digest(db_file) == before


def test_unknown_endpoint_for_enable(cli, db_file: Path) -> None:
    cli("subscribe", "VM.*", "--to", HOOK, "--name", "u")
    r = cli("disable", "u", "--endpoint", "https://elsewhere.example/", expect=2)
    assert r.exit_code == 2
    assert "has no endpoint" in r.stderr


def test_error_messages_mask_uri_secrets(cli) -> None:
    r = cli("subscribe", "VM.*", "--to", "nosuch://user:hunter2@host/x", expect=2)
    assert r.exit_code == 2
    assert "hunter2" not in r.stderr


def test_store_file_and_directory_modes(cli, db_file: Path) -> None:
    assert not db_file.parent.exists()
    cli("subscribe", "VM.*", "--to", HOOK)
    assert stat.S_IMODE(db_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(db_file.parent.stat().st_mode) == 0o700
    for extra in ("-wal", "-shm"):
        side = db_file.with_name(db_file.name + extra)
        if side.exists():
            assert stat.S_IMODE(side.stat().st_mode) == 0o600


def test_db_option_overrides_env(cli, tmp_path: Path, db_file: Path) -> None:
    other = tmp_path / "other" / "x.db"
    assert cli("--db", str(other), "subscribe", "VM.*", "--to", HOOK).exit_code == 0
    assert other.exists()
    assert json.loads(cli("list", "--json").stdout) == []
    assert len(cli("--db", str(other), "list", "--json").json()) == 1
