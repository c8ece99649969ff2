"""The quick layer under the end-to-end tests: rate windows and batches (pacing), mutes
(MuteSet) and where an event goes (routes), on plain values; no store, no network."""

from __future__ import annotations

from collections import Counter

from csnotify.events import Event
from csnotify.models import Endpoint, Mute, Subscription
from csnotify.mutes import MuteSet
from csnotify.pacing import DIGEST, DIGEST_TYPE, GROUP, LISTED, WINDOW_S, Batch, Window
from csnotify.routes import routes

FAR = "2099-01-01T00:00:00+00:00"
PAST = "2001-01-01T00:00:00+00:00"


def event(n: int, kind: str = "VM.START", level: str = "INFO") -> Event:
    return Event(id=f"ev-{n}", type=kind, level=level, created="2026-11-26T10:00:00Z",
                 resource_name=f"vm-{n}", category="ActionEvent", state="Completed")  # fmt: skip


# -- Window ------------------------------------------------------------------------------


def test_a_window_lets_per_minute_through_then_says_when_it_reopens() -> None:
    window = Window(3)
    for t in (0.0, 10.0, 20.0):
        assert window.allows(t)
        window.note(t)
    assert not window.allows(30.0)
    assert window.reopens(30.0) == WINDOW_S  # the first of the three leaves the window
    assert not window.allows(WINDOW_S - 0.001)
    assert window.allows(WINDOW_S)  # exactly a minute after the first: it has left
    window.note(WINDOW_S)
    assert window.reopens(WINDOW_S) == 10.0 + WINDOW_S


def test_a_window_with_room_reopens_now() -> None:
    window = Window(2)
    window.note(5.0)
    assert window.reopens(6.0) == 6.0


# -- Batch -------------------------------------------------------------------------------


def test_a_batch_counts_types_keeps_the_highest_level_and_lists_the_first() -> None:
    batch = Batch(DIGEST, due=100.0)
    for n in range(LISTED + 5):
        batch.add(event(n, "VM.STOP" if n % 3 else "VM.START", "ERROR" if n == 7 else "INFO"))
    assert batch.count == LISTED + 5 and batch.level == "ERROR"
    assert len(batch.listed) == LISTED and batch.listed[0]["id"] == "ev-0"
    assert batch.types == Counter({"VM.STOP": 36, "VM.START": 19})
    assert batch.summary() == "55 more events: 36 VM.STOP, 19 VM.START"


def test_a_batch_of_one_is_sent_as_the_event_itself() -> None:
    batch = Batch(GROUP, due=1.0)
    batch.add(event(1))
    assert batch.message_event("ep-1") is batch.first
    assert batch.summary() == "1 event: 1 VM.START"


def test_a_digest_is_one_event_whose_id_is_stable_for_its_endpoint_and_content() -> None:
    def digest(endpoint: str) -> Event:
        batch = Batch(GROUP, due=1.0)
        for n in range(3):
            batch.add(event(n))
        return batch.message_event(endpoint)

    first, again, other = digest("ep-1"), digest("ep-1"), digest("ep-2")
    assert first.type == DIGEST_TYPE and first.raw["count"] == 3 and first.raw["unlisted"] == 0
    assert first.id == again.id != other.id  # a resend after a restart keeps its id


def test_a_batch_survives_its_document() -> None:
    batch = Batch(DIGEST, due=42.5)
    for n in range(4):
        batch.add(event(n, level="WARN"))
    back = Batch.from_doc(DIGEST, 42.5, batch.to_doc())
    assert back == batch


def test_more_types_than_shown_are_summed() -> None:
    batch = Batch(DIGEST, due=0.0)
    for n, kind in enumerate(["A.X", "B.X", "C.X", "D.X", "E.X", "F.X", "G.X", "H.X", "A.X"]):
        batch.add(event(n, kind))
    assert batch.summary().endswith("1 F.X, 2 of 2 other types")


# -- MuteSet and routes ------------------------------------------------------------------


def mute(n: int, subscription: str | None = None, endpoint: str | None = None,
         pattern: str | None = None, until: str = FAR) -> Mute:  # fmt: skip
    return Mute(subscription, endpoint, pattern, f"reason {n}", "2026-11-26T00:00:00Z", until, n)


def test_a_mute_covers_its_subscription_endpoint_and_types_only() -> None:
    mutes = MuteSet([mute(1, "a", "https://a.example/1", "VM.*"), mute(2, None, None, "HOST.*")])
    assert mutes.find("a", "https://a.example/1", "VM.START").id == 1  # type: ignore[union-attr]
    assert mutes.find("a", "https://a.example/1", "vm.stop").id == 1  # type: ignore[union-attr]
    assert mutes.find("a", "https://a.example/2", "VM.START") is None  # another endpoint
    assert mutes.find("b", "https://a.example/1", "VM.START") is None  # another subscription
    assert mutes.find("b", "https://b.example/", "HOST.DOWN").id == 2  # type: ignore[union-attr]
    assert mutes.find("a", "https://a.example/1", "VOLUME.CREATE") is None


def test_an_ended_mute_covers_nothing() -> None:
    assert MuteSet([mute(1, until=PAST)]).find("a", "https://a.example/", "VM.START") is None
    assert MuteSet([]).find("a", "https://a.example/", "VM.START") is None


def test_routes_say_for_each_subscription_whether_and_where() -> None:
    hooks = Subscription("hooks", ["VM.*"], [Endpoint("https://a.example/"),
                                             Endpoint("https://b.example/", enabled=False),
                                             Endpoint("https://c.example/")])  # fmt: skip
    errors = Subscription("errors", ["*"], [Endpoint("https://e.example/")], level="ERROR")
    off = Subscription("off", ["*"], [Endpoint("https://o.example/")], enabled=False)
    found = routes([hooks, errors, off], MuteSet([mute(4, "hooks", "https://c.example/")]),
                   event(1))  # fmt: skip
    assert [(r.subscription.name, r.taken) for r in found] == [
        ("hooks", True), ("errors", False), ("off", False)]  # fmt: skip
    assert found[1].verdict.reason == "level INFO is below its minimum ERROR"
    assert found[2].verdict.reason == "the subscription is disabled"
    assert found[1].endpoints == found[2].endpoints == []
    sent = [(r.endpoint.uri, r.sent, r.mute.id if r.mute else None) for r in found[0].endpoints]
    assert sent == [("https://a.example/", True, None), ("https://b.example/", False, None),
                    ("https://c.example/", False, 4)]  # fmt: skip
