"""Find, read and check migration files — pure: no database, no global state.

The loader turns ``sql/`` and ``rollback/`` into an immutable :class:`MigrationSet`,
or says exactly which file is wrong and where (``path:line:column: message``). It is the
"fail before touching the database" step: every rule below is checked before a
connection is opened. Rules (DESIGN §2, §4) and the decisions taken where the design is
silent:

File names
    Forward files are ``<version>_<name>.sql``: ``<version>`` is 1–20 ASCII digits,
    compared as an integer (``9 < 10 < 20261126153000``); ``<name>`` is ASCII letters of
    either case, digits, underscores and hyphens, so names other tools' users already
    have (``0187_Add_email_notifications.sql``, ``0188_add-index.sql``) load unchanged;
    ``asyncmig create`` still writes lowercase names with underscores. Dotfiles
    (editor swap files, macOS ``._*``), subdirectories and files not ending in ``.sql``
    are ignored, so a ``README.md`` may live in ``sql/``. A file ending in ``.SQL``
    (any case) is *not* ignored but reported: silently skipping something that looks
    like a migration is worse than an error.
    Rollback files only need to start with ``<version>_`` and end in ``.sql``
    (``001_drop_users_table.sql`` and ``001_create_users_table_rollback.sql`` both fit).

Text, checksum, directives and transaction control
    Each file is read, checksummed, split and checked by :mod:`asyncmig.sqlfile`, whose
    docstring gives those rules; this module finds the files and ties them into
    versions.

Rollback files
    ``migrate`` never runs a rollback file, so a problem in one (its name, encoding,
    splitting, directives, transaction control, two files for one version) must not
    block a deploy. :func:`load_migrations` loading eagerly (what ``migrate`` does)
    turns each into a warning naming the file, line and column, keeps the migration
    and, when the file could be read, its text (stored in history as at apply time).
    Loading lazily (what ``rollback`` does), a rollback file that cannot be read or is
    ambiguous is attached as a file that raises its error when used, so ``rollback``
    refuses exactly the files it would run. :func:`scan_migrations` (``validate``)
    reports every one as an error.

Empty migrations
    A file with no statements (or only an outer BEGIN/COMMIT, like the seed's ``create``
    template) loads, with a warning: applying it only records the version.

Directories
    A missing ``sql/`` is an error; a missing ``rollback/`` is one warning (not one per
    migration); ``rollback_dir=None`` means "do not look", with no warnings. A rollback
    file whose version has no forward file is a warning and is not loaded.

Speed
    This runs at the start of every replica. Per directory it is one ``scandir`` and a
    name match per file; the per-file work is :mod:`asyncmig.sqlfile`'s. 300 files of
    ~2 KB: about 7 ms of CPU on top of the splitter.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Literal

from .directives import Directives
from .errors import (
    AmbiguousRollbackError,
    DuplicateVersionError,
    FileNameError,
    MigrationFileError,
)
from .splitter import Statement
from .sqlfile import (
    SqlFile,
    checksum_text,
    load_sql_file,
    parse_sql_text,
    read_sql_text,
    unusable_sql_file,
)

__all__ = [
    "Directives",
    "Migration",
    "MigrationSet",
    "SqlFile",
    "checksum_text",
    "load_migrations",
    "load_sql_file",
    "parse_sql_text",
    "read_sql_text",
    "scan_migrations",
]

MAX_VERSION_DIGITS = 20


# --------------------------------------------------------------------------- values


@dataclass(frozen=True, slots=True)
class Migration:
    """A version: its forward file and, when ``rollback/`` has one, its rollback file."""

    version: int
    name: str
    forward: SqlFile
    rollback: SqlFile | None = None

    @property
    def filename(self) -> str:
        """The forward file's name, as recorded in history (``001_create_users.sql``)."""
        return self.forward.path.name

    @property
    def transactional(self) -> bool:
        """False when the forward file says ``-- asyncmig: no-transaction``."""
        return self.forward.directives.transactional

    @property
    def checksum(self) -> str:
        """The forward file's checksum."""
        return self.forward.checksum

    @property
    def statements(self) -> tuple[Statement, ...]:
        """The forward file's statements (outer BEGIN/COMMIT dropped)."""
        return self.forward.statements


@dataclass(frozen=True, slots=True)
class MigrationSet:
    """Every migration on disk, sorted by integer version, with notices and warnings.

    The constructor sorts ``migrations`` and refuses two with the same version, so the
    invariant holds for any set, including subsets a caller builds.
    """

    migrations: tuple[Migration, ...] = ()
    notices: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    _by_version: Mapping[int, Migration] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        ordered = tuple(sorted(self.migrations, key=lambda m: m.version))
        by_version = {m.version: m for m in ordered}
        if len(by_version) != len(ordered):
            raise ValueError("a MigrationSet cannot hold two migrations with one version")
        object.__setattr__(self, "migrations", ordered)
        object.__setattr__(self, "notices", tuple(self.notices))
        object.__setattr__(self, "warnings", tuple(self.warnings))
        object.__setattr__(self, "_by_version", MappingProxyType(by_version))

    def get(self, version: int) -> Migration | None:
        """The migration with this version, or None."""
        return self._by_version.get(version)

    @property
    def versions(self) -> tuple[int, ...]:
        """All versions, ascending."""
        return tuple(m.version for m in self.migrations)

    @property
    def latest(self) -> Migration | None:
        """The migration with the highest version, or None when there is none."""
        return self.migrations[-1] if self.migrations else None

    def __len__(self) -> int:
        return len(self.migrations)

    def __iter__(self) -> Iterator[Migration]:
        return iter(self.migrations)

    def __contains__(self, version: object) -> bool:
        return version in self._by_version


