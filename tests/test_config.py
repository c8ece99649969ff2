"""config show / set / import-cmk, and the precedence flags > env > file > defaults."""

from __future__ import annotations

import stat
import tomllib
from pathlib import Path

import pytest

REQUIRED_KEYS = {
    "cloudstack.url", "cloudstack.api_key", "cloudstack.secret_key", "amqp.url",
    "amqp.exchange", "amqp.queue", "delivery.timeout", "delivery.retry_schedule",
    "delivery.max_age", "delivery.per_endpoint", "delivery.max_backlog",
    "delivery.concurrency", "failures.disable_after", "failures.notify",
    "log.max_per_endpoint",
}  # fmt: skip


def test_show_defaults(cli) -> None:
    r = cli("config", "show", "--json")
    assert r.exit_code == 0, r.stderr
    values = r.json()
    assert set(values) >= REQUIRED_KEYS
    assert values["delivery.timeout"] == 10.0
    assert values["delivery.retry_schedule"] == "0s,5s,30s,2m,10m,1h"
    assert values["delivery.per_endpoint"] == 16
    assert values["failures.disable_after"] == 10
    assert values["log.max_per_endpoint"] == 100
    assert values["amqp.exchange"] == "cloudstack-events"
    assert values["amqp.queue"] == "csnotify"


def test_set_writes_private_toml(cli, config_file: Path) -> None:
    assert not config_file.parent.exists()
    r = cli("config", "set", "delivery.timeout", "2.5")
    assert r.exit_code == 0, r.stderr
    assert stat.S_IMODE(config_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(config_file.parent.stat().st_mode) == 0o700
    assert tomllib.loads(config_file.read_text()) == {"delivery": {"timeout": 2.5}}
    cli("config", "set", "cloudstack.url", "https://cloud.example/client/api")
    doc = tomllib.loads(config_file.read_text())
    assert doc["delivery"]["timeout"] == 2.5  # earlier settings are kept
    assert doc["cloudstack"]["url"] == "https://cloud.example/client/api"
    assert cli("config", "show", "--json").json()["delivery.timeout"] == 2.5


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        (
            "delivery.timout",
            "5",
            "unknown setting 'delivery.timout'; did you mean delivery.timeout?",
        ),
        ("nothing", "5", "unknown setting 'nothing'"),
        ("delivery.per_endpoint", "three", "delivery.per_endpoint expects a whole number"),
        ("delivery.per_endpoint", "2.5", "delivery.per_endpoint expects a whole number"),
        ("delivery.timeout", "fast", "delivery.timeout expects a number"),
        ("delivery.concurrency", "0", "must be at least 1"),
        ("delivery.timeout", "inf", "delivery.timeout expects a finite number"),
        ("delivery.timeout", "nan", "delivery.timeout expects a finite number"),
        ("delivery.per_endpoint", "99999999999999", "delivery.per_endpoint must be at most 1000"),
        ("delivery.timeout", "1e300", "delivery.timeout must be at most 3600"),
        ("api.max_body_bytes", "99999999999", "api.max_body_bytes must be at most 16777216,"),
        (
            "amqp.max_message_bytes",
            "2000000000",
            "amqp.max_message_bytes must be at most 1073741824,",
        ),
        ("failures.notify", "nosuch://x", "failures.notify: 'nosuch://x': Apprise cannot use"),
        ("failures.notify", "cmd:/no/such/program", "not an absolute path to an executable"),
        ("cloudstack.url", "http://cloud example/api", "contains ' '; an URL has no spaces"),
        ("cloudstack.url", "http://cloud\x1b[2J/api", "contains '\\x1b'"),
        ("amqp.url", "amqp://cs:pw@host\n/", "contains '\\n'"),
        ("amqp.url", "localhost", "is not an URL (no scheme"),
        ("amqp.url", "http://rabbit.example/", "must start with amqp or amqps://"),
        ("cloudstack.url", "ftp://cloud.example/", "must start with http or https://"),
        ("cloudstack.url", "https:///client/api", "names no host"),
    ],
)
def test_set_refuses_unknown_keys_and_wrong_types(cli, config_file: Path, key, value, message):
    cli("config", "set", "amqp.queue", "q1")
    before = config_file.read_bytes()
    r = cli("config", "set", key, value, expect=2)
    assert r.exit_code == 2
    assert message in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert config_file.read_bytes() == before


