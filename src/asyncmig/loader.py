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

Text and checksum
    Strict UTF-8; a leading BOM is dropped, and nothing else is changed: what runs is the
    file's text exactly as psql sends it, so a CRLF file inserts ``\r\n`` where a
    string literal or a function body spans lines, as psql does. Only the checksum
    normalises: SHA-256 of the text with CRLF and lone CR turned into LF, so line
    endings never count as an edit, any other change does, and a file's checksum is the
    one earlier releases recorded. Lines are counted at LF, so CRLF is one line break in
    every message (see :mod:`asyncmig.splitter` for lone CR). A NUL character is
    rejected as an encoding error too: PostgreSQL cannot receive it in a query. Columns
    count characters (code points), 1-based, like the splitter's.

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

Directives and transaction control
    Their rules live beside their code: :mod:`asyncmig.directives` and
    :mod:`asyncmig.transactions`.

Empty migrations
    A file with no statements (or only an outer BEGIN/COMMIT, like the seed's ``create``
    template) loads, with a warning: applying it only records the version.

Directories
    A missing ``sql/`` is an error; a missing ``rollback/`` is one warning (not one per
    migration); ``rollback_dir=None`` means "do not look", with no warnings. A rollback
    file whose version has no forward file is a warning and is not loaded.

Speed
    This runs at the start of every replica. Beyond splitting, the per-file work is a
    read, a hash, one literal-led regex scan for ``asyncmig`` and one pass over the
    statements testing flags; words are only extracted from transaction-control
    statements. 300 files of ~2 KB: about 7 ms of CPU on top of the splitter.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Literal

from .directives import Directives, parse_directives
from .errors import (
    AmbiguousRollbackError,
    DuplicateVersionError,
    EncodingError,
    FileNameError,
    MigrationFileError,
)
from .splitter import Statement, split_statements
from .transactions import apply_transaction_rules

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
class _Analysis:
    directives: Directives
    statements: tuple[Statement, ...]
    dropped_outer_transaction: bool
    notices: tuple[str, ...]


class SqlFile:
    """One SQL file: its normalised text, checksum, directives and statements.

    ``statements`` no longer contains a dropped outer BEGIN/COMMIT
    (``dropped_outer_transaction`` says whether there was one). ``notices`` are
    informational ``path:line:col: …`` lines about this file, such as that drop.

    Loaded with ``lazy=True`` (what a migrate or rollback run does), a file is read and
    checksummed at once but split and checked on first use of ``statements``,
    ``directives``, ``dropped_outer_transaction`` or ``notices``, which then raise any
    :class:`MigrationFileError`. A replica with nothing pending, or a rollback, need not
    split the files it will not run; the engine forces the files of its plan before it
    takes the lock. Immutable either way.
    """

    __slots__ = ("_analysis", "_error", "checksum", "path", "text")

    path: Path
    text: str
    checksum: str
    _analysis: _Analysis | None
    _error: MigrationFileError | None

    def __init__(
        self,
        path: Path,
        text: str,
        checksum: str,
        directives: Directives | None = None,
        statements: tuple[Statement, ...] | None = None,
        dropped_outer_transaction: bool = False,
        notices: tuple[str, ...] = (),
    ) -> None:
        analysis = None
        if directives is not None or statements is not None:
            analysis = _Analysis(
                directives or Directives(), tuple(statements or ()),
                dropped_outer_transaction, tuple(notices),
            )  # fmt: skip
        for name, value in (("path", path), ("text", text), ("checksum", checksum),
                            ("_analysis", analysis), ("_error", None)):  # fmt: skip
            object.__setattr__(self, name, value)

    @classmethod
    def _unusable(cls, path: Path, error: MigrationFileError) -> SqlFile:
        """A file that could not be loaded (unreadable, ambiguous): raises ``error`` on use."""
        file = cls(path, "", "")
        object.__setattr__(file, "_error", error)
        return file

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"SqlFile is immutable (cannot set {name})")

    def _analysed(self) -> _Analysis:
        if self._error is not None:
            raise self._error
        if self._analysis is None:
            object.__setattr__(self, "_analysis", _analyse(self.text, self.path))
        assert self._analysis is not None
        return self._analysis

    @property
    def directives(self) -> Directives:
        return self._analysed().directives

    @property
    def statements(self) -> tuple[Statement, ...]:
        return self._analysed().statements

    @property
    def dropped_outer_transaction(self) -> bool:
        return self._analysed().dropped_outer_transaction

    @property
    def notices(self) -> tuple[str, ...]:
        return self._analysed().notices

    def check(self) -> SqlFile:
        """Split and check now (raises the file's error, if any); returns self."""
        self._analysed()
        return self

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SqlFile):
            return NotImplemented
        return (self.path, self.checksum, self.text) == (other.path, other.checksum, other.text)

    def __hash__(self) -> int:
        return hash((self.path, self.checksum))

    def __repr__(self) -> str:
        return f"SqlFile(path={self.path!r}, checksum={self.checksum[:12]!r}…)"


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


