"""Files that hold secrets (the store, the config): 0600 files in 0700 directories."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path

from csnotify.errors import BadInput

PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700


def chosen_path(
    explicit: str | os.PathLike[str] | None,
    environ: Mapping[str, str],
    variable: str,
    default: Callable[[Mapping[str, str]], Path],
) -> Path:
    """A file's path: the command-line flag, else the environment variable, else the XDG
    default (read from the same environment)."""
    if explicit:
        return Path(explicit).expanduser()
    if environ.get(variable):
        return Path(environ[variable]).expanduser()
    return default(environ)


def xdg_home(environ: Mapping[str, str], variable: str, fallback: str) -> Path:
    """An XDG base directory: ``$XDG_..._HOME`` if absolute (the specification ignores a
    relative one), else ``$HOME/<fallback>``."""
    base = environ.get(variable, "")
    if base and Path(base).is_absolute():
        return Path(base)
    home = environ.get("HOME")
    return (Path(home) if home else Path("~").expanduser()) / fallback


def ensure_private_dir(directory: Path) -> None:
    """Create ``directory`` and missing parents with mode 0700; leave existing ones alone."""
    missing = []
    current = directory
    while not current.exists():
        missing.append(current)
        current = current.parent
    for path in reversed(missing):
        path.mkdir(mode=PRIVATE_DIR, exist_ok=True)
        path.chmod(PRIVATE_DIR)


def create_private_file(path: Path) -> None:
    """Create an empty file with mode 0600 unless it exists."""
    ensure_private_dir(path.parent)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, PRIVATE_FILE)
    except FileExistsError:
        return
    os.close(fd)
    path.chmod(PRIVATE_FILE)


def tighten(path: Path) -> str | None:
    """A file of ours that holds secrets but others may read (made by hand, copied, an old
    umask) is made 0600; returns the line that says so, or None if nothing was loose."""
    try:
        info = path.stat()
    except OSError:
        return None
    loose = info.st_mode & 0o077
    if not loose or info.st_uid != os.geteuid():
        return None
    try:
        path.chmod(PRIVATE_FILE)
    except OSError:
        return None
    return (
        f"{path} had mode {info.st_mode & 0o777:04o} (others could read its secrets); made it 0600"
    )


def write_private(path: Path, data: bytes) -> None:
    """Replace ``path`` atomically with ``data``, mode 0600: a crash leaves old or new."""
    try:
        _write_private(path, data)
    except OSError as exc:
        raise BadInput(
            f"cannot write {path}: {exc.strerror or exc}; check that its directory exists"
            " and is writable"
        ) from None


def _write_private(path: Path, data: bytes) -> None:
    import tempfile

    ensure_private_dir(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        Path(tmp).chmod(PRIVATE_FILE)
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