# --------------------------------------------------------------------------- directories

_FORWARD_NAME = re.compile(r"(?P<version>[0-9]{1,20})_(?P<name>[A-Za-z0-9_-]+)\.sql")
_ROLLBACK_NAME = re.compile(r"(?P<version>[0-9]{1,20})_(?P<name>.+)\.sql", re.S)
_FORWARD_RULE = (
    "a migration file must be named <version>_<name>.sql, where <version> is 1–20 digits "
    "and <name> is letters, digits, underscores and hyphens (e.g. 001_create_users.sql)"
)
_ROLLBACK_RULE = (
    "a rollback file must be named <version>_<anything>.sql, where <version> is the "
    "forward migration's version (e.g. 001_create_users_rollback.sql)"
)
_ROLLBACK_WARNING = (
    " — migrate does not run rollback files, so it goes on; `asyncmig validate` and "
    "`asyncmig rollback` of this version refuse the file until it is fixed"
)

# What to do with a problem in a rollback file: collect it with the other errors
# (validate), turn it into a warning (migrate never runs rollback files), or attach it
# to the migration, raised when the file is used (rollback).
_RollbackProblems = Literal["error", "warn", "defer"]

# The files that claim one version: (name part, path), in file-name order.
_Entries = list[tuple[str, Path]]


@dataclass(slots=True)
class _Scan:
    """One scan's settings and what it found: errors, warnings and notices in file order."""

    lazy: bool
    rollback_problems: _RollbackProblems
    errors: list[MigrationFileError] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)

    def rollback_problem(self, error: MigrationFileError) -> None:
        """A rollback file's problem that is not attached to its file: a warning when
        loading for ``migrate``, else an error."""
        if self.rollback_problems == "warn":
            self.warnings.append(str(error) + _ROLLBACK_WARNING)
        else:
            self.errors.append(error)


def _sql_files(directory: Path) -> list[str]:
    """Names of the candidate files: not dotfiles, regular files, ending in .sql (any case)."""
    try:
        with os.scandir(directory) as entries:
            names = [
                entry.name
                for entry in entries
                if not entry.name.startswith(".")
                and entry.name.lower().endswith(".sql")
                and entry.is_file()
            ]
    except OSError as exc:
        raise MigrationFileError(
            f"cannot list directory: {exc.strerror or exc}", path=directory
        ) from exc
    return sorted(names)


def _name_problem(filename: str) -> str:
    stem, _, extension = filename.rpartition(".")
    digits = len(stem) - len(stem.lstrip("0123456789"))
    if extension != "sql":
        return f"the extension must be lowercase .sql, not .{extension}"
    if digits == 0:
        return "it does not start with a version number"
    if digits > MAX_VERSION_DIGITS:
        return f"its version has {digits} digits, at most {MAX_VERSION_DIGITS} are allowed"
    if stem[digits : digits + 1] != "_":
        return "the version must be followed by an underscore"
    return f"the name part {stem[digits + 1 :]!r} may use only ASCII letters, digits, _ and -"


def _index_directory(
    directory: Path,
    pattern: re.Pattern[str],
    rule: str,
    report: Callable[[MigrationFileError], None],
) -> dict[int, _Entries]:
    """The directory's files by version; a misnamed file is reported, not indexed."""
    found: dict[int, _Entries] = {}
    for filename in _sql_files(directory):
        path = directory / filename
        match = pattern.fullmatch(filename)
        if match is None:
            report(FileNameError(f"{_name_problem(filename)}; {rule}", path=path))
            continue
        found.setdefault(int(match["version"]), []).append((match["name"], path))
    return found


def _listed(entries: _Entries) -> str:
    return ", ".join(str(path) for _, path in entries)


def scan_migrations(
    sql_dir: Path | str, rollback_dir: Path | str | None = None, *, lazy: bool = False
) -> tuple[MigrationSet, tuple[MigrationFileError, ...]]:
    """Load every migration, collecting *all* file errors instead of stopping at one.

    For ``validate``. Returns the migrations that loaded (a version with a duplicate or
    a broken forward file is left out; one whose rollback is broken or ambiguous is kept
    without its rollback) and the errors in file order. A missing ``sql_dir`` is raised,
    not collected: nothing else can be checked.
    """
    return _scan(Path(sql_dir), rollback_dir, _Scan(lazy, "error"))


