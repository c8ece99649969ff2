"""csnotify uses three of typer's private modules (its vendored click's exceptions, and
its completion machinery, which typer offers no public way to drive with our own
environment variable). Private modules change without notice, so the typer release
range is pinned in pyproject.toml and this file holds both ends: every private import
in the package is one listed here, the pin has an upper bound, and the installed typer
is inside it and still has each name."""

from __future__ import annotations

import ast
import importlib
import inspect
import re
import tomllib

import typer
from helpers import REPO

# module -> names csnotify imports from it
PRIVATE = {
    "typer._click.exceptions": {"NoArgsIsHelpError", "UsageError"},
    "typer._completion_classes": {"completion_init"},
    "typer._completion_shared": {"get_completion_script"},
}


def private_imports() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in (REPO / "csnotify").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("typer._"):
                found.setdefault(node.module or "", set()).update(a.name for a in node.names)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("typer._"):
                        found.setdefault(alias.name, set())
    return found


def typer_pin() -> tuple[tuple[int, ...], tuple[int, ...]]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    (spec,) = [d for d in project["dependencies"] if re.match(r"typer\b", d)]
    low = re.search(r">=\s*([\d.]+)", spec)
    high = re.search(r"<\s*([\d.]+)", spec)
    assert low and high, f"typer must be pinned to a range with an upper bound: {spec!r}"
    return version(low.group(1)), version(high.group(1))


def version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text)[:3])


def test_every_private_typer_import_is_one_this_file_pins() -> None:
    assert private_imports() == PRIVATE


def test_the_installed_typer_is_inside_the_pinned_range_and_has_each_name() -> None:
    low, high = typer_pin()
    assert low <= version(typer.__version__) < high, typer.__version__
    for module, names in PRIVATE.items():
        loaded = importlib.import_module(module)
        for name in names:
            assert hasattr(loaded, name), f"{module}.{name} is gone in typer {typer.__version__}"


def test_the_completion_calls_match_what_csnotify_passes() -> None:
    from typer._completion_classes import completion_init
    from typer._completion_shared import get_completion_script

    assert inspect.signature(completion_init).parameters == {}
    params = inspect.signature(get_completion_script).parameters
    assert {"prog_name", "complete_var", "shell"} <= set(params)