@pytest.mark.parametrize("command", [["list"], ["config", "show"], ["mutes"]])
def test_a_bad_dash_c_is_refused_by_every_command(cli, command: list[str]) -> None:
    """Also by those that read no settings (list went on, exit 0, break-it run)."""
    for flag, said in (("nope=1", "unknown setting 'nope'"), ("bogus", "-c expects KEY=VALUE")):
        r = cli("-c", flag, *command, expect=2)
        assert said in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_precedence_flag_over_env_over_file_over_default(cli) -> None:
    cli("config", "set", "delivery.per_endpoint", "5")
    cli("config", "set", "delivery.timeout", "4")
    cli("config", "set", "amqp.queue", "from-file")
    env = {"CSNOTIFY_DELIVERY_TIMEOUT": "6", "CSNOTIFY_AMQP_QUEUE": "from-env"}
    r = cli("-c", "amqp.queue=from-flag", "config", "show", "--json", env=env)
    values = r.json()
    assert values["delivery.concurrency"] == 64  # default
    assert values["delivery.per_endpoint"] == 5  # file
    assert values["delivery.timeout"] == 6.0  # env beats file
    assert values["amqp.queue"] == "from-flag"  # flag beats env
    text = cli("-c", "amqp.queue=from-flag", "config", "show", env=env).stdout
    rows = {line.split()[0]: line.split()[-1] for line in text.splitlines()[1:]}
    assert rows["delivery.concurrency"] == "default"
    assert rows["delivery.per_endpoint"] == "file"
    assert rows["delivery.timeout"] == "env"
    assert rows["amqp.queue"] == "flag"


def test_bad_env_value_is_one_line_error(cli) -> None:
    r = cli("config", "show", env={"CSNOTIFY_DELIVERY_PER_ENDPOINT": "lots"}, expect=2)
    assert r.exit_code == 2
    assert (
        "delivery.per_endpoint expects a whole number, got 'lots'"
        " (from $CSNOTIFY_DELIVERY_PER_ENDPOINT)" in r.stderr
    )


def test_config_path_option(cli, tmp_path: Path) -> None:
    other = tmp_path / "elsewhere.toml"
    assert cli("--config", str(other), "config", "set", "amqp.queue", "x").exit_code == 0
    assert tomllib.loads(other.read_text()) == {"amqp": {"queue": "x"}}


def test_secret_settings_are_masked(cli) -> None:
    cli("config", "set", "cloudstack.secret_key", "S3cretValue")
    r = cli("config", "set", "amqp.url", "amqp://cs:brokerpw@127.0.0.1:5672/")
    assert "brokerpw" not in r.stdout and "S3cretValue" not in r.stdout
    for args in (("config", "show"), ("config", "show", "--json")):
        out = cli(*args).stdout
        assert "S3cretValue" not in out and "brokerpw" not in out
        assert "amqp://cs:********@127.0.0.1:5672/" in out
    revealed = cli("config", "show", "--json", "--reveal").json()
    assert revealed["cloudstack.secret_key"] == "S3cretValue"


CMK = """[core]
prompt = cmk>
asyncblock = true
profile = prod

[localcloud]
url = http://localhost:8080/client/api
apikey =
secretkey =

[prod]
url = https://cloud.example.org/client/api
username = admin
apikey = AbCdEfGh123
secretkey = SecretKeyXyz
timeout = 1800
"""


# CloudMonkey 6 as go-ini writes it (apache/cloudstack-cloudmonkey config/config.go): the
# core keys in the default section, without a header, then one section per profile.
CMK6 = """prompt       = 🐱
asyncblock   = true
timeout      = 1800
output       = json
verifycert   = true
profile      = prod
autocomplete = true

[localcloud]
url       = http://localhost:8080/client/api
username  = admin
password  = password
domain    = /
apikey    =
secretkey =
verifycert = true

[prod]
url       = https://cloud.example.org/client/api
username  = admin
password  = password
domain    = /
apikey    = AbCdEfGh123
secretkey = SecretKeyXyz
verifycert = false

[lab]
url       = https://lab.example.org/client/api
apikey    = LabKey
secretkey = LabSecret
"""


def test_import_cmk6_headerless_core_and_profiles(cli, config_file: Path) -> None:
    cmk = Path.home() / ".cmk" / "config"
    cmk.parent.mkdir()
    cmk.write_text(CMK6)
    r = cli("config", "import-cmk")
    assert r.exit_code == 0, r.stderr
    assert "verify_tls = false" in r.stdout + r.stderr
    doc = tomllib.loads(config_file.read_text())
    assert doc["cloudstack"] == {
        "url": "https://cloud.example.org/client/api",
        "api_key": "AbCdEfGh123",
        "secret_key": "SecretKeyXyz",
        "verify_tls": False,
    }
    assert cli("config", "show", "--json").json()["cloudstack.verify_tls"] is False
    r = cli("config", "import-cmk", "--profile", "lab")
    assert r.exit_code == 0, r.stderr
    doc = tomllib.loads(config_file.read_text())
    assert doc["cloudstack"]["api_key"] == "LabKey" and "verify_tls" not in doc["cloudstack"]
    r = cli("config", "import-cmk", "--profile", "nope", expect=2)
    assert r.exit_code == 2
    assert "no profile 'nope' (profiles: localcloud, prod, lab)" in r.stderr


