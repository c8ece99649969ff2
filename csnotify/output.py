"""Everything the CLI shows, in one place: rich tables on a terminal, plain aligned text
when piped or with NO_COLOR, JSON for scripts.

The terminal is an object passed in, so tests can give one of their own.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any


@dataclass
class Terminal:
    stdout: IO[str] = field(default_factory=lambda: sys.stdout)
    stderr: IO[str] = field(default_factory=lambda: sys.stderr)
    stdin: IO[str] = field(default_factory=lambda: sys.stdin)
    environ: Mapping[str, str] = field(default_factory=lambda: os.environ)

    @property
    def is_tty(self) -> bool:
        isatty = getattr(self.stdout, "isatty", None)
        return bool(isatty and isatty())

    @property
    def stdin_is_tty(self) -> bool:
        isatty = getattr(self.stdin, "isatty", None)
        return bool(isatty and isatty())

    @property
    def color(self) -> bool:
        return self.is_tty and not self.environ.get("NO_COLOR")

    def out(self, text: str = "") -> None:
        self.stdout.write(text + "\n")

    def err(self, text: str) -> None:
        self.stderr.write(text + "\n")
        self.stderr.flush()

    def json(self, data: Any) -> None:
        self.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")

    def table(self, columns: Sequence[str], rows: Sequence[Sequence[Any]], title: str = "") -> None:
        if self.is_tty:
            self._rich_table(columns, rows, title)
        else:
            self.stdout.write(plain_table(columns, rows))

    def _rich_table(
        self, columns: Sequence[str], rows: Sequence[Sequence[Any]], title: str
    ) -> None:
        from rich.console import Console
        from rich.table import Table

        # color_system=None: no escape codes at all (not even bold) under NO_COLOR
        console = Console(
            file=self.stdout, color_system="auto" if self.color else None, highlight=False
        )
        table = Table(title=title or None, show_lines=False, header_style="bold")
        for col in columns:
            table.add_column(col, overflow="fold")
        for row in rows:
            table.add_row(*(cell_text(v) for v in row))
        console.print(table)

    def fields(self, pairs: Sequence[tuple[str, Any]]) -> None:
        """``key: value`` lines, keys aligned."""
        width = max((len(k) for k, _ in pairs), default=0)
        for key, value in pairs:
            self.out(f"{key + ':':<{width + 1}} {cell_text(value)}")


def cell_text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return " ".join(str(v) for v in value) or "-"
    return str(value)


def plain_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Columns separated by two spaces, for ``cut``/``awk`` and people alike."""
    cells = [list(columns)] + [[cell_text(v).replace("\n", " ") for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines) + "\n"
