"""Settings: defaults < config file (TOML) < environment < command-line flags.

The file lives at the XDG config path (``~/.config/csnotify/config.toml``) unless
``--config`` or ``CSNOTIFY_CONFIG`` names another. It may hold API secrets, so it is
written with mode 0600 in a 0700 directory.
"""

from __future__ import annotations

import configparser
import math
import os
import tomllib
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from csnotify import APP_NAME
from csnotify.errors import BadInput, did_you_mean
from csnotify.files import chosen_path, tighten, write_private, xdg_home


@dataclass(frozen=True)
class Setting:
    key: str
    type: type
    default: Any
    help: str
    secret: bool = False
    minimum: float | None = None
    maximum: float | None = None
    check: Callable[[Any], object] | None = None  # raises BadInput for a value it refuses


def _zone(value: Any) -> object:
    from csnotify.servertime import parse_zone

    return parse_zone(value) if str(value).strip() else None


def _schedule(value: Any) -> object:
    from csnotify.events import parse_schedule

    return parse_schedule(str(value), "a wait")


def _max_age(value: Any) -> object:
    from csnotify.events import parse_duration

    if parse_duration(str(value), "the duration").total_seconds() < 60:
        raise BadInput(f"{value!r} would give up deliveries at once; use at least 1m, e.g. 24h")
    return value


def _ttl(value: Any) -> object:
    from csnotify.events import parse_duration

    parse_duration(str(value), "the duration")
    return value


def _alert_levels(value: Any) -> object:
    from csnotify.events import parse_alert_levels

    return parse_alert_levels(str(value))


def _env_names(value: Any) -> object:
    from csnotify.channels import env_names

    return env_names(str(value))


def _networks(value: Any) -> object:
    from csnotify.policy import parse_networks

    return parse_networks(str(value))


def _schemes(value: Any) -> object:
    from csnotify.policy import parse_schemes

    if not parse_schemes(str(value)):
        raise BadInput("give at least one scheme, e.g. https,mailto")
    return value