def test_import_cmk5_from_the_old_path(cli, config_file: Path) -> None:
    old = Path.home() / ".cloudmonkey" / "config"
    old.parent.mkdir()
    old.write_text(CMK)
    r = cli("config", "import-cmk")
    assert r.exit_code == 0, r.stderr
    assert str(old) in r.stdout + r.stderr
    assert tomllib.loads(config_file.read_text())["cloudstack"]["api_key"] == "AbCdEfGh123"


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("[prod\nurl = x\n", "is malformed"),
        ("profile = prod\n[prod]\nurl = a\nurl = b\n", "is malformed"),
        (b"\xff\xfeprofile = prod\n", "not UTF-8 text"),
        (None, "Is a directory"),
    ],
)
def test_malformed_or_unreadable_cmk_config_is_one_line_exit_2(
    cli, config_file: Path, tmp_path: Path, content: str | bytes | None, problem: str
) -> None:
    cmk = tmp_path / "cmkconfig"
    if content is None:
        cmk.mkdir()
    elif isinstance(content, bytes):
        cmk.write_bytes(content)
    else:
        cmk.write_text(content)
    r = cli("config", "import-cmk", "--cmk-config", str(cmk), expect=2)
    assert r.exit_code == 2
    (line,) = r.stderr.strip().splitlines()
    assert str(cmk) in line and problem in line
    assert not config_file.exists()


def test_import_cmk_current_profile(cli, config_file: Path, tmp_path: Path) -> None:
    cmk = Path.home() / ".cmk" / "config"
    cmk.parent.mkdir()
    cmk.write_text(CMK)
    r = cli("config", "import-cmk")
    assert r.exit_code == 0, r.stderr
    assert "SecretKeyXyz" not in r.stdout
    doc = tomllib.loads(config_file.read_text())
    assert doc["cloudstack"] == {
        "url": "https://cloud.example.org/client/api",
        "api_key": "AbCdEfGh123",
        "secret_key": "SecretKeyXyz",
    }
    assert stat.S_IMODE(config_file.stat().st_mode) == 0o600


def test_import_cmk_named_profile_without_keys_is_refused(cli, config_file: Path, tmp_path):
    cmk = tmp_path / "cmkconfig"
    cmk.write_text(CMK)
    r = cli("config", "import-cmk", "--cmk-config", str(cmk), "--profile", "localcloud", expect=2)
    assert r.exit_code == 2
    assert "has no apikey/secretkey" in r.stderr
    assert not config_file.exists()
    r = cli("config", "import-cmk", "--cmk-config", str(cmk), "--profile", "nope", expect=2)
    assert r.exit_code == 2 and "no profile 'nope'" in r.stderr
    r = cli("config", "import-cmk", "--cmk-config", str(tmp_path / "missing"), expect=2)
    assert r.exit_code == 2 and "not found" in r.stderr


def test_secrets_can_come_from_stdin_not_the_command_line(cli, config_file: Path) -> None:
    r = cli("config", "set", "cloudstack.secret_key", "-", input="FromStdinSecret\n")
    assert r.exit_code == 0, r.stderr
    assert "FromStdinSecret" not in r.stdout
    assert tomllib.loads(config_file.read_text())["cloudstack"]["secret_key"] == "FromStdinSecret"
    r = cli(
        "subscribe",
        "VM.*",
        "--to",
        "https://h.example/x",
        "--name",
        "k",
        "--key",
        "-",
        input="stdin-key\n",
    )
    assert r.exit_code == 0, r.stderr
    assert cli("show", "k", "--json", "--reveal").json()["key"] == "stdin-key"
    assert cli("config", "set", "cloudstack.secret_key", "-", input="", expect=2).exit_code == 2


def test_unreadable_and_unwritable_files_are_one_line_errors(cli, tmp_path: Path) -> None:
    binary = tmp_path / "binary"
    binary.write_bytes(bytes(range(256)) * 4)
    cases = {
        "not UTF-8 text (TOML)": ["--config", str(binary), "config", "show"],
        "CloudMonkey config": ["config", "import-cmk", "--cmk-config", str(binary)],
        "cannot read config file": ["--config", f"{binary}/config.toml", "config", "show"],
        "Is a directory": ["--config", str(tmp_path), "config", "show"],
        # /proc takes no new files, not even from root
        "cannot write /proc/csnotify-test.toml": ["--config", "/proc/csnotify-test.toml",
                                                  "config", "set", "amqp.queue", "q"],
    }  # fmt: skip
    for message, args in cases.items():
        r = cli(*args, expect=2)
        assert r.exit_code == 2, (args, r.stderr)
        assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("config", "set", "delivery.retry_schedule", "0s,99999999999d"),
        ("mute", "s", "--for", "99999999d", "--reason", "x"),
        ("redeliver", "s", "--since", "99999999d"),
    ],
    ids=["retry_schedule", "mute --for", "redeliver --since"],
)
def test_a_duration_out_of_range_is_bad_input_not_a_crash(cli, args: tuple[str, ...]) -> None:
    cli("subscribe", "*", "--to", "https://h.example/x", "--name", "s")
    before = cli("export").stdout
    r = cli(*args, expect=2)
    assert r.exit_code == 2, r.stderr
    assert "at most 3650d" in r.stderr and "internal error" not in r.stderr
    assert cli("export").stdout == before
