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


def imports_of(path: Path) -> set[str]:
    """Every csnotify module this file imports, at the top, in functions or for typing."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.startswith("csnotify"):
                found.add(node.module)
                found.update(
                    f"{node.module}.{a.name}"
                    for a in node.names
                    if (PACKAGE.parent / f"{node.module}.{a.name}".replace(".", "/")).exists()
                    or (
                        PACKAGE.parent / (f"{node.module}.{a.name}".replace(".", "/") + ".py")
                    ).exists()
                )
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


def test_the_domain_types_and_the_store_import_no_stage() -> None:
    g = graph()
    leaves = {"csnotify.errors", "csnotify.redact", "csnotify.signing", "csnotify.matching"}
    assert g["csnotify.models"] <= leaves
    assert all(g[leaf] <= leaves | {"csnotify.fields", "csnotify.exitcodes"} for leaf in leaves)
    users = {"csnotify.subscriptions", "csnotify.mutes", "csnotify.channels", "csnotify.delivery",
             "csnotify.dispatch", "csnotify.listen", "csnotify.sources", "csnotify.cli"}  # fmt: skip
    below_store = reachable(g, "csnotify.store")
    assert not {m for m in below_store if any(m == u or m.startswith(u + ".") for u in users)}


def test_no_import_circles_in_the_core() -> None:
    g = graph()
    core = [
        m for m in g if not m.startswith(("csnotify.cli", "csnotify.demo", "csnotify.simulator"))
    ]
    circles = sorted(m for m in core if m in reachable(g, m))
    assert circles == []
