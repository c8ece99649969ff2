"""Everything the CLI shows, in one place: rich tables on a terminal, plain aligned text
when piped or with NO_COLOR, JSON for scripts.

The terminal is an object passed in, so tests can give one of their own.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar

from csnotify.errors import BadInput

T = TypeVar("T")


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

    def text_input(self) -> IO[str]:
        """stdin as text, invalid UTF-8 replaced rather than fatal (bad bytes then show as
        a bad line, not a crash)."""
        buffer = getattr(self.stdin, "buffer", None)
        if buffer is None:
            return self.stdin
        import io

        return io.TextIOWrapper(buffer, encoding="utf-8", errors="replace")

    def read_text(self, file: str, hint: str = "") -> str:
        """The text of ``file``, or of stdin for ``-``: every command that takes FILE or
        stdin reads it here. Refused as bad input: a file that cannot be read, or is not
        UTF-8 (``hint`` added to that line)."""
        if file == "-":
            return self.text_input().read()
        try:
            return self.read_bytes(file).decode("utf-8")
        except UnicodeDecodeError:
            raise BadInput(f"{file} is not UTF-8 text{hint}") from None

    def read_bytes(self, file: str) -> bytes:
        """The bytes of ``file``, or of stdin for ``-``, as they are."""
        if file == "-":
            buffer = getattr(self.stdin, "buffer", None)
            return buffer.read() if buffer is not None else self.stdin.read().encode()
        try:
            return Path(file).read_bytes()
        except OSError as exc:
            raise BadInput(f"cannot read {file}: {exc.strerror}") from None

    def secret(self, prompt: str) -> str:
        """A hidden answer typed on the terminal (``getpass``: it reads the tty itself)."""
        import getpass

        return getpass.getpass(prompt, stream=self.stderr)

    def confirm(self, question: str, err: bool = False) -> bool:
        """``question [y/N]: `` on stdout (``err``: stderr), answered on stdin, as click
        asks: empty is no, anything but y/yes/n/no asks again, end of input aborts."""
        out = self.stderr if err else self.stdout
        while True:
            out.write(f"{question} [y/N]: ")
            out.flush()
            line = self.stdin.readline()
            if not line:
                from typer import Abort

                out.write("\n")
                raise Abort
            answer = line.strip().lower()
            if answer in ("", "n", "no"):
                return False
            if answer in ("y", "yes"):
                return True
            out.write("Error: invalid input\n")

    @property
    def stdin_is_tty(self) -> bool:
        isatty = getattr(self.stdin, "isatty", None)
        return bool(isatty and isatty())

    @property
    def stderr_is_tty(self) -> bool:
        isatty = getattr(self.stderr, "isatty", None)
        return bool(isatty and isatty())

    def progress(self, items: Iterable[T], total: int | None, what: str) -> Iterator[T]:
        """``items`` unchanged, with a progress bar on stderr when it is a terminal."""
        if not self.stderr_is_tty:
            yield from items
            return
        from rich.progress import Progress

        with Progress(console=self.console(stderr=True), transient=True) as bar:
            task = bar.add_task(what, total=total)
            for item in items:
                yield item
                bar.advance(task)

    @property
    def color(self) -> bool:
        return self.is_tty and not self.environ.get("NO_COLOR")

    @property
    def live(self) -> bool:
        """Redrawn displays (cursor movement) only where colour is welcome too: NO_COLOR
        means no escape codes of any kind."""
        return self.color

    def wrap(self, text: str) -> str:
        """Long text for people: on a terminal, broken between words at its width (the
        terminal itself would break wherever the line ends), else as it is."""
        if not self.is_tty:
            return text
        import textwrap

        width = self.console().width
        lines = text.split("\n")
        return "\n".join(
            textwrap.fill(p, width, break_long_words=False, break_on_hyphens=False) for p in lines
        )

    def stdout_gone(self) -> None:
        """The reader of our output went away (``csnotify list | head -1``): point stdout
        at /dev/null so that nothing more, not even Python's last flush, fails on it (a
        stdout that is no file, a test's, is left as it is)."""
        try:
            fd = self.stdout.fileno()
        except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation: no file
            return
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, fd)
        os.close(devnull)

    def out(self, text: str = "") -> None:
        self.stdout.write(printable(text) + "\n")

    def err(self, text: str) -> None:
        self.stderr.write(printable(text) + "\n")
        self.stderr.flush()

    def json(self, data: Any) -> None:
        self.stdout.write(printable(json.dumps(data, indent=2, ensure_ascii=False)) + "\n")

    def json_line(self, data: Any) -> None:
        """One JSON line (JSON lines: a stream that scripts read as it comes)."""
        text = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
        self.stdout.write(printable(text) + "\n")

    def console(self, stderr: bool = False) -> Any:
        """A rich console for this terminal; color_system=None means no escape codes at all
        (not even bold) under NO_COLOR."""
        from rich.console import Console

        return Console(
            file=self.stderr if stderr else self.stdout,
            color_system="auto" if self.color else None,
            highlight=False,
        )

    def table(
        self,
        columns: Sequence[str],
        rows: Sequence[Sequence[Any]],
        title: str = "",
        optional: Sequence[str] = (),
        whole: Sequence[str] = (),
    ) -> None:
        """A table: plain aligned text when piped, a rich table on a terminal."""
        if not self.is_tty:
            self.stdout.write(plain_table(columns, rows))
            return
        self.console().print(self.rich_table(columns, rows, title, optional, whole))

    def rich_table(
        self,
        columns: Sequence[str],
        rows: Sequence[Sequence[Any]],
        title: str = "",
        optional: Sequence[str] = (),
        whole: Sequence[str] = (),
    ) -> Any:
        """The ``optional`` columns (last first) are left out while the table would be wider
        than the terminal; headers are never split, nor the cells of ``whole`` columns
        (times, names: what a reader scans for)."""
        from rich.table import Table

        width = self.console().width
        keep = list(range(len(columns)))
        droppable = [columns.index(c) for c in optional if c in columns]
        while droppable and _natural_width(columns, rows, keep) > width:
            keep.remove(droppable.pop())
        from rich.text import Text

        # Cells are Text, never markup: an event's "[link=...]" is shown, not made a link.
        table = Table(title=Text(title) if title else None, show_lines=False, header_style="bold")
        for i in keep:
            table.add_column(
                Text(columns[i]),
                overflow="fold",
                min_width=len(columns[i]),
                no_wrap=columns[i] in whole,
            )
        for row in rows:
            table.add_row(*(Text(cell_text(row[i])) for i in keep))
        return table

    def fields(self, pairs: Sequence[tuple[str, Any]]) -> None:
        """``key: value`` lines, keys aligned."""
        width = max((len(k) for k, _ in pairs), default=0)
        for key, value in pairs:
            self.out(f"{key + ':':<{width + 1}} {cell_text(value)}")


def _natural_width(columns: Sequence[str], rows: Sequence[Sequence[Any]], keep: list[int]) -> int:
    widths = [max([len(columns[i])] + [len(cell_text(r[i])) for r in rows]) for i in keep]
    return sum(widths) + 3 * len(keep) + 1


def cell_text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return " ".join(printable(str(v)) for v in value) or "-"
    return printable(str(value))


# Characters a terminal acts on instead of showing: C0 and C1 controls, DEL, and the
# bidirectional overrides that reorder what is shown. Lines and tabs stay.
_UNPRINTABLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """``text`` with what an event, a template or a program's stderr could use to drive
    the terminal (escape sequences, bell, bidi overrides) shown as \\uXXXX escapes, which
    are also valid inside JSON strings."""
    return _UNPRINTABLE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def plain_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Columns separated by two spaces, for ``cut``/``awk`` and people alike."""
    cells = [list(columns)] + [[cell_text(v).replace("\n", " ") for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines) + "\n"
