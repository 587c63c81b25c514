"""One SQL file: read it, checksum it, split and check it — pure: no database, no state.

A :class:`SqlFile` is what the rest of the engine runs: the text exactly as it runs, its
checksum, and (split on first use when loaded lazily) its statements, directives and
notices. :func:`load_sql_file` reads one from disk, :func:`parse_sql_text` checks SQL
already in memory (rollback SQL stored in history); finding the files of a project is
:mod:`asyncmig.loader`'s job. Rules (DESIGN §2, §4):

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

Directives and transaction control
    Their rules live beside their code: :mod:`asyncmig.directives` and
    :mod:`asyncmig.transactions`; this module applies them to each file.

Speed
    Beyond splitting, the work per file is a read, a hash, one literal-led regex scan
    for ``asyncmig`` and one pass over the statements testing flags; words are only
    extracted from transaction-control statements.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from .directives import Directives, parse_directives
from .errors import EncodingError, MigrationFileError
from .splitter import Statement, split_statements
from .transactions import apply_transaction_rules

__all__ = [
    "SqlFile",
    "checksum_text",
    "load_sql_file",
    "parse_sql_text",
    "read_sql_text",
    "unusable_sql_file",
]


# --------------------------------------------------------------------------- the value


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


def unusable_sql_file(path: Path, error: MigrationFileError) -> SqlFile:
    """A file that could not be loaded (unreadable, ambiguous): raises ``error`` on use."""
    file = SqlFile(path, "", "")
    object.__setattr__(file, "_error", error)
    return file


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
