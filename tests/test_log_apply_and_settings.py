"""The quick layer under the end-to-end tests: the delivery log's writes and queries on
a real SQLite store, ``subscriptions.apply`` (what update changes), and ``config.load``
(where each setting comes from). No network, no processes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from csnotify import config
from csnotify.errors import BadInput
from csnotify.models import Endpoint, Subscription
from csnotify.store import DeliveryLog, DeliveryRecord, EndpointCounters, Store
from csnotify.subscriptions import SubscriptionInput, apply, subscribe

# -- the delivery log -------------------------------------------------------------------


@pytest.fixture
def logged(tmp_path: Path) -> tuple[Store, int]:
    store = Store.open(tmp_path / "log.db")
    subscribe(store, SubscriptionInput(["VM.*"], ["https://a.example/"], name="a"))
    (ep,) = store.subscriptions()[0].endpoints
    assert ep.id is not None
    return store, ep.id


def record(
    ep: int, n: int, status: str, minute: int = 0, error: str | None = None
) -> DeliveryRecord:
    return DeliveryRecord(ep, "a", "https://a.example/", f"ev-{n}", "VM.START", status, 1,
                          f"2026-11-26T10:{minute:02d}:{n:02d}.000000Z", error=error,
                          payload=json.dumps({"id": f"ev-{n}"}), webhook_id=f"msg_{n}")  # fmt: skip


def write(store: Store, records: list[DeliveryRecord], log_max: int = 100) -> None:
    with store.transaction():
        DeliveryLog(store).write(records, log_max)
        EndpointCounters(store).count(records)


def test_outcomes_fold_into_the_endpoint_counters(logged: tuple[Store, int]) -> None:
    store, ep = logged
    write(store, [record(ep, 1, "failed", error="HTTP 500"), record(ep, 2, "delivered"),
                  record(ep, 3, "failed", error="HTTP 502"), record(ep, 4, "failed", error="x"),
                  record(ep, 5, "muted"), record(ep, 6, "folded"), record(ep, 7, "dropped")])  # fmt: skip
    (got,) = store.subscriptions()[0].endpoints
    assert (got.total_successes, got.total_failures, got.consecutive_failures) == (1, 3, 2)
    assert (got.total_muted, got.total_folded, got.total_dropped) == (1, 1, 1)
    assert got.last_error == "x" and got.last_success_at == "2026-11-26T10:00:02.000000Z"
    write(store, [record(ep, 8, "failed", error="y")])
    (got,) = store.subscriptions()[0].endpoints
    assert got.consecutive_failures == 3  # carried over from the last write
    write(store, [record(ep, 9, "delivered")])
    (got,) = store.subscriptions()[0].endpoints
    assert got.consecutive_failures == 0 and got.total_successes == 2


def test_rows_newest_first_filtered_by_subscription_and_failure(logged: tuple[Store, int]) -> None:
    store, ep = logged
    write(store, [record(ep, 1, "delivered"), record(ep, 2, "failed", error="e")])
    log = DeliveryLog(store)
    assert [r["event_id"] for r in log.rows()] == ["ev-2", "ev-1"]
    assert [r["event_id"] for r in log.rows(failed=True)] == ["ev-2"]
    assert log.rows(subscription="other") == []
    assert [r["event_id"] for r in log.rows(limit=1)] == ["ev-2"]


def test_the_window_holds_each_events_latest_outcome_oldest_first(
    logged: tuple[Store, int],
) -> None:
    store, ep = logged
    write(store, [record(ep, 1, "failed", 1, "e"), record(ep, 2, "delivered", 2),
                  record(ep, 3, "muted", 3), record(ep, 1, "delivered", 4),
                  record(ep, 4, "failed", 5, "e")])  # fmt: skip
    log = DeliveryLog(store)
    every = log.window([ep], None, None, failed=False)
    assert [(r["event_id"], r["status"]) for r in every] == [
        ("ev-2", "delivered"), ("ev-1", "delivered"), ("ev-4", "failed")]  # fmt: skip
    assert [r["event_id"] for r in log.window([ep], None, None, failed=True)] == ["ev-4"]
    since, until = "2026-11-26T10:02:00Z", "2026-11-26T10:04:59Z"
    assert [r["event_id"] for r in log.window([ep], since, until, failed=False)] == ["ev-2", "ev-1"]


def test_trimming_keeps_the_newest_and_counts_what_went_by_the_minute(
    logged: tuple[Store, int],
) -> None:
    store, ep = logged
    write(store, [record(ep, n, "delivered" if n % 2 else "failed", n // 4, "e") for n in range(10)],
          log_max=3)  # fmt: skip
    log = DeliveryLog(store)
    assert [r["event_id"] for r in log.rows()] == ["ev-9", "ev-8", "ev-7"]
    assert log.trimmed([ep], None, None, failed=False) == 7
    assert log.trimmed([ep], None, None, failed=True) == 4  # ev-0, 2, 4, 6
    assert log.trimmed([ep], "2026-11-26T10:01:00Z", None, failed=False) == 3  # ev-4, 5, 6


def test_a_running_listener_trims_once_log_max_more_are_written_and_at_its_end(
    logged: tuple[Store, int],
) -> None:
    """Trimming costs statements in the transaction every delivery waits on, so one log
    trims an endpoint once it wrote log_max more rows of it, and when the run ends."""
    store, ep = logged
    log = DeliveryLog(store)
    kept = lambda: len(log.rows(limit=1000))  # noqa: E731
    for n in range(5):  # log_max 3: a trim at the 3rd (nothing to drop), the next at the 6th
        with store.transaction():
            log.write([record(ep, n, "delivered")], 3)
    assert kept() == 5
    with store.transaction():
        log.write([record(ep, 5, "delivered")], 3)  # 3 written since the trim: trimmed
    assert [r["event_id"] for r in log.rows()] == ["ev-5", "ev-4", "ev-3"]
    with store.transaction():
        log.write([record(ep, 6, "delivered")], 3)
    assert kept() == 4  # between trims the log holds more than log_max
    with store.transaction():
        log.trim_written(3)  # the run ends
    assert [r["event_id"] for r in log.rows()] == ["ev-6", "ev-5", "ev-4"]
    assert log.trimmed([ep], None, None, failed=False) == 4


# -- subscriptions.apply ----------------------------------------------------------------


def existing() -> Subscription:
    return Subscription("ops", ["VM.*"], [Endpoint("https://a.example/", id=1, total_successes=9),
                                          Endpoint("https://b.example/", id=2)])  # fmt: skip


def test_apply_changes_only_what_is_given_and_keeps_counters() -> None:
    old = existing()
    new, generated = apply(old, SubscriptionInput(to=["https://a.example/", "https://c.example/"],
                                                  level="warn", group_wait="30s"))  # fmt: skip
    assert not generated and new.patterns == ["VM.*"] and new.name == "ops"
    assert [(e.uri, e.id, e.total_successes) for e in new.endpoints] == [
        ("https://a.example/", 1, 9), ("https://c.example/", None, 0)]  # fmt: skip
    assert (new.level, new.group_wait) == ("WARN", 30.0)
    assert [e.uri for e in old.endpoints] == [
        "https://a.example/",
        "https://b.example/",
    ]  # untouched


def test_apply_sets_limits_and_order_on_every_endpoint_and_can_generate_a_key() -> None:
    new, generated = apply(existing(), SubscriptionInput(max_per_minute="5", strict_order=True,
                                                         key="generate", name="ops2"))  # fmt: skip
    assert generated and new.key and new.name == "ops2"
    assert [(e.max_per_minute, e.strict_order) for e in new.endpoints] == [(5, True), (5, True)]


@pytest.mark.parametrize(
    ("spec", "says"),
    [(SubscriptionInput(patterns=[]), "no event-type pattern"),
     (SubscriptionInput(to=[]), "no endpoint"),
     (SubscriptionInput(to=["https://a.example/", "https://a.example/"]), "is given twice"),
     (SubscriptionInput(level="LOUD"), "LOUD"),
     (SubscriptionInput(name="bad name"), "invalid name 'bad name'"),
     (SubscriptionInput(group_wait="2h"), "group-wait")],
    ids=["no-patterns", "no-endpoints", "twice", "level", "name", "group-wait"],
)  # fmt: skip
def test_apply_refuses_bad_input(spec: SubscriptionInput, says: str) -> None:
    with pytest.raises(BadInput, match=None) as caught:
        apply(existing(), spec)
    assert says in caught.value.message


# -- config.load -------------------------------------------------------------------------


def test_each_setting_comes_from_the_last_of_default_file_environment_flag(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[delivery]\ntimeout = 4\nper_endpoint = 7\n[amqp]\nqueue = "from-file"\n')
    path.chmod(0o600)
    env = {"CSNOTIFY_DELIVERY_PER_ENDPOINT": "9", "CSNOTIFY_AMQP_QUEUE": "from-env"}
    loaded = config.load(path, env, {"amqp.queue": "from-flag"})
    assert (loaded["delivery.timeout"], loaded.sources["delivery.timeout"]) == (4.0, "file")
    assert (loaded["delivery.per_endpoint"], loaded.sources["delivery.per_endpoint"]) == (9, "env")
    assert (loaded["amqp.queue"], loaded.sources["amqp.queue"]) == ("from-flag", "flag")
    assert loaded.sources["amqp.prefetch"] == "default"
    assert loaded.warnings == []


def test_a_missing_file_is_all_defaults(tmp_path: Path) -> None:
    loaded = config.load(tmp_path / "none.toml", {})
    assert set(loaded.sources.values()) == {"default"}
    assert loaded.values == {key: s.default for key, s in config.SETTINGS.items()}


def test_unknown_keys_and_bad_values_are_refused_with_where(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[delivery]\ntimout = 4\n")
    path.chmod(0o600)
    with pytest.raises(BadInput) as caught:
        config.load(path, {})
    assert "unknown setting 'delivery.timout'" in caught.value.message
    assert "delivery.timeout" in caught.value.message  # did you mean
    with pytest.raises(BadInput) as caught:
        config.load(tmp_path / "none.toml", {"CSNOTIFY_DELIVERY_TIMEOUT": "soon"})
    assert "$CSNOTIFY_DELIVERY_TIMEOUT" in caught.value.message
    with pytest.raises(BadInput):
        config.load(tmp_path / "none.toml", {}, {"delivery.nope": "1"})


def test_a_secret_given_with_c_is_warned_about(tmp_path: Path) -> None:
    loaded = config.load(tmp_path / "none.toml", {}, {"cloudstack.secret_key": "s3cret"})
    assert loaded["cloudstack.secret_key"] == "s3cret"
    assert any("ps and shell history" in w for w in loaded.warnings)