# --------------------------------------------------------------------------- text

_BOM = b"\xef\xbb\xbf"


def _normalise_newlines(text: str) -> str:
    if "\r" not in text:
        return text
    return text.replace("\r\n", "\n").replace("\r", "\n")


_HASH_CHUNK = 1 << 20


def checksum_text(text: str) -> str:
    """SHA-256 hex digest of the text normalised: leading BOM dropped, CRLF and lone CR
    turned into LF, encoded as UTF-8. The same for the LF, CRLF and CR forms of a file.

    Normalised and encoded a slice at a time (a CRLF pair never split between two): a
    50 MB data migration must not need a second 50 MB copy.
    """
    digest = hashlib.sha256()
    size = len(text)
    start = 1 if text.startswith("\ufeff") else 0
    while start < size:
        end = min(start + _HASH_CHUNK, size)
        while end < size and text[end - 1] == "\r":
            end += 1
        digest.update(_normalise_newlines(text[start:end]).encode("utf-8"))
        start = end
    return digest.hexdigest()


def read_sql_text(path: Path) -> str:
    """Read a migration file as it runs: strict UTF-8, a leading BOM dropped, line
    endings kept (a CRLF inside a string literal is data, as for psql).

    Raises :class:`EncodingError` naming the file, the byte offset of the first bad
    byte, and its line and column; :class:`MigrationFileError` if it cannot be read.
    """
    return _read(path)[0]


def _read(path: Path) -> tuple[str, str]:
    """The text as it runs (a leading BOM dropped) and its checksum.

    A file with no BOM and no carriage return is its own normalised UTF-8 encoding, so
    hashing the bytes read saves encoding the whole text again (tens of MB for data).
    """
    if not isinstance(path, Path):
        path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise MigrationFileError(f"cannot read file: {exc.strerror or exc}", path=path) from exc
    skip = len(_BOM) if data.startswith(_BOM) else 0
    try:
        text = data[skip:].decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = skip + exc.start
        raise _encoding_error(
            data,
            skip,
            offset,
            f"invalid UTF-8 (byte 0x{data[offset]:02x}: {exc.reason}) at byte offset {offset}; "
            "asyncmig reads migration files as strict UTF-8 — re-save the file as UTF-8",
            path,
        ) from None
    nul = data.find(b"\x00")
    if nul != -1:
        raise _encoding_error(
            data,
            skip,
            nul,
            f"NUL character at byte offset {nul}; PostgreSQL cannot receive it in a query",
            path,
        )
    if skip == 0 and b"\r" not in data:
        return text, hashlib.sha256(data).hexdigest()
    return text, checksum_text(text)


def _encoding_error(data: bytes, skip: int, offset: int, message: str, path: Path) -> EncodingError:
    # Everything before the first bad byte decodes; count lines the way the checksum's
    # normalised text has them (CRLF and lone CR are one line break each).
    prefix = _normalise_newlines(data[skip:offset].decode("utf-8", errors="replace"))
    line = prefix.count("\n") + 1
    column = len(prefix) - (prefix.rfind("\n") + 1) + 1
    return EncodingError(message, path=path, line=line, column=column, byte_offset=offset)