SETTINGS: dict[str, Setting] = {
    s.key: s
    for s in (
        Setting(
            "cloudstack.url",
            str,
            "http://localhost:8080/client/api",
            "CloudStack API endpoint (listEvents)",
        ),
        Setting("cloudstack.api_key", str, "", "API key of the CloudStack user"),
        Setting("cloudstack.secret_key", str, "", "secret key of the CloudStack user", secret=True),
        Setting(
            "cloudstack.timezone",
            str,
            "",
            "the management server's time zone (e.g. America/New_York, +05:30);"
            " empty: learned from the offsets of the events it returns",
            check=_zone,
        ),
        Setting(
            "cloudstack.verify_tls",
            bool,
            True,
            "check the API's TLS certificate (CloudMonkey's verifycert)",
        ),
        Setting("cloudstack.ca_file", str, "", "CA bundle (PEM) for a private CA of the API"),
        Setting(
            "cloudstack.page_size",
            int,
            500,
            "listEvents page size to start from; lowered to the server's limit when it says so",
            minimum=1,
        ),
        Setting(
            "cloudstack.lookup_timeout",
            float,
            2.0,
            "seconds a bus event may wait for the API to resolve its names (account, user,"
            " resource); past it the event goes out unenriched",
            minimum=0.0,
            maximum=60,
        ),
        Setting(
            "cloudstack.names_ttl",
            str,
            "1h",
            "how long a name resolved through the API is kept (in memory and in the store);"
            " a UUID the API does not know is asked again after a tenth of it",
            check=_ttl,
        ),
        Setting(
            "cloudstack.lookups_in_flight",
            int,
            4,
            "API look-ups for names at once, whatever the rate of bus events",
            minimum=1,
            maximum=64,
        ),
        Setting(
            "cloudstack.alert_levels",
            str,
            "",
            "level per alert type, e.g. ALERT.HOST=ERROR,ALERT.USAGE.*=INFO (default WARN)",
            check=_alert_levels,
        ),
        Setting(
            "cloudstack.max_response_mb",
            int,
            64,
            "an API answer larger than this (MB) is refused rather than held in memory",
            minimum=1,
            maximum=4096,
        ),
        Setting(
            "cloudstack.max_pages",
            int,
            2000,
            "listEvents pages one poll may read; more is refused as a server that never ends",
            minimum=1,
            maximum=1_000_000,
        ),
        Setting(
            "amqp.url",
            str,
            "amqp://guest:guest@127.0.0.1:5672/",
            "RabbitMQ URL of CloudStack's event bus",
            secret=True,
        ),
        Setting(
            "amqp.exchange", str, "cloudstack-events", "topic exchange CloudStack publishes to"
        ),
        Setting("amqp.queue", str, "csnotify", "durable queue shared by all listeners"),
        Setting(
            "amqp.prefetch",
            int,
            100,
            "unacknowledged messages per listener",
            minimum=1,
            maximum=65535,
        ),
        Setting(
            "amqp.max_message_bytes",
            int,
            1024 * 1024,
            "a bus message larger than this is logged, counted as rejected and acknowledged",
            minimum=1024,
            maximum=1024 * 1024 * 1024,
        ),
        Setting(
            "delivery.timeout",
            float,
            10.0,
            "seconds per delivery attempt",
            minimum=0.1,
            maximum=3600,
        ),
        Setting(
            "delivery.retry_schedule",
            str,
            "0s,5s,30s,2m,10m,1h",
            "wait before each attempt of a delivery (the first is usually 0s); kept in the store,"
            " so retries survive a restart. Retry-After is honoured up to the last step",
            check=_schedule,
        ),
        Setting(
            "delivery.max_age",
            str,
            "24h",
            "a delivery still pending this long after its event was accepted is given up",
            check=_max_age,
        ),
        Setting(
            "delivery.per_endpoint",
            int,
            16,
            "deliveries in flight to one endpoint (events of one resource always go in order)",
            minimum=1,
            maximum=1000,
        ),
        Setting(
            "delivery.max_backlog",
            int,
            100_000,
            "pending deliveries kept per endpoint; past it the oldest are given up and counted",
            minimum=1,
            maximum=100_000_000,
        ),
        Setting(
            "delivery.concurrency",
            int,
            64,
            "deliveries in flight at once",
            minimum=1,
            maximum=10000,
        ),
        Setting(
            "delivery.human_max_per_minute",
            int,
            10,
            "messages per minute to an email/SMS/chat endpoint without --max-per-minute;"
            " the rest go out as one digest (0: no limit)",
            minimum=0,
            maximum=10000,
        ),
        Setting(
            "delivery.command_env",
            str,
            "",
            "names of environment variables (comma-separated) that cmd: programs get besides"
            " PATH, HOME, LANG, TZ and CSNOTIFY_EVENT_*; nothing else of csnotify's environment",
            check=_env_names,
        ),
        Setting(
            "failures.disable_after",
            int,
            10,
            "consecutive failed deliveries before an endpoint is switched off (0: never)",
            minimum=0,
            maximum=1_000_000,
        ),
        Setting(
            "failures.notify",
            str,
            "",
            "endpoint URI told when an endpoint is switched off",
            secret=True,
        ),
        Setting(
            "api.allow_schemes",
            str,
            "https,mailto,mailtos",
            "endpoint schemes a subscription made through the API may use (comma-separated;"
            " cmd: never)",
            check=_schemes,
        ),
        Setting(
            "api.allow_networks",
            str,
            "",
            "private networks (CIDRs, comma-separated) that endpoints of API-made"
            " subscriptions may reach; by default only public addresses",
            check=_networks,
        ),
        Setting(
            "api.max_subscriptions",
            int,
            100,
            "subscriptions one owner (account or domain) may make through the API",
            minimum=1,
            maximum=1_000_000,
        ),
        Setting(
            "api.max_endpoints",
            int,
            10,
            "endpoints of one subscription made through the API",
            minimum=1,
            maximum=1000,
        ),
        Setting(
            "api.max_body_bytes",
            int,
            65536,
            "a request body larger than this is refused (413; 431 at /client/api)",
            minimum=1024,
            maximum=16 * 1024 * 1024,
        ),
        Setting(
            "api.rate_limit",
            int,
            600,
            "requests per minute one caller may make (0: no limit); past it the API answers 429",
            minimum=0,
            maximum=1_000_000,
        ),
        Setting(
            "api.auth_cache_ttl",
            float,
            60.0,
            "seconds the user behind a CloudStack API key (getUser, getUserKeys) is kept"
            " before it is asked again",
            minimum=0.0,
            maximum=86400,
        ),
        Setting(
            "log.max_per_endpoint",
            int,
            100,
            "delivery log rows kept per endpoint",
            minimum=1,
            maximum=1_000_000,
        ),
    )
}


