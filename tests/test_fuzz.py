"""Bad input, fuzzed: the parsers of every input shape either give events or say, in one
line, why not; they never raise anything else (no traceback reaches a user)."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from csnotify.errors import BadInput
from csnotify.events import Event, Rejected, normalise, parse_bus_body, parse_stream

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=50),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=20), children, max_size=6)
    ),
    max_leaves=30,
)
KEYS = ["id", "type", "level", "created", "event", "eventDateTime", "status", "entityuuid", "routing_key",
        "body", "body_raw", "listeventsresponse", "specversion", "data", "subscription", "category", "source"]  # fmt: skip
SHAPED = st.dictionaries(st.sampled_from(KEYS), JSON, max_size=8)
ROUTING = st.one_of(
    st.text(max_size=80),
    st.lists(st.text(alphabet="abcAEIM-*.", max_size=12), min_size=0, max_size=7).map(".".join),
    st.sampled_from(
        [
            "management-server.ActionEvent.VM-START.VirtualMachine.x",
            "management-server.AlertEvent.ALERT-MEMORY.*.*",
        ]
    ),
)

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(st.one_of(st.text(max_size=400), st.binary(max_size=400).map(lambda b: b.decode("latin-1"))))
def test_any_text_is_events_or_one_line_rejections(text: str) -> None:
    for item in parse_stream(text):
        assert isinstance(item, (Event, Rejected))
        if isinstance(item, Rejected):
            assert "\n" not in str(item) and str(item).startswith(("line ", "item "))


@FAST
@given(st.lists(st.one_of(SHAPED, JSON), max_size=5))
def test_any_json_document_is_events_or_one_line_rejections(docs: list) -> None:
    text = "\n".join(json.dumps(d) for d in docs)
    for item in parse_stream(text):
        assert isinstance(item, (Event, Rejected))
    for item in parse_stream(json.dumps(docs)):
        assert isinstance(item, (Event, Rejected))


@FAST
@given(st.one_of(st.binary(max_size=300), SHAPED.map(lambda d: json.dumps(d).encode())), ROUTING)
def test_bus_bodies_parse_or_raise_bad_input(body: bytes, key: str) -> None:
    try:
        event = parse_bus_body(body, key)
    except BadInput as exc:
        assert "\n" not in exc.message
    else:
        assert isinstance(event, Event) and event.type


@FAST
@given(SHAPED)
def test_shaped_documents_normalise_or_raise_bad_input(doc: dict) -> None:
    try:
        events = normalise(doc)
    except BadInput:
        return
    for event in events:
        assert isinstance(event.type, str) and event.type
        json.dumps(event.as_json())  # always serialisable


def test_deep_nesting_and_huge_values() -> None:
    deep = "[" * 100_000 + "]" * 100_000
    assert next(str(i) for i in parse_stream(deep)).startswith(("line 1", "item 1"))
    huge_number = (
        '{"id": "a", "type": "VM.START", "created": "2026-11-25T10:00:00Z", "level": '
        + "9" * 5000
        + "}"
    )
    out = list(parse_stream(huge_number))
    assert len(out) == 1
    huge_text = json.dumps({"id": "a", "type": "VM.START", "created": "2026-11-25T10:00:00Z", "source": "x",
                            "description": "x" * 10_000_000})  # fmt: skip
    (event,) = [e for e in parse_stream(huge_text) if isinstance(e, Event)]
    assert len(event.description or "") <= 64 * 1024


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    st.one_of(
        st.binary(max_size=300),
        st.lists(SHAPED, max_size=4).map(lambda d: "\n".join(map(json.dumps, d)).encode()),
    )
)
def test_dispatch_command_never_shows_a_traceback(cli, db_file, payload: bytes) -> None:
    from helpers import file_digest

    if not db_file.exists():
        assert (
            cli(
                "subscribe", "NEVER.MATCHES", "--to", "https://h.example/x", "--name", "n"
            ).exit_code
            == 0
        )
    before = file_digest(db_file)
    r = cli(
        "dispatch",
        "-",
        input=payload.decode("utf-8", "surrogateescape")
        .encode("utf-8", "surrogateescape")
        .decode("latin-1"),
        expect=None,
    )
    assert r.exit_code in (0, 1), r.stderr
    assert "Traceback" not in r.stderr
    for line in r.stderr.splitlines():
        assert line.startswith(("csnotify: line ", "csnotify: item ")), line
    assert file_digest(db_file) == before  # nothing matched, nothing written