# --------------------------------------------------------------------------- one file


def load_sql_file(path: Path, *, lazy: bool = False) -> SqlFile:
    """Read, split and check one migration or rollback file.

    Raises the first :class:`MigrationFileError` found: encoding, splitting,
    directives, transaction control, missing ``no-transaction`` directive.
    """
    if not isinstance(path, Path):
        path = Path(path)
    text, checksum = _read(path)
    file = SqlFile(path, text, checksum)
    return file if lazy else file.check()


def parse_sql_text(text: str, path: Path | str) -> SqlFile:
    """Check SQL that is already in memory, such as rollback SQL stored in history.

    The same rules as :func:`load_sql_file`; ``path`` only labels messages. A leading
    BOM is dropped (line endings are kept, as from a file), and the checksum is the
    file's.
    """
    text = text.removeprefix("\ufeff")
    return SqlFile(Path(path), text, checksum_text(text)).check()


def _analyse(text: str, path: Path) -> _Analysis:
    statements = split_statements(text, path=path)
    directives = parse_directives(text, statements, path)
    body, begin, end = apply_transaction_rules(statements, directives, path)
    notices: tuple[str, ...] = ()
    if begin is not None and end is not None:
        notices = (
            f"{path}:{begin.line}:{begin.column}: outer {begin.keyword}/{end.keyword} dropped "
            f"(lines {begin.line} and {end.line}) — asyncmig runs each migration in its own "
            "transaction",
        )
    return _Analysis(directives, tuple(body), begin is not None, notices)


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
    directory: Path, pattern: re.Pattern[str], rule: str, errors: list[MigrationFileError]
) -> dict[int, list[tuple[str, Path]]]:
    found: dict[int, list[tuple[str, Path]]] = {}
    for filename in _sql_files(directory):
        path = directory / filename
        match = pattern.fullmatch(filename)
        if match is None:
            errors.append(FileNameError(f"{_name_problem(filename)}; {rule}", path=path))
            continue
        found.setdefault(int(match["version"]), []).append((match["name"], path))
    return found


def _try_load(path: Path, errors: list[MigrationFileError], lazy: bool = False) -> SqlFile | None:
    try:
        return load_sql_file(path, lazy=lazy)
    except MigrationFileError as exc:
        errors.append(exc)
        return None


def scan_migrations(
    sql_dir: Path | str, rollback_dir: Path | str | None = None, *, lazy: bool = False
) -> tuple[MigrationSet, tuple[MigrationFileError, ...]]:
    """Load every migration, collecting *all* file errors instead of stopping at one.

    For ``validate``. Returns the migrations that loaded (a version with a duplicate or
    a broken forward file is left out; one whose rollback is broken or ambiguous is kept
    without its rollback) and the errors in file order. A missing ``sql_dir`` is raised,
    not collected: nothing else can be checked.
    """
    return _scan(Path(sql_dir), rollback_dir, lazy, "error")


