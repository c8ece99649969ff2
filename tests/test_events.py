"""Normalisation of every CloudStack shape in shared/fixtures, and of our own shapes."""

from __future__ import annotations

import json

import pytest
from helpers import load_fixture

from csnotify.errors import BadInput
from csnotify.events import (
    Event,
    Rejected,
    cloudstack_description,
    gson_dumps,
    normalise,
    parse_bus_body,
    parse_stream,
)

UUID_VM = "c3b1f2e4-6a7d-4e89-9b0a-1f2e3d4c5b6a"


def test_list_events_response_gives_every_item() -> None:
    doc = load_fixture("api/listevents_response.json")
    events = normalise(doc)
    assert [e.id for e in events] == [i["id"] for i in doc["listeventsresponse"]["event"]]
    first = events[0]
    assert first.type == "VM.START"
    assert first.level == "INFO"
    assert first.state == "Completed"
    assert first.category == "ActionEvent"
    assert first.created == "2024-05-14T10:22:31Z"
    assert first.account == "admin" and first.domain == "ROOT" and first.username == "admin"
    assert first.resource_type == "VirtualMachine"
    assert first.resource_id == UUID_VM
    assert first.resource_name == "web-01"
    assert first.source == "api"
    assert first.raw == doc["listeventsresponse"]["event"][0]


def test_empty_list_response() -> None:
    assert normalise(load_fixture("api/listevents_empty.json")) == []


def test_list_item_alone() -> None:
    item = load_fixture("api/listevents_response.json")["listeventsresponse"]["event"][2]
    (event,) = normalise(item)
    assert event.state == "Scheduled" and event.created == "2024-05-14T10:22:18Z"


def test_error_document_is_rejected() -> None:
    with pytest.raises(BadInput, match="401"):
        normalise(load_fixture("api/error_401_bad_signature.json"))


EXPECTED_BUS = {
    "ActionEvent.json": ("VM.START", "ActionEvent", "INFO", "Completed", "VirtualMachine", UUID_VM),
    "ActionEvent_escaped.json": ("CREATE_TAGS", "ActionEvent", "INFO", "Completed", "Tag",
                                 "8f1e2d3c-4b5a-4968-8776-655443322110"),
    "AlertEvent.json": ("ALERT.MEMORY", "AlertEvent", "WARN", None, None, None),
    "UsageEvent.json": ("VM.START", "UsageEvent", "INFO", None, "VirtualMachine", UUID_VM),
    "ResourceStateEvent.json": ("OperationSucceeded", "ResourceStateEvent", "INFO", "Running",
                                "VirtualMachine", UUID_VM),
    "AsyncJobEvent.json": ("VM.START", "AsyncJobEvent", "INFO", "submit/IN_PROGRESS",
                           "VirtualMachine", UUID_VM),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(EXPECTED_BUS))
def test_bus_message_of_each_category(name: str) -> None:
    sample = load_fixture(f"amqp/{name}")
    event = parse_bus_body(sample["body_raw"].encode(), sample["routing_key"])
    expected = EXPECTED_BUS[name]
    got = (event.type, event.category, event.level, event.state, event.resource_type,
           event.resource_id)  # fmt: skip
    assert got == expected
    assert event.raw == sample["body"]  # Gson escapes decoded, nothing lost
    assert event.source == "amqp"
    if "eventDateTime" in sample["body"]:
        assert event.created.endswith("Z") and event.created.startswith("2024-05-14T10:")
    # the same message always gets the same id (duplicates are recognisable)
    again = parse_bus_body(sample["body_raw"].encode(), sample["routing_key"])
    assert again.id == event.id


def test_gson_escaping_is_decoded() -> None:
    sample = load_fixture("amqp/ActionEvent_escaped.json")
    event = parse_bus_body(sample["body_raw"].encode(), sample["routing_key"])
    assert event.description == "Creating tag(s) for resource(s): key=env & value='prod <blue>'"


@pytest.mark.parametrize("name", sorted(EXPECTED_BUS))
def test_bus_body_without_routing_key_guesses_the_category(name: str) -> None:
    sample = load_fixture(f"amqp/{name}")
    (event,) = normalise(sample["body"])
    assert event.category == EXPECTED_BUS[name][1]


def test_captured_message_shape_is_accepted() -> None:
    sample = load_fixture("amqp/ActionEvent.json")
    (event,) = normalise(sample)
    assert event.type == "VM.START" and event.raw_text == sample["body_raw"]


def test_missing_keys_are_tolerated() -> None:
    event = parse_bus_body(b'{"event":"VM.STOP"}', "management-server.ActionEvent.VM-STOP.*.*")
    assert event.type == "VM.STOP" and event.resource_id is None and event.created.endswith("Z")


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("a.b.c", "malformed routing key"),
        ("management-server.NoSuchEvent.X.*.*", "malformed routing key"),
    ],
)
def test_malformed_routing_keys(key: str, message: str) -> None:
    with pytest.raises(BadInput, match=message):
        parse_bus_body(b'{"event":"VM.STOP"}', key)


def test_our_own_json_round_trips() -> None:
    sample = load_fixture("amqp/ActionEvent.json")
    event = parse_bus_body(sample["body_raw"].encode(), sample["routing_key"])
    (again,) = normalise(json.loads(json.dumps(event.as_json())))
    assert again.as_json() == event.as_json()
    (wrapped,) = normalise({"event": event.as_json(), "subscription": "x"})
    assert wrapped.id == event.id


