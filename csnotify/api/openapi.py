"""The OpenAPI 3.1 document of the API, served at ``/v1/openapi.json``. The tests walk
every operation it lists against a running server and check each answer against it
(tests/test_api_openapi.py)."""

from __future__ import annotations

from typing import Any

from csnotify.api.bodies import CREATE_FIELDS, UPDATE_FIELDS


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(kind: str) -> dict[str, Any]:
    return {"type": [kind, "null"]}


STRINGS = {"type": "array", "items": {"type": "string"}}
_FIELD_SCHEMAS: dict[str, dict[str, Any]] = {
    "name": {"type": "string", "description": "1-64 letters, digits, '_', '-', '.'"},
    "patterns": {**STRINGS, "description": "event-type patterns, e.g. VM.*"},
    "endpoints": {
        "type": "array",
        "items": {
            "type": "object",
            "properties": {"uri": {"type": "string"}},
            "required": ["uri"],
            "additionalProperties": False,
        },
    },
    "level": {"type": "string", "description": "INFO, WARN or ERROR: the minimum"},
    "where": {**STRINGS, "description": "filters FIELD=VALUE or FIELD~REGEX"},
    "format": {"type": "string", "description": "json, cloudevents or cloudstack"},
    "key": {"type": "string", "description": "'generate', or the signing secret"},
    "title": {"type": "string"},
    "body": {"type": "string"},
    "categories": STRINGS,
    "states": STRINGS,
    "group_wait": {"type": "string", "description": "e.g. 30s; 0 switches grouping off"},
    "max_per_minute": {"type": ["integer", "string"]},
    "strict_order": {"type": "boolean"},
    "enabled": {"type": "boolean"},
}

ENDPOINT = {
    "type": "object",
    "required": ["uri", "kind", "enabled", "backlog"],
    "properties": {
        "uri": {"type": "string", "description": "secrets masked"},
        "kind": {"type": "string", "enum": ["webhook", "command", "apprise"]},
        "enabled": {"type": "boolean"},
        "disabled_reason": _nullable("string"),
        "consecutive_failures": {"type": "integer"},
        "total_failures": {"type": "integer"},
        "total_successes": {"type": "integer"},
        "last_error": _nullable("string"),
        "last_error_at": _nullable("string"),
        "last_success_at": _nullable("string"),
        "max_per_minute": _nullable("integer"),
        "total_muted": {"type": "integer"},
        "total_folded": {"type": "integer"},
        "strict_order": {"type": "boolean"},
        "total_dropped": {"type": "integer"},
        "warnings": STRINGS,
        "backlog": {"type": "integer"},
        "oldest_pending": _nullable("string"),
        "next_attempt": _nullable("string"),
        "pending_error": _nullable("string"),
    },
    "additionalProperties": False,
}

OWNER = {
    "type": ["object", "null"],
    "properties": {
        "scope": {"type": "string", "enum": ["account", "domain", "global"]},
        "account": _nullable("string"),
        "domain": _nullable("string"),
    },
    "required": ["scope", "account", "domain"],
    "additionalProperties": False,
}

SUBSCRIPTION = {
    "type": "object",
    "description": "As 'csnotify show NAME --json' prints it: keys and URI secrets masked.",
    "required": [
        "name",
        "enabled",
        "patterns",
        "level",
        "where",
        "format",
        "key",
        "endpoints",
        "owner",
    ],
    "properties": {
        "name": {"type": "string"},
        "enabled": {"type": "boolean"},
        "patterns": STRINGS,
        "level": {"type": "string", "enum": ["INFO", "WARN", "ERROR"]},
        "where": STRINGS,
        "format": {"type": "string"},
        "key": _nullable("string"),
        "title": _nullable("string"),
        "body": _nullable("string"),
        "group_wait": {"type": "number"},
        "categories": STRINGS,
        "states": STRINGS,
        "created": _nullable("string"),
        "updated": _nullable("string"),
        "owner": OWNER,
        "endpoints": {"type": "array", "items": _ref("Endpoint")},
        "generated_key": {"type": "string", "description": "once, when a key was generated"},
        "notes": {
            "type": "array",
            "items": {"type": "string"},
            "description": "after a create or change: settings that do nothing for this"
            " subscription, as the CLI notes them",
        },
    },
    "additionalProperties": False,
}

