"""Find, read and check migration files — pure: no database, no global state.

The loader turns ``sql/`` and ``rollback/`` into an immutable :class:`MigrationSet`,
or says exactly which file is wrong and where (``path:line:column: message``). It is the
"fail before touching the database" step: every rule below is checked before a
connection is opened. Rules (DESIGN §2, §4) and the decisions taken where the design is
silent:

File names
    Forward files are ``<version>_<name>.sql``: ``<version>`` is 1–20 ASCII digits,
    compared as an integer (``9 < 10 < 20261126153000``); ``<name>`` is lowercase ASCII
    letters, digits and underscores. Dotfiles (editor swap files, macOS ``._*``),
    subdirectories and files not ending in ``.sql`` are ignored, so a ``README.md`` may
    live in ``sql/``. A file ending in ``.SQL`` (any case) is *not* ignored but reported:
    silently skipping something that looks like a migration is worse than an error.
    Rollback files only need to start with ``<version>_`` and end in ``.sql``
    (``001_drop_users_table.sql`` and ``001_create_users_table_rollback.sql`` both fit).

Text and checksum
    Strict UTF-8; a leading BOM is dropped; CRLF and lone CR become LF. The checksum is
    SHA-256 of that normalised text, so line endings never count as an edit and any
    other change does. A NUL character is rejected as an encoding error too:
    PostgreSQL cannot receive it in a query. Columns count characters (code points),
    1-based, like the splitter's.

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

    __slots__ = ("_analysis", "checksum", "path", "text")

    path: Path
    text: str
    checksum: str
    _analysis: _Analysis | None

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
                            ("_analysis", analysis)):  # fmt: skip
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"SqlFile is immutable (cannot set {name})")

    def _analysed(self) -> _Analysis:
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
    """SHA-256 hex digest of already-normalised text, encoded as UTF-8.

    Encoded a slice at a time: a 50 MB data migration must not need a second 50 MB copy.
    """
    digest = hashlib.sha256()
    for start in range(0, len(text), _HASH_CHUNK):
        digest.update(text[start : start + _HASH_CHUNK].encode("utf-8"))
    return digest.hexdigest()


def read_sql_text(path: Path) -> str:
    """Read a migration file: strict UTF-8, leading BOM dropped, newlines made LF.

    Raises :class:`EncodingError` naming the file, the byte offset of the first bad
    byte, and its line and column; :class:`MigrationFileError` if it cannot be read.
    """
    return _read(path)[0]


def _read(path: Path) -> tuple[str, str | None]:
    """The normalised text, and its checksum when the raw bytes already are that text.

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
    return _normalise_newlines(text), None


def _encoding_error(data: bytes, skip: int, offset: int, message: str, path: Path) -> EncodingError:
    # Everything before the first bad byte decodes; count lines the way the normalised
    # text will have them (CRLF and lone CR are one line break each).
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
    if lazy:
        return SqlFile(path, text, checksum or checksum_text(text))
    return _check(text, path, checksum)


def parse_sql_text(text: str, path: Path | str) -> SqlFile:
    """Check SQL that is already in memory, such as rollback SQL stored in history.

    The same rules as :func:`load_sql_file`; ``path`` only labels messages. A leading
    BOM is dropped and newlines normalised, so the checksum matches the file's.
    """
    return _check(_normalise_newlines(text.removeprefix("\ufeff")), Path(path))


def _check(text: str, path: Path, checksum: str | None = None) -> SqlFile:
    if checksum is None:  # before splitting: keeps the peak at text + statements
        checksum = checksum_text(text)
    return SqlFile(path, text, checksum).check()


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

_FORWARD_NAME = re.compile(r"(?P<version>[0-9]{1,20})_(?P<name>[a-z0-9_]+)\.sql")
_ROLLBACK_NAME = re.compile(r"(?P<version>[0-9]{1,20})_(?P<name>.+)\.sql", re.S)
_FORWARD_RULE = (
    "a migration file must be named <version>_<name>.sql, where <version> is 1–20 digits "
    "and <name> is lowercase letters, digits and underscores (e.g. 001_create_users.sql)"
)
_ROLLBACK_RULE = (
    "a rollback file must be named <version>_<anything>.sql, where <version> is the "
    "forward migration's version (e.g. 001_create_users_rollback.sql)"
)


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
    return f"the name part {stem[digits + 1 :]!r} may use only lowercase letters, digits, _"


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
    sql_dir = Path(sql_dir)
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
            rollbacks = _index_directory(rollback_dir, _ROLLBACK_NAME, _ROLLBACK_RULE, errors)
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
        rollback = _load_rollback(version, entries[0][1], candidates, errors, lazy)
        if not candidates and check_rollbacks:
            warnings.append(
                f"{entries[0][1]}: no rollback file for version {version} in {rollback_dir}; "
                "`asyncmig rollback` will use the SQL stored in history at apply time"
            )
        if sql_file is None:
            continue
        for file in (sql_file, rollback):
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
    lazy: bool = False,
) -> SqlFile | None:
    if len(candidates) > 1:
        listed = ", ".join(str(path) for _, path in candidates)
        errors.append(
            AmbiguousRollbackError(
                f"{len(candidates)} rollback files for version {version} ({forward_path.name}):"
                f" {listed}; keep exactly one",
                path=candidates[1][1],
            )
        )
        return None
    if not candidates:
        return None
    return _try_load(candidates[0][1], errors, lazy)


def load_migrations(
    sql_dir: Path | str, rollback_dir: Path | str | None = None, *, lazy: bool = False
) -> MigrationSet:
    """Load every migration, or raise the first :class:`MigrationFileError`.

    When there are more errors, the raised one carries a note saying how many, so a
    user knows to run ``asyncmig validate`` for the full list. ``lazy``: see
    :class:`SqlFile` (names, encodings and checksums are still checked at once).
    """
    migrations, errors = scan_migrations(sql_dir, rollback_dir, lazy=lazy)
    if errors:
        first = errors[0]
        if len(errors) > 1:
            first.add_note(
                f"{len(errors) - 1} more file error(s); `asyncmig validate` lists them all"
            )
        raise first
    return migrations
