"""export / import: JSON and TOML, idempotent by name, all-or-nothing."""

from __future__ import annotations

import json
import stat
import tomllib
from pathlib import Path

import pytest
from helpers import file_digest

HOOK = "https://hooks.example.com/cs"


def _populate(cli) -> None:
    cli(
        "subscribe",
        "VM.*",
        "--to",
        HOOK,
        "--key",
        "k-one",
        "--name",
        "one",
        "--where",
        "account=admin",
    )
    cli("subscribe", "*", "--level", "ERROR", "--to", "mailto://u:pw@localhost:2525?to=a@b.example",
        "--name", "two", "--title", "{type} failed", "--disabled")  # fmt: skip
    cli("disable", "one", "--endpoint", HOOK)


def _comparable(subs: list[dict]) -> list[dict]:
    for s in subs:
        s.pop("created"), s.pop("updated")
    return subs


@pytest.mark.parametrize("fmt", ["json", "toml"])
def test_round_trip_into_a_fresh_store(cli, tmp_path: Path, fmt: str) -> None:
    _populate(cli)
    out = tmp_path / f"subs.{fmt}"
    r = cli("export", "--format", fmt, "--with-secrets", "-o", str(out))
    assert r.exit_code == 0, r.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    original = _comparable(cli("list", "--json", "--reveal").json())

    fresh = tmp_path / "fresh.db"
    r = cli("--db", str(fresh), "import", str(out), "--json")
    assert r.exit_code == 0, r.stderr
    assert r.json() == {"created": ["one", "two"], "replaced": [], "unchanged": [], "skipped": []}
    copied = _comparable(cli("--db", str(fresh), "list", "--json", "--reveal").json())
    assert copied == original

    again = cli("--db", str(fresh), "import", str(out), "--json").json()
    assert again == {"created": [], "replaced": [], "unchanged": ["one", "two"], "skipped": []}


def test_export_formats_parse(cli) -> None:
    _populate(cli)
    doc = json.loads(cli("export").stdout)
    assert doc["csnotify_export"] == 1
    assert [s["name"] for s in doc["subscriptions"]] == ["one", "two"]
    assert doc["subscriptions"][0]["key"] == "********"
    tdoc = tomllib.loads(cli("export", "--format", "toml").stdout)
    assert tdoc["subscriptions"][1]["title"] == "{type} failed"


def test_import_skips_differing_unless_replace(cli, tmp_path: Path) -> None:
    _populate(cli)
    path = tmp_path / "subs.json"
    path.write_text(cli("export", "--with-secrets").stdout)
    cli("update", "one", "--level", "WARN")
    r = cli("import", str(path))
    assert r.exit_code == 0
    assert "skipped: one" in r.stdout and "--replace" in r.stderr
    assert cli("show", "one", "--json").json()["level"] == "WARN"
    r = cli("import", str(path), "--replace", "--json")
    assert r.json()["replaced"] == ["one"]
    assert cli("show", "one", "--json").json()["level"] == "INFO"


def test_import_from_stdin(cli, tmp_path: Path) -> None:
    _populate(cli)
    text = cli("export", "--with-secrets", "--format", "toml").stdout
    r = cli("--db", str(tmp_path / "b.db"), "import", "-", input=text)
    assert r.exit_code == 0, r.stderr
    assert "created: one, two" in r.stdout


EP = [{"uri": "https://a.example/"}]


def _doc(*subs: dict) -> str:
    return json.dumps({"subscriptions": list(subs)})


BAD_FILES = {
    "not json or toml": "{{{ nope",
    "no subscriptions list": '{"hello": 1}',
    "bad pattern": _doc(
        {"name": "ok", "patterns": ["A.*"], "endpoints": EP},
        {"name": "bad", "patterns": ["A..B"], "endpoints": EP},
    ),
    "unknown key": _doc({"name": "x", "patterns": ["A"], "colour": 1, "endpoints": EP}),
    "masked key": _doc({"name": "x", "patterns": ["A"], "key": "********", "endpoints": EP}),
    "duplicate names": _doc(
        {"name": "x", "patterns": ["A"], "endpoints": EP},
        {"name": "x", "patterns": ["B"], "endpoints": EP},
    ),
    "no endpoints": _doc({"name": "x", "patterns": ["A"], "endpoints": []}),
    "bad uri": _doc({"name": "x", "patterns": ["A"], "endpoints": [{"uri": "nosuch://x"}]}),
    "newer format": json.dumps({"csnotify_export": 2, "subscriptions": []}),
    "format not a number": json.dumps({"csnotify_export": "1", "subscriptions": []}),
}


@pytest.mark.parametrize("content", BAD_FILES.values(), ids=BAD_FILES.keys())
def test_bad_file_imports_nothing(cli, tmp_path: Path, db_file: Path, content: str) -> None:
    cli("subscribe", "VM.*", "--to", HOOK, "--name", "existing")
    before = file_digest(db_file)
    path = tmp_path / "bad.json"
    path.write_text(content)
    r = cli("import", str(path), expect=2)
    assert r.exit_code == 2
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert file_digest(db_file) == before


def test_masked_export_cannot_be_imported(cli, tmp_path: Path) -> None:
    _populate(cli)
    path = tmp_path / "masked.json"
    path.write_text(cli("export").stdout)
    r = cli("--db", str(tmp_path / "b.db"), "import", str(path), expect=2)
    assert r.exit_code == 2
    assert "--with-secrets" in r.stderr


def test_hostile_files_are_one_line_errors(cli, tmp_path: Path, db_file: Path) -> None:
    cli("subscribe", "VM.*", "--to", HOOK, "--name", "existing")
    before = file_digest(db_file)
    for content in ("[" * 50_000, '{"subscriptions": [' + "9" * 5000 + "]}", "\x00\x01binary"):
        path = tmp_path / "hostile"
        path.write_text(content)
        r = cli("import", str(path), expect=2)
        assert r.exit_code == 2
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert file_digest(db_file) == before


def test_export_into_a_missing_directory_is_refused(cli, tmp_path: Path) -> None:
    cli("subscribe", "VM.*", "--to", HOOK, "--name", "existing")
    r = cli("export", "-o", str(tmp_path / "no" / "such" / "dir" / "x.json"), expect=2)
    assert r.exit_code == 2 and "directory" in r.stderr and "does not exist" in r.stderr
    assert not (tmp_path / "no").exists()
