"""The exceptions asyncmig raises: one tree under :class:`AsyncmigError`.

Every error carries structured fields (not only a message) so that the CLI can render
it, emit it as JSON, and map it to an exit code; driver exceptions are wrapped, never
leaked, and kept as ``__cause__``::

    AsyncmigError                          exit code
    ├── ConfigError                        2  bad option, config file or environment
    │   └── VersionMismatchError           2  restore: the dump is newer than the server
    ├── MigrationFileError                 3  a file on disk is wrong (path, line, column)
    │   ├── FileNameError                  3  name is not <version>_<name>.sql
    │   ├── DuplicateVersionError          3  two files share a version's integer value
    │   ├── AmbiguousRollbackError         3  more than one rollback file for a version
    │   ├── EncodingError                  3  not strict UTF-8 (byte offset)
    │   ├── DirectiveError                 3  unknown or malformed ``-- asyncmig:`` line
    │   ├── SplitError                     3  unterminated construct, psql meta-command
    │   ├── TransactionControlError        3  BEGIN/COMMIT/ROLLBACK inside a file
    │   └── MissingDirectiveError          3  non-transactional statement without
    │                                         ``-- asyncmig: no-transaction``
    ├── ValidationError                    3  disk and history disagree
    │   ├── ChecksumMismatchError          3  an applied file was edited
    │   ├── OutOfOrderError                3  pending version older than an applied one
    │   ├── MissingFileError               3  applied version whose file is gone
    │   └── ResumeRequiredError            1  a no-transaction migration stopped half-way
    ├── PendingTimeoutError                6  `wait`: still pending at its deadline
    ├── LockError                          4  the migration lock
    │   ├── LockTimeoutError               4  not acquired in time (names the holder)
    │   ├── LockLostError                  4  lock or its connection gone mid-run
    │   └── LockTerminateDeniedError       4  may not end the holder (names the statement)
    ├── DatabaseUnreachableError           5  cannot connect (password never shown)
    ├── ConnectionPoolingError             2  not a direct connection (PgBouncer)
    ├── MigrationError                     1  a statement failed; migration rolled back
    │   ├── MigrationTimeoutError          1  the migration's deadline passed
    │   ├── CommitUncertainError           1  COMMIT sent, its outcome unknowable now
    │   ├── InvalidIndexError              1  an index it built is INVALID
    │   ├── LockNotGrantedError            7  a DDL lock not granted after every retry
    │   └── RollbackFailedError            1  a rollback file failed
    ├── RollbackUnavailableError           1  no rollback file and no stored SQL
    └── ToolFailedError                    1  pg_dump or psql failed (its own message)

Outside the tree, the command line ends on SIGINT / SIGTERM with 130 / 143 after a clean
rollback and lock release (``asyncmig.cli.invoke.Interrupted``, never raised to a library
caller); a test (``tests/test_errors.py``) checks that this drawing names every class
with its exit code and parent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from .models import LockHolder as LockHolder  # re-exported from its old home


class AsyncmigError(Exception):
    """Base of every error asyncmig raises on purpose."""

    exit_code: ClassVar[int] = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_dict(self) -> dict[str, Any]:
        """The error as JSON-ready fields (``type``, ``message`` and the subclass's own)."""
        out: dict[str, Any] = {"type": type(self).__name__, "message": self.message}
        for key, value in vars(self).items():
            if key == "message" or key.startswith("_"):
                continue
            out[key] = _jsonable(value)
        return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return [_jsonable(v) for v in value]
    if hasattr(value, "to_dict"):
        return value.to_dict()
    return value


def _located(path: Path | None, line: int | None, column: int | None, message: str) -> str:
    """``path:line:column: message``, with whatever of the location is known."""
    if path is None:
        return message
    where = str(path)
    if line is not None:
        where += f":{line}"
        if column is not None:
            where += f":{column}"
    return f"{where}: {message}"


class ConfigError(AsyncmigError):
    """An option, config file or environment variable is invalid."""

    exit_code = 2


class VersionMismatchError(ConfigError):
    """A dump file written by a pg_dump newer than the server it is to be restored into."""

    def __init__(self, message: str, *, dump_version: str, server_version: str) -> None:
        self.dump_version = dump_version
        self.server_version = server_version
        super().__init__(message)


class MigrationFileError(AsyncmigError):
    """A migration file on disk is wrong. ``line``/``column`` are 1-based, or None."""

    exit_code = 3

    def __init__(
        self,
        message: str,
        *,
        path: Path | str | None = None,
        line: int | None = None,
        column: int | None = None,
    ) -> None:
        self.path = Path(path) if path is not None else None
        self.line = line
        self.column = column
        super().__init__(message)

    def __str__(self) -> str:
        return _located(self.path, self.line, self.column, self.message)


class FileNameError(MigrationFileError):
    """A file in the migrations directory does not follow ``<version>_<name>.sql``."""


class DuplicateVersionError(MigrationFileError):
    """Two forward files have versions with the same integer value."""


class AmbiguousRollbackError(MigrationFileError):
    """More than one rollback file starts with the same ``<version>_``."""


class EncodingError(MigrationFileError):
    """The file is not valid UTF-8; ``byte_offset`` names the first bad byte."""

    def __init__(
        self,
        message: str,
        *,
        path: Path | str | None = None,
        line: int | None = None,
        column: int | None = None,
        byte_offset: int | None = None,
    ) -> None:
        self.byte_offset = byte_offset
        super().__init__(message, path=path, line=line, column=column)


class DirectiveError(MigrationFileError):
    """An ``-- asyncmig:`` directive is unknown or malformed."""


class SplitError(MigrationFileError):
    """The file cannot be split into statements (unterminated construct, meta-command)."""


class TransactionControlError(MigrationFileError):
    """Transaction control inside a file other than a dropped outer BEGIN/COMMIT."""


class MissingDirectiveError(MigrationFileError):
    """A statement that cannot run in a transaction, in a file without the directive."""


class ValidationError(AsyncmigError):
    """The files on disk and the history table disagree."""

    exit_code = 3

    def __init__(self, message: str, *, version: int | None = None) -> None:
        self.version = version
        super().__init__(message)


class ChecksumMismatchError(ValidationError):
    """An applied migration's file changed since it was applied."""

    def __init__(
        self, message: str, *, version: int, expected: str, actual: str, path: Path | None
    ) -> None:
        self.expected = expected
        self.actual = actual
        self.path = path
        super().__init__(message, version=version)


class OutOfOrderError(ValidationError):
    """A pending migration is older than the newest applied one."""


class MissingFileError(ValidationError):
    """A version recorded as applied has no file on disk."""


class ResumeRequiredError(ValidationError):
    """A no-transaction migration failed after some statements; resume or repair."""

    exit_code = 1

    def __init__(
        self,
        message: str,
        *,
        version: int,
        statements_done: int,
        invalid_indexes: Sequence[str] = (),
    ) -> None:
        self.statements_done = statements_done
        self.invalid_indexes = list(invalid_indexes)
        super().__init__(message, version=version)


class PendingTimeoutError(AsyncmigError):
    """``wait`` gave up: migrations were still pending when its timeout passed."""

    exit_code = 6

    def __init__(self, message: str, *, pending: Sequence[int], holder: LockHolder | None) -> None:
        self.pending = list(pending)
        self.holder = holder
        super().__init__(message)


class LockError(AsyncmigError):
    """The migration lock could not be taken or was lost."""

    exit_code = 4


class LockTimeoutError(LockError):
    """The lock was not acquired within the timeout; ``holder`` says who has it."""

    def __init__(self, message: str, *, holder: LockHolder | None, waited_s: float) -> None:
        self.holder = holder
        self.waited_s = waited_s
        super().__init__(message)


class LockLostError(LockError):
    """The lock or its dedicated connection disappeared during a run."""


class LockTerminateDeniedError(LockError):
    """``unlock --force``: this role may not terminate the lock holder's backend;
    ``statement`` is what an administrator can run."""

    def __init__(self, message: str, *, backend_pid: int, statement: str) -> None:
        self.backend_pid = backend_pid
        self.statement = statement
        super().__init__(message)


class DatabaseUnreachableError(AsyncmigError):
    """The database could not be reached (the DSN's password is never included)."""

    exit_code = 5


class ConnectionPoolingError(AsyncmigError):
    """The connection is not a direct one (e.g. PgBouncer in transaction mode)."""

    exit_code = 2


class MigrationError(AsyncmigError):
    """A statement of a migration failed; the migration was rolled back and recorded.

    ``applied`` lists the versions applied earlier in the same run (they stay applied,
    except in ``atomic`` mode, where nothing is).
    """

    exit_code = 1

    def __init__(
        self,
        message: str,
        *,
        version: int | None = None,
        path: Path | None = None,
        line: int | None = None,
        column: int | None = None,
        statement_index: int | None = None,
        sqlstate: str | None = None,
        detail: str | None = None,
        hint: str | None = None,
        server_message: str | None = None,
        applied: Sequence[int] = (),
    ) -> None:
        self.version = version
        self.path = path
        self.line = line
        self.column = column
        self.statement_index = statement_index
        self.sqlstate = sqlstate
        self.detail = detail
        self.hint = hint
        self.server_message = server_message
        self.applied = list(applied)
        super().__init__(message)

    def __str__(self) -> str:
        return _located(self.path, self.line, self.column, self.message)


class MigrationTimeoutError(MigrationError):
    """The migration's deadline passed; its running statement was cancelled."""


class CommitUncertainError(MigrationError):
    """The COMMIT was sent but neither its answer nor the server's record of the
    transaction could be read (the server is unreachable). Nothing was recorded as
    failed: history, read once the server is back, tells whether it committed."""


class LockNotGrantedError(MigrationError):
    """A lock the migration needed was not granted within its DDL lock timeout, on every
    attempt (SQLSTATE 55P03): nothing of it is applied. ``blockers`` are the sessions
    that held it up, as last sampled."""

    exit_code = 7

    def __init__(self, message: str, *, blockers: Sequence[Any] = (), **fields: Any) -> None:
        self.blockers = list(blockers)
        super().__init__(message, **fields)


class InvalidIndexError(MigrationError):
    """A no-transaction migration ran every statement, but an index it built is
    INVALID (``invalid_indexes``, schema-qualified). Recorded as failed after its last
    statement: ``migrate --resume --rebuild-invalid`` repairs it."""

    def __init__(self, message: str, *, invalid_indexes: Sequence[str] = (), **fields: Any) -> None:
        self.invalid_indexes = list(invalid_indexes)
        super().__init__(message, **fields)


class RollbackFailedError(MigrationError):
    """A rollback failed; every rollback of the same transaction was undone."""


class RollbackUnavailableError(AsyncmigError):
    """No rollback file on disk and no rollback SQL stored in history."""

    exit_code = 1

    def __init__(self, message: str, *, version: int) -> None:
        self.version = version
        super().__init__(message)


class ToolFailedError(AsyncmigError):
    """pg_dump or psql ran and failed; ``stderr`` holds its (password-free) message."""

    exit_code = 1

    def __init__(self, message: str, *, tool: str, returncode: int, stderr: str) -> None:
        self.tool = tool
        self.returncode = returncode
        self.stderr = stderr
        super().__init__(message)
