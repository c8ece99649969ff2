"""Shared fixtures: every test gets its own store, config and home directory."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import Run
from typer.testing import CliRunner

from csnotify.cli import app

# Whole files that start the CLI as processes, services or terminals for most of their
# tests: `pytest -m "not slow"` leaves them out (`make test` runs everything).
SLOW_FILES = {
    "test_api_faults.py", "test_api_realities.py", "test_bus_events.py", "test_concurrency.py",
    "test_contrib.py", "test_crash.py", "test_demo.py", "test_docs.py", "test_fuzz.py",
    "test_listen.py", "test_outbox.py",
    "test_operator.py", "test_pipes.py", "test_readme.py", "test_simulator.py",
    "test_status.py", "test_terminal.py",
}  # fmt: skip
# Tests elsewhere that take seconds: processes, timeouts waited out, many examples.
SLOW_TESTS = {
    "test_cli_export.py::test_round_trip_into_a_fresh_store",
    "test_cli_meta.py::test_fast_commands_do_not_import_heavy_modules",
    "test_cli_meta.py::test_version_and_python_m",
    "test_delivery.py::test_a_slow_endpoint_does_not_hold_up_the_others",
    "test_delivery.py::test_control_characters_never_reach_the_terminal",
    "test_delivery.py::test_huge_and_trickling_responses_do_not_hold_up_delivery",
    "test_delivery.py::test_tls_errors_are_counted",
    "test_delivery.py::test_trickling_response_times_out_and_others_go_on",
    "test_http_client.py::test_an_error_status_counts_even_when_its_body_stalls",
    "test_http_client.py::test_every_framing_of_a_2xx_is_a_delivery",
    "test_match.py::test_match_and_dry_run_show_muted_endpoints",
    "test_matching.py::test_index_agrees_with_brute_force",
    "test_secrets.py::test_no_secret_in_any_output",
    "test_security.py::test_a_background_child_holding_stderr_does_not_turn_success_into_timeout",
    "test_security.py::test_a_hostile_api_is_bounded",
    "test_security.py::test_apprise_endpoints_of_api_made_subscriptions_do_not_follow_redirects",
    "test_security.py::test_cmd_program_gets_a_minimal_environment_and_no_inherited_descriptor",
    "test_security.py::test_cmd_stderr_flood_keeps_only_its_tail",
    "test_security.py::test_import_asks_on_a_terminal_before_new_programs",
    "test_store.py::test_concurrent_subscribes_wait_for_a_held_write_lock",
    "test_store.py::test_default_path_follows_xdg",
    "test_store.py::test_every_command_that_creates_the_store_makes_it_private",
    "test_store.py::test_two_processes_never_claim_the_same_pending_row",
}
SERVER_MARKS = {"mysql": "mariadb", "postgresql": "postgresql"}
# The longest tests, longest first (15 s to a minute each, mostly waiting on timers,
# processes and services). They run first, then the other slow ones, each followed by a
# quick one while quick ones last: with --maxschedchunk 1 (make test) xdist hands tests
# out one at a time in this order, a worker holding the next one while it runs one, so
# no long test starts when the other workers are nearly done, the test a worker holds
# behind a long one is a quick one, and the quick ones left fill the gaps at the end.
LONGEST = [
    "test_operator.py::test_storm_to_limited_email_sms_and_webhooks_gives_a_handful_of_messages",
    "test_crash.py::test_amqp_sigkill_loses_nothing",
    "test_concurrency.py::test_concurrent_changes_while_listening",
    "test_readme.py::test_readme_console_block_runs",
    "test_listeners.py::test_each_listeners_group_for_one_endpoint_is_sent_even_if_one_is_killed",
    "test_bus_events.py::test_a_projects_events_are_named_as_listevents_names_them",
    "test_outbox.py::test_a_retry_survives_a_restart_with_the_same_webhook_id",
    "test_listeners.py::test_a_killed_listeners_claimed_deliveries_are_finished_by_the_other",
    "test_bus_events.py::test_two_operations_off_the_bus_named_typed_and_once_each",
    "test_terminal.py::test_status_watch_accounts_for_every_subscription_on_a_small_terminal",
    "test_listeners.py::test_failures_are_counted_once_for_all_listeners",
    "test_bus_events.py::test_listen_says_once_that_name_filters_need_api_keys_on_the_bus",
    "test_demo.py::test_demo_on_the_event_bus",
    "test_api_realities.py::test_across_the_end_of_dst_nothing_is_lost_or_repeated",
    "test_crash.py::test_api_sigkill_loses_nothing",
    "test_api_faults.py::test_api_faults_back_off_and_lose_nothing",
]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test for what it needs: a RabbitMQ broker (the ``bus`` fixture), a
    database server (a ``backend``, ``server_db`` or ``kind`` of mysql or postgresql), and
    ``slow`` for those and for the end-to-end files above; then order them for xdist,
    longest first (LONGEST)."""
    for item in items:
        needs = set()
        if "bus" in getattr(item, "fixturenames", ()):
            needs.add("rabbitmq")
        params = getattr(getattr(item, "callspec", None), "params", {})
        for name in ("backend", "server_db", "kind"):
            if params.get(name) in SERVER_MARKS:
                needs.add(SERVER_MARKS[params[name]])
        needs.update(m.name for m in item.iter_markers() if m.name in {"rabbitmq", "slow"})
        slow_test = f"{item.path.name}::{getattr(item, 'originalname', item.name)}"
        if needs or item.path.name in SLOW_FILES or slow_test in SLOW_TESTS:
            needs.add("slow")
        for mark in sorted(needs):
            item.add_marker(mark)

    rank = {name: i for i, name in enumerate(LONGEST)}

    def longest_first(item: pytest.Item) -> int:
        name = f"{item.path.name}::{getattr(item, 'originalname', item.name)}"
        return rank.get(name, len(LONGEST))

    slow = sorted((i for i in items if i.get_closest_marker("slow")), key=longest_first)
    quick = [i for i in items if not i.get_closest_marker("slow")]
    pairs = itertools.zip_longest(slow, quick)  # sorted() is stable: files keep their order
    items[:] = [item for pair in pairs for item in pair if item is not None]