PROBLEM = {
    "type": "object",
    "description": "RFC 9457; detail is the one line the CLI prints for the same input.",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
    },
}

TEST_RESULT = {
    "type": "object",
    "required": ["endpoint", "kind", "ok", "latency_ms", "status", "error"],
    "properties": {
        "endpoint": {"type": "string"},
        "kind": {"type": "string"},
        "ok": {"type": "boolean"},
        "latency_ms": {"type": "number"},
        "status": _nullable("integer"),
        "error": _nullable("string"),
    },
    "additionalProperties": False,
}

DELIVERY = {
    "type": "object",
    "required": ["at", "subscription", "endpoint", "event_id", "event_type", "status"],
    "properties": {
        "at": {"type": "string"},
        "subscription": {"type": "string"},
        "endpoint": {"type": "string"},
        "event_id": {"type": "string"},
        "event_type": {"type": "string"},
        "status": {"type": "string"},
        "attempts": {"type": "integer"},
        "http_status": _nullable("integer"),
        "latency_ms": _nullable("number"),
        "error": _nullable("string"),
        "webhook_id": _nullable("string"),
    },
    "additionalProperties": False,
}

MATCH = {
    "type": "object",
    "required": ["event", "subscriptions"],
    "properties": {
        "event": {"type": "object"},
        "subscriptions": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["subscription", "matched", "pattern", "reason", "endpoints"],
                "properties": {
                    "subscription": {"type": "string"},
                    "matched": {"type": "boolean"},
                    "pattern": _nullable("string"),
                    "reason": {"type": "string"},
                    "endpoints": {"type": "array", "items": {"type": "object"}},
                },
            },
        },
    },
}

CALLER = {
    "type": "object",
    "required": ["account", "domain", "scope"],
    "properties": {
        "account": {"type": "string"},
        "domain": {"type": "string"},
        "scope": {"type": "string", "enum": ["account", "domain", "global"]},
    },
    "additionalProperties": False,
}


def _body(fields: dict[str, str], nullable: tuple[str, ...] = ()) -> dict[str, Any]:
    props = {}
    for name in fields:
        schema = dict(_FIELD_SCHEMAS[name])
        if name in nullable:
            schema["type"] = [schema["type"], "null"]
        props[name] = schema
    return {"type": "object", "properties": props, "additionalProperties": False}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _problems(*statuses: int) -> dict[str, Any]:
    words = {
        400: "Malformed JSON, an unknown field or a wrong JSON type; nothing written.",
        401: "No valid credentials.",
        403: "Not allowed for this caller (endpoint policy, per-owner limits).",
        404: "No such subscription in the caller's scope.",
        409: "The name is taken.",
        413: "The body is larger than api.max_body_bytes.",
        422: "A value the CLI would refuse (same message); nothing written.",
        429: "Over api.rate_limit; see Retry-After.",
    }
    return {
        str(s): {
            "description": words[s],
            "content": {"application/problem+json": {"schema": _ref("Problem")}},
        }
        for s in (*statuses, 401, 429)
    }


NAME = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}


def _op(summary: str, ok: dict[str, Any], *statuses: int, **extra: Any) -> dict[str, Any]:
    return {"summary": summary, "responses": {**ok, **_problems(*statuses)}, **extra}