def env_name(key: str) -> str:
    """``delivery.timeout`` -> ``CSNOTIFY_DELIVERY_TIMEOUT``."""
    return "CSNOTIFY_" + key.upper().replace(".", "_")


def default_config_path(environ: Mapping[str, str]) -> Path:
    return xdg_home(environ, "XDG_CONFIG_HOME", ".config") / APP_NAME / "config.toml"


def config_path(explicit: str | os.PathLike[str] | None, environ: Mapping[str, str]) -> Path:
    return chosen_path(explicit, environ, "CSNOTIFY_CONFIG", default_config_path)


def lookup(key: str) -> Setting:
    try:
        return SETTINGS[key]
    except KeyError:
        if key in RETIRED:
            raise BadInput(f"setting {key!r} is gone; use {RETIRED[key]} instead") from None
        hint = did_you_mean(key, SETTINGS, 1, quote=False) or "; see 'csnotify config show'"
        raise BadInput(f"unknown setting {key!r}{hint}") from None


def _number(bound: float) -> str:
    """A bound as an operator would write it: 1073741824, not 1.07374e+09."""
    return str(int(bound)) if float(bound).is_integer() else f"{bound:g}"


def coerce(setting: Setting, value: Any, origin: str) -> Any:
    """Turn a string (from env or a flag) or a TOML value into the setting's type."""
    expected = {int: "a whole number", float: "a number", str: "text", bool: "true or false"}[
        setting.type
    ]
    converted: Any
    if setting.type is bool:
        return _boolean(setting, value, expected, origin)
    if isinstance(value, bool):
        raise BadInput(f"{setting.key} expects {expected}, got {value!r} ({origin})")
    try:
        if setting.type is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            converted = int(value)
        elif setting.type is float:
            converted = float(value)
        else:
            if not isinstance(value, str):
                raise ValueError
            converted = value
    except (TypeError, ValueError):
        raise BadInput(f"{setting.key} expects {expected}, got {value!r} ({origin})") from None
    if setting.type is float and not math.isfinite(converted):
        raise BadInput(f"{setting.key} expects a finite number, got {value!r} ({origin})")
    if setting.minimum is not None and converted < setting.minimum:
        raise BadInput(
            f"{setting.key} must be at least {_number(setting.minimum)}, got {value!r} ({origin})"
        )
    if setting.maximum is not None and converted > setting.maximum:
        raise BadInput(
            f"{setting.key} must be at most {_number(setting.maximum)}, got {value!r} ({origin})"
        )
    if setting.key in URL_SETTINGS and converted:
        if not _a_command(setting.key, converted):
            check_url(converted, f"{setting.key} ({origin})", URL_SETTINGS[setting.key])
        elif any(unicodedata.category(c) == "Cc" for c in str(converted)):
            raise BadInput(f"{setting.key} holds a control character ({origin}); remove it")
    if setting.check is not None:
        try:
            setting.check(converted)
        except BadInput as exc:
            raise BadInput(f"{setting.key}: {exc.message} ({origin})") from None
    return converted


