"""The safe template formatter: event fields only, no way into Python objects."""

from __future__ import annotations

import pytest

from csnotify.errors import BadInput
from csnotify.templates import DEFAULT_TITLE, render, validate


def test_fields_and_specs() -> None:
    values = {
        "type": "VM.CREATE",
        "state": "Completed",
        "resource_name": "vm-42",
        "description": "x" * 300,
    }
    assert render(DEFAULT_TITLE, values) == "[CloudStack] VM.CREATE Completed: vm-42"
    assert render("{description:.5}", values) == "xxxxx"
    assert render("{{literal}} {type}", values) == "{literal} VM.CREATE"
    assert render("{account}", {}) == ""


@pytest.mark.parametrize(
    "template",
    ["{raw.__class__}", "{0.__init__}", "{}", "{0}", "{type[0]}", "{type.__doc__}",
     "{raw}", "{type!r}", "{type:{level}}", "{unclosed", "{__import__}"],
)  # fmt: skip
def test_anything_but_plain_fields_is_refused(template: str) -> None:
    with pytest.raises(BadInput):
        validate(template, "--title")


def test_values_are_text_never_objects() -> None:
    class Sneaky:
        def __format__(self, spec: str) -> str:
            raise AssertionError("an object's __format__ was called")

    assert render("{type}", {"type": Sneaky()}).startswith("<")