def _scan(
    sql_dir: Path, rollback_dir: Path | str | None, scan: _Scan
) -> tuple[MigrationSet, tuple[MigrationFileError, ...]]:
    if not sql_dir.is_dir():
        raise MigrationFileError(
            "migrations directory not found (set it with --sql-dir, or sql_dir= in the library)"
            if not sql_dir.exists()
            else "not a directory; the migrations directory must be one",
            path=sql_dir,
        )
    forward = _index_directory(sql_dir, _FORWARD_NAME, _FORWARD_RULE, scan.errors.append)
    rollbacks: dict[int, _Entries] = {}
    searched: Path | None = None  # the rollback directory, when there is one to look in
    if rollback_dir is not None:
        rollback_dir = Path(rollback_dir)
        if rollback_dir.is_dir():
            searched = rollback_dir
            rollbacks = _index_directory(
                rollback_dir, _ROLLBACK_NAME, _ROLLBACK_RULE, scan.rollback_problem
            )
        elif forward:
            scan.warnings.append(
                f"{rollback_dir}: rollback directory not found; no migration has a rollback file"
            )

    migrations: list[Migration] = []
    for version in sorted(forward):
        candidates = rollbacks.pop(version, [])
        migration = _migration(version, forward[version], candidates, searched, scan)
        if migration is not None:
            migrations.append(migration)

    for version in sorted(rollbacks):
        for _, path in rollbacks[version]:
            scan.warnings.append(
                f"{path}: rollback file without a forward migration {version}_*.sql"
            )

    result = MigrationSet(tuple(migrations), tuple(scan.notices), tuple(scan.warnings))
    return result, tuple(scan.errors)


def _migration(
    version: int,
    entries: _Entries,
    candidates: _Entries,
    rollback_dir: Path | None,
    scan: _Scan,
) -> Migration | None:
    """The version's migration, or None when its forward file is duplicated or broken."""
    loaded = [_try_load(path, scan) for _, path in entries]
    if len(entries) > 1:
        scan.errors.append(
            DuplicateVersionError(
                f"version {version} is used by {len(entries)} files: {_listed(entries)}; "
                "versions compare as integers (001 and 1 are the same version) — renumber "
                "all but one",
                path=entries[1][1],
            )
        )
        return None
    (name, path), sql_file = entries[0], loaded[0]
    rollback, rollback_ok = _load_rollback(version, path, candidates, scan)
    if not candidates and rollback_dir is not None:
        scan.warnings.append(
            f"{path}: no rollback file for version {version} in {rollback_dir}; "
            "`asyncmig rollback` will use the SQL stored in history at apply time"
        )
    if sql_file is None:
        return None
    for file in (sql_file, rollback if rollback_ok else None):
        if file is None or scan.lazy:  # lazy: notices come with each file once it is used
            continue
        scan.notices.extend(file.notices)
        if not file.statements:
            scan.warnings.append(
                f"{file.path}: no statements"
                + ("" if file is rollback else f"; applying it only records version {version}")
            )
    return Migration(version, name, sql_file, rollback)


def _try_load(path: Path, scan: _Scan) -> SqlFile | None:
    try:
        return load_sql_file(path, lazy=scan.lazy)
    except MigrationFileError as exc:
        scan.errors.append(exc)
        return None


def _load_rollback(
    version: int, forward_path: Path, candidates: _Entries, scan: _Scan
) -> tuple[SqlFile | None, bool]:
    """The version's rollback file, and whether it loaded cleanly (eager: also checked).

    A problem goes where ``scan.rollback_problems`` says. Warned about, a file that could
    be read is still returned, unchecked, so its text is stored in history as at apply
    time.
    """
    if not candidates:
        return None, False
    path = candidates[-1][1]
    file: SqlFile | None = None
    try:
        if len(candidates) > 1:
            raise AmbiguousRollbackError(
                f"{len(candidates)} rollback files for version {version} ({forward_path.name}):"
                f" {_listed(candidates)}; keep exactly one",
                path=candidates[1][1],
            )
        file = load_sql_file(path, lazy=True)
        if not scan.lazy:
            file.check()
        return file, True
    except MigrationFileError as exc:
        if scan.rollback_problems == "defer":
            return unusable_sql_file(exc.path or path, exc), False
        scan.rollback_problem(exc)
        return (file if scan.rollback_problems == "warn" else None), False


def load_migrations(
    sql_dir: Path | str, rollback_dir: Path | str | None = None, *, lazy: bool = False
) -> MigrationSet:
    """Load every migration, or raise the first :class:`MigrationFileError`.

    When there are more errors, the raised one carries a note saying how many, so a
    user knows to run ``asyncmig validate`` for the full list. ``lazy``: see
    :class:`SqlFile` (names, encodings and checksums are still checked at once).

    Problems in rollback files are never raised here (see "Rollback files" in the
    module docstring): loaded eagerly, as ``migrate`` does, each is a warning in
    :attr:`MigrationSet.warnings`; loaded lazily, as ``rollback`` does, it is raised when
    that file is used.
    """
    scan = _Scan(lazy, "defer" if lazy else "warn")
    migrations, errors = _scan(Path(sql_dir), rollback_dir, scan)
    if errors:
        first = errors[0]
        if len(errors) > 1:
            first.add_note(
                f"{len(errors) - 1} more file error(s); `asyncmig validate` lists them all"
            )
        raise first
    return migrations