# Settings an earlier version had. A config file that still holds one keeps working (the
# value is ignored, with a warning); naming one anywhere else says what replaced it.
RETIRED = {
    "delivery.retries": "delivery.retry_schedule",
    "delivery.backoff": "delivery.retry_schedule",
    "delivery.backoff_max": "delivery.retry_schedule",
}


# setting -> the schemes it takes (failures.notify: any endpoint, checked like --to)
URL_SETTINGS: dict[str, tuple[str, ...]] = {
    "cloudstack.url": ("http", "https"),
    "amqp.url": ("amqp", "amqps"),
    "failures.notify": (),
}


def parse_listen(
    text: str, example: str, default_host: str | None = None, option: str = "--listen"
) -> tuple[str, int]:
    """``--listen HOST:PORT`` (``[::1]:PORT`` for IPv6); without a host, ``default_host``
    if given, else refused. ``option`` names it in the error."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]") or (default_host or "")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise BadInput(f"{option} {text!r}: give HOST:PORT, e.g. {example}")
    return host, int(port)


def _a_command(key: str, value: Any) -> bool:
    """failures.notify may be a ``cmd:`` program line (spaces and all): it is checked as
    ``--to`` checks one (set_value, and where it is used), not as an URL."""
    return key == "failures.notify" and str(value).startswith("cmd:")


def check_url(url: str, what: str, schemes: tuple[str, ...] = ()) -> None:
    """Refuse what cannot be an URL at all: whitespace or control characters in it, or no
    scheme. (Each kind of URL gets its own checks where it is used.)"""
    from csnotify.redact import mask_uri

    bad = next((c for c in url if c.isspace() or unicodedata.category(c) == "Cc"), None)
    if bad is not None:
        raise BadInput(
            f"{what}: {mask_uri(url)!r} contains {bad!r}; an URL has no spaces or control"
            " characters (percent-encode them, e.g. %20)"
        )
    scheme = url.split(":", 1)[0] if ":" in url else ""
    if not scheme or not scheme.isascii():
        raise BadInput(f"{what}: {mask_uri(url)!r} is not an URL (no scheme such as https:)")
    if schemes:
        from urllib.parse import urlsplit

        if scheme.lower() not in schemes:
            raise BadInput(f"{what}: {mask_uri(url)!r} must start with {' or '.join(schemes)}://")
        try:
            host = urlsplit(url).hostname
        except ValueError as exc:
            raise BadInput(f"{what}: {mask_uri(url)!r} is not a valid URL ({exc})") from None
        if not host:
            raise BadInput(f"{what}: {mask_uri(url)!r} names no host")


_BOOLEANS = {"true": True, "yes": True, "on": True, "1": True,
             "false": False, "no": False, "off": False, "0": False}  # fmt: skip


def _boolean(setting: Setting, value: Any, expected: str, origin: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _BOOLEANS:
        return _BOOLEANS[value.strip().lower()]
    raise BadInput(f"{setting.key} expects {expected}, got {value!r} ({origin})")


@dataclass
class Settings:
    values: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    path: Path | None = None
    warnings: list[str] = field(default_factory=list)  # said once by the CLI
    # the environment the settings were read with (cmd: programs take variables from it)
    environ: Mapping[str, str] = field(default_factory=dict)

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    def rows(self, reveal: bool = False) -> list[dict[str, Any]]:
        out = []
        for key, setting in SETTINGS.items():
            value = self.values[key]
            if setting.secret and not reveal:
                value = mask_setting(key, value)
            out.append({"key": key, "value": value, "source": self.sources[key]})
        return out


def mask_setting(key: str, value: Any) -> Any:
    if not value:
        return value
    if key in ("amqp.url", "failures.notify"):  # URIs: only their secret parts are masked
        from csnotify.redact import mask_uri

        return mask_uri(value)
    from csnotify.redact import MASK

    return MASK


def read_file(path: Path) -> dict[str, Any]:
    """The config file as a flat ``{"section.key": value}`` dict ({} if it does not exist)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise BadInput(f"cannot read config file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise BadInput(f"config file {path} is not UTF-8 text (TOML); fix or remove it") from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise BadInput(f"config file {path} is not valid TOML ({exc}); fix or remove it") from None
    flat: dict[str, Any] = {}
    for section, table in doc.items():
        if not isinstance(table, dict):
            raise BadInput(f"config file {path}: {section!r} must be a [section]; fix or remove it")
        for name, value in table.items():
            flat[f"{section}.{name}"] = value
    return flat


def load(
    path: Path,
    environ: Mapping[str, str],
    overrides: Mapping[str, str] | None = None,
) -> Settings:
    """Effective settings with the origin of each value."""
    file_values = read_file(path)
    settings = Settings(path=path, environ=environ)
    if (notice := tighten(path)) is not None:
        settings.warnings.append(notice)
    for key in list(file_values):
        if key in RETIRED:
            del file_values[key]
            settings.warnings.append(
                f"config file {path}: {key} is no longer used; see {RETIRED[key]}"
            )
        elif key not in SETTINGS:
            raise BadInput(
                f"config file {path}: unknown setting {key!r}"
                f"{did_you_mean(key, SETTINGS, 1, quote=False)}"
            )
    for key, replacement in RETIRED.items():
        if env_name(key) in environ:
            settings.warnings.append(f"${env_name(key)} is no longer used; see {replacement}")
    for key, setting in SETTINGS.items():
        value, source = setting.default, "default"
        if key in file_values:
            value, source = coerce(setting, file_values[key], f"in {path}"), "file"
        env = env_name(key)
        if env in environ:
            value, source = coerce(setting, environ[env], f"from ${env}"), "env"
        if overrides and key in overrides:
            value, source = coerce(setting, overrides[key], "from -c"), "flag"
            if setting.secret and holds_secret(key, value):
                settings.warnings.append(
                    f"-c {key}=... puts a secret where ps and shell history show it; use"
                    f" ${env} (e.g. from a systemd EnvironmentFile=) or"
                    f" 'csnotify config set {key} -' (the value on stdin)"
                )
        settings.values[key] = value
        settings.sources[key] = source
    for key in overrides or {}:
        lookup(key)
    return settings


def holds_secret(key: str, value: Any) -> bool:
    """A secret setting's value that is secret: amqp.url and failures.notify only with a
    password, token or credential in them (what masking hides)."""
    if not value:
        return False
    if key in ("amqp.url", "failures.notify"):
        from csnotify.redact import mask_uri

        return mask_uri(str(value)) != value
    return True


def parse_overrides(pairs: list[str]) -> dict[str, str]:
    """``-c KEY=VALUE`` flags into a dict, refusing unknown keys."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise BadInput(f"-c expects KEY=VALUE, got {pair!r}")
        lookup(key.strip())
        out[key.strip()] = value
    return out


def set_value(path: Path, key: str, raw: str, allow_commands: bool = False) -> Any:
    """Write one setting into the config file, keeping the others. Returns the typed value.
    A new ``cmd:`` program for failures.notify needs ``allow_commands``."""
    setting = lookup(key)
    value = coerce(setting, raw, "given to config set")
    flat = read_file(path)
    if key == "failures.notify" and value:  # checked like --to, before it is needed
        from csnotify.channels import validate_endpoint
        from csnotify.redact import mask_uri

        try:
            value = validate_endpoint(value)
        except BadInput as exc:
            raise BadInput(f"failures.notify: {exc.message.removeprefix('--to ')}") from None
        if value.startswith("cmd:") and value != flat.get(key) and not allow_commands:
            raise BadInput(
                f"failures.notify {mask_uri(value)!r} runs a program on this host; check it,"
                " then set it with --allow-commands"
            )
    flat[key] = value
    write(path, flat)
    return value


def write(path: Path, flat: Mapping[str, Any]) -> None:
    import tomli_w

    doc: dict[str, dict[str, Any]] = {}
    for key, value in flat.items():
        section, _, name = key.partition(".")
        doc.setdefault(section, {})[name] = value
    write_private(path, tomli_w.dumps(doc).encode())


@dataclass
class CmkProfile:
    path: Path
    profile: str
    url: str
    api_key: str
    secret_key: str
    verify_tls: bool = True


# go-ini (CloudMonkey 6, apache/cloudstack-cloudmonkey config/config.go) writes the core
# keys before any header, in its DEFAULT section; CloudMonkey 5 (Python) wrote them under
# [core]. Both are read through this one section name.
_CORE = "core"


def _cmk_parser(path: Path) -> configparser.ConfigParser:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BadInput(
            f"CloudMonkey config {path} not found; give its path with --cmk-config"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise BadInput(f"cannot read CloudMonkey config {path}: {reason}") from None
    first = next(
        (ln.strip() for ln in text.splitlines() if ln.strip() and ln.strip()[0] not in "#;"), ""
    )
    if first and not first.startswith("["):
        text = f"[{_CORE}]\n{text}"
    parser = configparser.ConfigParser(interpolation=None, default_section="\x00none")
    try:
        parser.read_string(text, source=str(path))
    except configparser.Error as exc:
        problem = str(exc).splitlines()[0].replace(f"'{path}'", "").strip()
        raise BadInput(f"CloudMonkey config {path} is malformed: {problem}") from None
    return parser


CMK_PATHS = ("~/.cmk/config", "~/.cloudmonkey/config")  # CloudMonkey 6, then 5


def cmk_config_path(explicit: Path | None) -> Path:
    if explicit is not None:
        return explicit.expanduser()
    found = [Path(p).expanduser() for p in CMK_PATHS]
    return next((p for p in found if p.exists()), found[0])


def read_cmk(path: Path, profile: str | None = None) -> CmkProfile:
    """url/apikey/secretkey/verifycert of CloudMonkey's current (or named) profile, from
    CloudMonkey 6 (``~/.cmk/config``) or 5 (``~/.cloudmonkey/config``)."""
    parser = _cmk_parser(path)
    name = profile or parser.get(_CORE, "profile", fallback=None)
    profiles = [s for s in parser.sections() if s != _CORE]
    if not name:
        raise BadInput(f"{path} names no current profile (core key 'profile'); use --profile NAME")
    if not parser.has_section(name) or name == _CORE:
        have = ", ".join(profiles) or "none"
        raise BadInput(f"{path} has no profile {name!r} (profiles: {have}); use --profile NAME")
    section = parser[name]
    missing = [k for k in ("url", "apikey", "secretkey") if not section.get(k, "").strip()]
    if missing:
        raise BadInput(
            f"profile {name!r} in {path} has no {'/'.join(missing)}; set them with"
            f" 'cmk -p {name} set {missing[0]} VALUE' or in the file"
        )
    # verifycert: per profile in newer cmk, a core key in older ones; true unless false.
    verify = section.get("verifycert", parser.get(_CORE, "verifycert", fallback="true"))
    return CmkProfile(
        path=path,
        profile=name,
        url=section["url"].strip(),
        api_key=section["apikey"].strip(),
        secret_key=section["secretkey"].strip(),
        verify_tls=verify.strip().lower() != "false",
    )


def import_cmk(config: Path, cmk: CmkProfile) -> None:
    flat = read_file(config)
    flat["cloudstack.url"] = cmk.url
    flat["cloudstack.api_key"] = cmk.api_key
    flat["cloudstack.secret_key"] = cmk.secret_key
    if cmk.verify_tls:
        flat.pop("cloudstack.verify_tls", None)
    else:
        flat["cloudstack.verify_tls"] = False
    write(config, flat)