@pytest.fixture(autouse=True)
def private_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the store, config, XDG dirs and HOME at a temporary folder."""
    for name in list(os.environ):
        if name.startswith("CSNOTIFY_") or name == "NO_COLOR":
            monkeypatch.delenv(name)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / ".local" / "share"))
    monkeypatch.setenv("CSNOTIFY_DB", str(tmp_path / "state" / "csnotify.db"))
    monkeypatch.setenv("CSNOTIFY_CONFIG", str(tmp_path / "etc" / "config.toml"))
    return tmp_path


@pytest.fixture
def db_file(tmp_path: Path) -> Path:
    return tmp_path / "state" / "csnotify.db"


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    return tmp_path / "etc" / "config.toml"


@pytest.fixture
def cli() -> Callable[..., Run]:
    """The real CLI in-process through typer's CliRunner, stdout and stderr apart.

    A call fails the test unless the command exits with ``expect`` (0 unless said):
    a test that wants a refusal says which status, ``expect=None`` takes any."""
    runner = CliRunner()

    def run(
        *args: str,
        input: str | bytes | None = None,
        env: dict[str, str] | None = None,
        expect: int | None = 0,
    ) -> Run:
        result = runner.invoke(app, list(args), input=input, env=env, prog_name="csnotify")
        if result.exception and not isinstance(result.exception, SystemExit):
            raise result.exception
        if expect is not None and result.exit_code != expect:
            pytest.fail(
                f"csnotify {' '.join(args)}: exit status {result.exit_code}, expected {expect}"
                f"\nstdout: {result.stdout}\nstderr: {result.stderr}",
                pytrace=False,
            )
        return Run(result.exit_code, result.stdout, result.stderr)

    return run


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Three attempts 50 ms apart and a 2 s timeout, so that failing deliveries finish
    quickly."""
    monkeypatch.setenv("CSNOTIFY_DELIVERY_RETRY_SCHEDULE", "0s,0.05s,0.05s")
    monkeypatch.setenv("CSNOTIFY_DELIVERY_TIMEOUT", "2")
