"""``asyncmig create NAME``: a new timestamped migration and its rollback, from templates.

Decisions:

* The version is the UTC time ``yyyymmddHHMMSS``: teammates in different time zones get
  versions in the order they were created.
* NAME is sanitised, never trusted as a path: separators and ``..`` are rejected;
  it is lowercased, spaces and dashes become underscores, a trailing ``.sql`` is
  dropped, and what remains must be lowercase letters, digits and underscores. This is
  stricter than what the loader accepts (upper case and ``-`` too, for files written by
  hand or by other tools): new files get one consistent style, and a name written with
  dashes (``add-orders``) is not turned into a different-looking file than before.
* Files are created exclusively: an existing file, or any file already using the same
  version, is an error, never overwritten.
* The templates hold only comments (no ``BEGIN``/``COMMIT``): asyncmig owns the
  transaction, and a file with nothing but comments loads as an empty migration.
"""

from __future__ import annotations

import getpass
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from .errors import ConfigError

__all__ = ["Created", "create_migration", "sanitize_name"]

_VALID = re.compile(r"[a-z0-9_]+")

FORWARD_TEMPLATE = """\
-- Migration: {name}
-- Version: {version}
-- Author: {author}
-- Date: {date}
--
-- This file runs in one transaction together with its history row, so do not
-- write BEGIN or COMMIT. Statements that cannot run inside a transaction
-- (CREATE INDEX CONCURRENTLY, VACUUM, ...) need the no-transaction directive as
-- the first line of the file; see the README.

-- Write your migration SQL here.
"""

ROLLBACK_TEMPLATE = """\
-- Rollback for: {name}
-- Version: {version}
--
-- Undo what {forward} does, in reverse order. Like the migration, this file runs
-- inside a transaction: do not write BEGIN or COMMIT.

-- Write your rollback SQL here.
"""


@dataclass(frozen=True, slots=True)
class Created:
    version: str
    name: str
    forward: Path
    rollback: Path

    def to_dict(self) -> dict[str, str]:
        return {
            "version": self.version,
            "name": self.name,
            "forward": str(self.forward),
            "rollback": str(self.rollback),
        }


def sanitize_name(raw: str) -> str:
    """The migration name for ``raw``, or :class:`ConfigError` saying what is wrong."""
    text = raw.strip()
    if "/" in text or "\\" in text or ".." in text:
        raise ConfigError(
            f"invalid migration name {raw!r}: a name, not a path (no '/', '\\' or '..')"
        )
    if text.lower().endswith(".sql"):
        text = text[:-4]
    text = re.sub(r"[\s\-]+", "_", text.lower()).strip("_")
    text = re.sub(r"_+", "_", text)
    if not text:
        raise ConfigError("invalid migration name: it is empty")
    if not _VALID.fullmatch(text):
        bad = "".join(sorted({c for c in text if not _VALID.fullmatch(c)}))
        raise ConfigError(
            f"invalid migration name {raw!r}: only letters a-z, digits, spaces, '-' and '_' "
            f"are allowed (found {bad!r})"
        )
    return text


def create_migration(
    raw_name: str,
    sql_dir: Path,
    rollback_dir: Path,
    *,
    now: datetime | None = None,
    author: str | None = None,
) -> Created:
    """Write ``sql/<version>_<name>.sql`` and ``rollback/<version>_<name>_rollback.sql``."""
    name = sanitize_name(raw_name)
    now = (now or datetime.now(UTC)).astimezone(UTC)
    version = now.strftime("%Y%m%d%H%M%S")
    forward = sql_dir / f"{version}_{name}.sql"
    rollback = rollback_dir / f"{version}_{name}_rollback.sql"
    for directory in (sql_dir, rollback_dir):
        if directory.is_dir():
            taken = sorted(p.name for p in directory.glob(f"{version}_*"))
            if taken:
                raise ConfigError(
                    f"version {version} is already used by {directory / taken[0]}; "
                    f"wait a second and run create again"
                )
    fields = {
        "name": name,
        "version": version,
        "author": author or _author(),
        "date": now.isoformat(timespec="seconds"),
        "forward": forward.name,
    }
    sql_dir.mkdir(parents=True, exist_ok=True)
    rollback_dir.mkdir(parents=True, exist_ok=True)
    _write_new(forward, FORWARD_TEMPLATE.format(**fields))
    try:
        _write_new(rollback, ROLLBACK_TEMPLATE.format(**fields))
    except BaseException:
        forward.unlink(missing_ok=True)
        raise
    return Created(version=version, name=name, forward=forward, rollback=rollback)


def _write_new(path: Path, text: str) -> None:
    try:
        with path.open("x", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
    except FileExistsError:
        raise ConfigError(f"{path} already exists; not overwriting it") from None
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from None


def _author() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers with an arbitrary uid)
        return "unknown"