def document(version: str) -> dict[str, Any]:
    sub = _ref("Subscription")
    subs = {"type": "array", "items": sub}
    named = {"parameters": [NAME]}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "csnotify",
            "version": version,
            "description": "Subscriptions to Apache CloudStack events, as the csnotify CLI"
            " makes them, on the same store. Authenticate with 'Authorization: Bearer"
            " TOKEN' (csnotify token create).",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": {
            "/v1/openapi.json": {
                "get": {
                    "summary": "This document",
                    "security": [],
                    "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1")},
                }
            },
            "/v1/whoami": {
                "get": _op("The caller and its scope", {"200": _json(CALLER, "Caller")})
            },
            "/v1/subscriptions": {
                "get": _op("Subscriptions in the caller's scope", {"200": _json(subs, "List")}),
                "post": _op(
                    "Subscribe (csnotify subscribe)",
                    {"201": _json(sub, "Created; generated_key once")},
                    400,
                    403,
                    409,
                    413,
                    422,
                    requestBody={
                        "required": True,
                        "content": {"application/json": {"schema": _body(CREATE_FIELDS)}},
                    },
                ),
            },
            "/v1/subscriptions/{name}": {
                **named,
                "get": _op("One subscription (csnotify show)", {"200": _json(sub, "It")}, 404),
                "patch": _op(
                    "Change it (csnotify update); fields not given stay; key null: no signing",
                    {"200": _json(sub, "Changed")},
                    400,
                    403,
                    404,
                    409,
                    413,
                    422,
                    requestBody={
                        "required": True,
                        "content": {
                            "application/json": {"schema": _body(UPDATE_FIELDS, nullable=("key",))}
                        },
                    },
                ),
                "delete": _op(
                    "Delete it (csnotify unsubscribe)", {"204": {"description": "Deleted"}}, 404
                ),
            },
            "/v1/subscriptions/{name}/test": {
                **named,
                "post": _op(
                    "One attempt to each endpoint now (csnotify test)",
                    {"200": _json({"type": "array", "items": _ref("TestResult")}, "Results")},
                    404,
                ),
            },
            "/v1/subscriptions/{name}/enable": {
                **named,
                "post": _op("Switch it on (csnotify enable)", {"200": _json(sub, "It")}, 404),
            },
            "/v1/subscriptions/{name}/disable": {
                **named,
                "post": _op("Switch it off (csnotify disable)", {"200": _json(sub, "It")}, 404),
            },
            "/v1/deliveries": {
                "get": _op(
                    "Recent deliveries, newest first (csnotify deliveries)",
                    {"200": _json({"type": "array", "items": _ref("Delivery")}, "Log")},
                    400,
                    404,
                    parameters=[
                        {"name": "subscription", "in": "query", "schema": {"type": "string"}},
                        {
                            "name": "failed",
                            "in": "query",
                            "schema": {"type": "string", "enum": ["true", "false"]},
                        },
                        {
                            "name": "limit",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 1, "maximum": 10000},
                        },
                    ],
                )
            },
            "/v1/event-types": {
                "get": _op(
                    "CloudStack's event types, those a pattern takes with ?match=",
                    {"200": _json(STRINGS, "Types")},
                    422,
                    parameters=[{"name": "match", "in": "query", "schema": {"type": "string"}}],
                )
            },
            "/v1/match": {
                "get": _op(
                    "Which of the caller's subscriptions an event would reach (csnotify match)",
                    {"200": _json(MATCH, "Verdicts")},
                    422,
                    parameters=[
                        {
                            "name": "type",
                            "in": "query",
                            "required": True,
                            "schema": {"type": "string"},
                        },
                        {"name": "level", "in": "query", "schema": {"type": "string"}},
                        {
                            "name": "where",
                            "in": "query",
                            "schema": {"type": "array", "items": {"type": "string"}},
                        },
                    ],
                )
            },
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Subscription": SUBSCRIPTION,
                "Endpoint": ENDPOINT,
                "Problem": PROBLEM,
                "TestResult": TEST_RESULT,
                "Delivery": DELIVERY,
            },
        },
    }