def _scan(
    sql_dir: Path,
    rollback_dir: Path | str | None,
    lazy: bool,
    rollback_problems: _RollbackProblems,
) -> tuple[MigrationSet, tuple[MigrationFileError, ...]]:
    if not sql_dir.is_dir():
        raise MigrationFileError(
            "migrations directory not found (set it with --sql-dir, or sql_dir= in the library)"
            if not sql_dir.exists()
            else "not a directory; the migrations directory must be one",
            path=sql_dir,
        )
    errors: list[MigrationFileError] = []
    warnings: list[str] = []
    notices: list[str] = []

    forward = _index_directory(sql_dir, _FORWARD_NAME, _FORWARD_RULE, errors)
    rollbacks: dict[int, list[tuple[str, Path]]] = {}
    check_rollbacks = False
    if rollback_dir is not None:
        rollback_dir = Path(rollback_dir)
        if rollback_dir.is_dir():
            name_errors: list[MigrationFileError] = []
            rollbacks = _index_directory(rollback_dir, _ROLLBACK_NAME, _ROLLBACK_RULE, name_errors)
            if rollback_problems == "warn":
                warnings.extend(str(e) + _ROLLBACK_WARNING for e in name_errors)
            else:
                errors.extend(name_errors)
            check_rollbacks = True
        elif forward:
            warnings.append(
                f"{rollback_dir}: rollback directory not found; no migration has a rollback file"
            )

    migrations: list[Migration] = []
    for version in sorted(forward):
        entries = forward[version]
        loaded = [_try_load(path, errors, lazy) for _, path in entries]
        if len(entries) > 1:
            listed = ", ".join(str(path) for _, path in entries)
            errors.append(
                DuplicateVersionError(
                    f"version {version} is used by {len(entries)} files: {listed}; versions "
                    "compare as integers (001 and 1 are the same version) — renumber all but "
                    "one",
                    path=entries[1][1],
                )
            )
            rollbacks.pop(version, None)
            continue
        sql_file = loaded[0]
        candidates = rollbacks.pop(version, [])
        rollback, rollback_ok = _load_rollback(
            version, entries[0][1], candidates, errors, warnings, lazy, rollback_problems
        )
        if not candidates and check_rollbacks:
            warnings.append(
                f"{entries[0][1]}: no rollback file for version {version} in {rollback_dir}; "
                "`asyncmig rollback` will use the SQL stored in history at apply time"
            )
        if sql_file is None:
            continue
        for file in (sql_file, rollback if rollback_ok else None):
            if file is None or lazy:  # lazy: notices come with each file once it is used
                continue
            notices.extend(file.notices)
            if not file.statements:
                warnings.append(
                    f"{file.path}: no statements"
                    + ("" if file is rollback else f"; applying it only records version {version}")
                )
        migrations.append(Migration(version, entries[0][0], sql_file, rollback))

    for version in sorted(rollbacks):
        for _, path in rollbacks[version]:
            warnings.append(f"{path}: rollback file without a forward migration {version}_*.sql")

    result = MigrationSet(tuple(migrations), tuple(notices), tuple(warnings))
    return result, tuple(errors)


def _load_rollback(
    version: int,
    forward_path: Path,
    candidates: list[tuple[str, Path]],
    errors: list[MigrationFileError],
    warnings: list[str],
    lazy: bool,
    problems: _RollbackProblems,
) -> tuple[SqlFile | None, bool]:
    """The version's rollback file, and whether it loaded cleanly (eager: also checked).

    A problem goes where ``problems`` says. Warned about, a file that could be read is
    still returned, unchecked, so its text is stored in history as at apply time.
    """
    if not candidates:
        return None, False
    path = candidates[-1][1]
    file: SqlFile | None = None
    try:
        if len(candidates) > 1:
            listed = ", ".join(str(path) for _, path in candidates)
            raise AmbiguousRollbackError(
                f"{len(candidates)} rollback files for version {version} ({forward_path.name}):"
                f" {listed}; keep exactly one",
                path=candidates[1][1],
            )
        file = load_sql_file(path, lazy=True)
        if not lazy:
            file.check()
        return file, True
    except MigrationFileError as exc:
        if problems == "error":
            errors.append(exc)
            return None, False
        if problems == "warn":
            warnings.append(str(exc) + _ROLLBACK_WARNING)
            return file, False
        return SqlFile._unusable(exc.path or path, exc), False


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
    problems: _RollbackProblems = "defer" if lazy else "warn"
    migrations, errors = _scan(Path(sql_dir), rollback_dir, lazy, problems)
    if errors:
        first = errors[0]
        if len(errors) > 1:
            first.add_note(
                f"{len(errors) - 1} more file error(s); `asyncmig validate` lists them all"
            )
        raise first
    return migrations
