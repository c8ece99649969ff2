"""The import graph, read from the source with ``ast`` (nothing is imported): data flows
one way, so the store and the domain types import none of the modules that use them, and
no circle of imports exists between the core modules."""

from __future__ import annotations

import ast
from pathlib import Path

from helpers import REPO

PACKAGE = REPO / "csnotify"


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def absolute(node: ast.ImportFrom, importer: str, is_package: bool) -> str:
    """The module an ``from X import ...`` names, relative ones resolved."""
    if node.level == 0:
        return node.module or ""
    base = importer.split(".")
    base = base[: len(base) - node.level + (1 if is_package else 0)]
    return ".".join([*base, node.module] if node.module else base)


def imports_of(path: Path) -> set[str]:
    """Every csnotify module this file imports, at the top, in functions or for typing."""
    found: set[str] = set()
    importer = module_name(path)
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            module = absolute(node, importer, path.name == "__init__.py")
            if module.startswith("csnotify"):
                found.add(module)
                found.update(f"{module}.{a.name}" for a in node.names)  # submodules, if any
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("csnotify"))
    return found


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: {m for m in imports_of(path) if m in modules and m != name}
            for name, path in modules.items()}  # fmt: skip


def reachable(g: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in g.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def circle_through(g: dict[str, set[str]], start: str) -> list[str]:
    """One shortest circle of imports from ``start`` back to it ([] when there is none)."""
    came_from: dict[str, str] = {}
    todo = [start]
    while todo:
        here = todo.pop(0)
        for nxt in sorted(g.get(here, ())):
            if nxt == start:
                path = [here]
                while path[-1] != start:
                    path.append(came_from[path[-1]])
                return [start, *reversed(path[:-1]), start]
            if nxt not in came_from:
                came_from[nxt] = here
                todo.append(nxt)
    return []


def circles(g: dict[str, set[str]]) -> list[list[str]]:
    return [c for c in (circle_through(g, m) for m in sorted(g)) if c]


def users_below(g: dict[str, set[str]], module: str) -> set[str]:
    """Modules that import ``module`` (directly or not) and that ``module`` imports too."""
    users = {m for m in g if m != module and module in reachable(g, m)}
    return users & reachable(g, module)


def test_the_domain_types_and_the_store_import_no_stage() -> None:
    g = graph()
    leaves = {"csnotify.errors", "csnotify.redact", "csnotify.signing", "csnotify.matching"}
    assert g["csnotify.models"] <= leaves
    assert all(g[leaf] <= leaves | {"csnotify.fields", "csnotify.exitcodes"} for leaf in leaves)
    users = {"csnotify.subscriptions", "csnotify.mutes", "csnotify.channels", "csnotify.delivery",
             "csnotify.dispatch", "csnotify.listen", "csnotify.sources", "csnotify.cli"}  # fmt: skip
    below_store = reachable(g, "csnotify.store")
    assert not {m for m in below_store if any(m == u or m.startswith(u + ".") for u in users)}


def test_the_store_imports_no_module_that_uses_it() -> None:
    g = graph()
    assert users_below(g, "csnotify.store") == set()
    assert users_below(g, "csnotify.models") == set()


def test_no_import_circles_anywhere_in_the_package() -> None:
    """The command line, the demo and the simulator included; imports inside functions
    and under TYPE_CHECKING count too (they are circles waiting for a refactoring)."""
    found = circles(graph())
    assert found == [], "import circles:\n" + "\n".join(" -> ".join(c) for c in found)


def test_the_checks_see_a_circle_and_a_store_that_imports_its_user() -> None:
    """The checks above can fail: on a graph with a circle through the store they do."""
    g = {"s.store": {"s.models", "s.listen"}, "s.listen": {"s.store"}, "s.models": set(),
         "s.cli": {"s.listen"}}  # fmt: skip
    assert circles(g) == [["s.listen", "s.store", "s.listen"], ["s.store", "s.listen", "s.store"]]
    assert users_below(g, "s.store") == {"s.listen"}
    assert circles({"a": {"b"}, "b": set()}) == []


def test_relative_imports_are_followed() -> None:
    node = ast.parse("from ..store import Store").body[0]
    assert isinstance(node, ast.ImportFrom)
    assert absolute(node, "csnotify.delivery.outbox", False) == "csnotify.store"
    assert absolute(node, "csnotify.delivery", True) == "csnotify.store"