def test_cloudevents_json() -> None:
    doc = {
        "specversion": "1.0",
        "id": "e1",
        "source": "/cloudstack",
        "type": "org.apache.cloudstack.VM.CREATE",
        "time": "2026-11-25T10:00:00Z",
        "data": {"id": "e1", "type": "VM.CREATE", "level": "ERROR", "created": "2026-11-25T10:00:00Z",
                 "category": "ActionEvent", "resource_name": "vm-42"},
    }  # fmt: skip
    (event,) = normalise(doc)
    assert (event.id, event.type, event.level, event.resource_name) == (
        "e1",
        "VM.CREATE",
        "ERROR",
        "vm-42",
    )
    (bare,) = normalise({**doc, "data": None})
    assert bare.type == "VM.CREATE" and bare.created == "2026-11-25T10:00:00Z"


def test_parse_stream_reports_bad_lines_and_keeps_going() -> None:
    good = json.dumps(
        load_fixture("api/listevents_response.json")["listeventsresponse"]["event"][0]
    )
    text = "\n".join(
        [good, "{not json", "[1, 2]", '{"id": "x"}', good.replace("VM.START", "VM.STOP")]
    )
    out = list(parse_stream(text))
    events = [o for o in out if isinstance(o, Event)]
    rejected = [str(o) for o in out if isinstance(o, Rejected)]
    assert [e.type for e in events] == ["VM.START", "VM.STOP"]
    assert [r.split(":")[0] for r in rejected] == ["line 2", "line 3", "line 4"]


def test_parse_stream_array_and_document() -> None:
    doc = load_fixture("api/listevents_response.json")
    assert len(list(parse_stream(json.dumps(doc)))) == 3
    items = doc["listeventsresponse"]["event"]
    out = list(parse_stream(json.dumps([items[0], "junk", items[1]])))
    assert [str(o) for o in out if isinstance(o, Rejected)] == [
        "item 2: expected a JSON object, got str"
    ]


def test_cloudstack_description_is_byte_identical_for_bus_events() -> None:
    for name in ("ActionEvent.json", "ActionEvent_escaped.json"):
        sample = load_fixture(f"amqp/{name}")
        event = parse_bus_body(sample["body_raw"].encode(), sample["routing_key"])
        assert cloudstack_description(event) == sample["body_raw"]
    sample = load_fixture("amqp/ActionEvent_escaped.json")
    assert gson_dumps(sample["body"]) == sample["body_raw"]


def test_cloudstack_description_for_api_events() -> None:
    item = load_fixture("api/listevents_response.json")["listeventsresponse"]["event"][0]
    (event,) = normalise(item)
    body = json.loads(cloudstack_description(event))
    assert body["event"] == "VM.START"
    assert body["eventDateTime"] == "2024-05-14 10:22:31 +0000"
    assert body["entityuuid"] == UUID_VM and body["VirtualMachine"] == UUID_VM
    assert body["status"] == "Completed"


def test_cmk_inner_object_is_a_list_response() -> None:
    from csnotify.events import normalise, parse_stream

    items = load_fixture("api/listevents_response.json")["listeventsresponse"]["event"]
    inner = {"count": len(items), "event": items}
    assert [e.id for e in normalise(inner)] == [i["id"] for i in items]
    pretty = json.dumps(inner, indent=2)
    assert [e.id for e in parse_stream(pretty)] == [i["id"] for i in items]
    assert normalise({"count": 0}) == []
    # one bad item is reported and the others go on
    broken = json.dumps({"count": 2, "event": [items[0], {"id": "x"}]}, indent=1)
    out = list(parse_stream(broken))
    assert out[0].id == items[0]["id"] and "event 2" in str(out[1])


@pytest.mark.parametrize("name", sorted(EXPECTED_BUS))
def test_gson_key_order_is_a_java_hashmaps(name: str) -> None:
    """CloudStack builds each description as a HashMap: its iteration order is what Gson
    writes, and ``hashmap_order`` gives it for any key set (nested objects too)."""
    from csnotify.events import as_hashmap, hashmap_order, java_hash

    def bucket(key: str) -> int:  # HashMap.hash, in a table of 16
        return (java_hash(key) ^ (java_hash(key) >> 16)) & 15

    sample = load_fixture(f"amqp/{name}")
    keys = list(json.loads(sample["body_raw"]))
    buckets = [bucket(k) for k in keys]
    assert buckets == sorted(buckets)  # CloudStack's own order is by bucket
    assert [bucket(k) for k in hashmap_order(sorted(keys))] == buckets
    assert hashmap_order(keys) == keys  # ties keep their insertion order
    assert gson_dumps(as_hashmap(sample["body"])) == sample["body_raw"]


def test_an_event_without_an_id_is_named_as_such() -> None:
    """A line with a type but no id is not 'an event-bus message with no known keys'
    (found by an operator run-through): the missing id is what the error names."""
    import pytest

    from csnotify.errors import BadInput
    from csnotify.events import normalise

    for doc in ({"type": "VM.START", "description": "x"}, {"type": 5}):
        with pytest.raises(BadInput, match="has a 'type' but no 'id'"):
            normalise(doc)
    with pytest.raises(BadInput, match="no known keys"):
        normalise({"description": "x"})
    # a bus body (no routing key given) that happens to hold a 'type' key is still read
    bus = normalise({"status": "Completed", "event": "VM.START", "type": "x"})
    assert [e.type for e in bus] == ["VM.START"]
