"""A failure, told truly: where it stands (:class:`Failure`), and the typed error whose
message is right for the file's mode — in a transaction or not, applying or rolling back
(:func:`typed_error`)."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import anyio
import asyncpg

from .errors import (
    AsyncmigError,
    CommitUncertainError,
    LockLostError,
    LockNotGrantedError,
    MigrationError,
    MigrationTimeoutError,
    RollbackFailedError,
)
from .history import Staged
from .loader import Migration, SqlFile
from .models import Blocker, RollbackStep
from .reports import AppliedMigration
from .retries import LOCK_NOT_AVAILABLE
from .splitter import Statement

__all__ = ["Circumstances", "Direction", "Failure", "File", "describe", "typed_error"]

Direction = Literal["up", "down"]


@dataclass(frozen=True, slots=True)
class File:
    """One file to run: a migration's forward file, or a rollback file."""

    version: int
    name: str
    filename: str
    sql: SqlFile
    direction: Direction = "up"
    rollback: SqlFile | None = None  # forward files: stored with the history row

    @classmethod
    def up(cls, mig: Migration) -> File:
        return cls(mig.version, mig.name, mig.filename, mig.forward, "up", mig.rollback)

    @classmethod
    def down(cls, step: RollbackStep) -> File:
        return cls(step.version, step.name, step.filename, step.sql, "down")

    @property
    def transactional(self) -> bool:
        return self.sql.directives.transactional

    def staged(self) -> Staged:
        rb = self.rollback
        return Staged(
            self.version, self.direction, self.filename, self.sql.checksum,
            rb.text if rb else None, rb.checksum if rb else None,
            len(self.sql.statements), self.transactional,
        )  # fmt: skip

    def applied(self, duration_ms: float) -> AppliedMigration:
        return AppliedMigration(
            self.version, self.name, self.filename, duration_ms, len(self.sql.statements),
            self.direction,
        )  # fmt: skip


@dataclass(slots=True)
class Failure:
    """Where a run stands, for the failure path."""

    file: File | None = None  # the file running
    index: int | None = None  # 1-based statement that was running
    statement: Statement | None = None
    prefix: int = 0  # characters sent before the statement's text in its message
    done: int = 0  # statements committed (no-transaction files)
    commit_sent: bool = False
    attempt: int = 1  # of the lock retries

    def at(self, f: File, index: int | None, prefix: int = 0) -> None:
        self.file, self.index, self.prefix = f, index, prefix
        self.statement = f.sql.statements[index - 1] if index else None


@dataclass(frozen=True, slots=True)
class Circumstances:
    """What the runner knew when it failed: what this run committed before, whether
    the lock or its connection was lost (and why), its deadline, the blockers sampled."""

    applied: Sequence[int] = ()
    lost_reason: str | None = None  # None: the lock is held
    closed: bool = False
    migration_timeout: float = 0.0
    blockers: tuple[Blocker, ...] = ()


def typed_error(
    exc: BaseException, failure: Failure, why: Circumstances, *, uncertain: bool = False
) -> AsyncmigError | None:
    """The asyncmig error for ``exc``; None for a cancellation (to be re-raised).
    Every message is true for the file's mode (transaction or not, up or down)."""
    if isinstance(exc, anyio.get_cancelled_exc_class()) and not uncertain:
        return None
    f = failure.file
    assert f is not None
    version, path, transactional = f.version, f.sql.path, f.transactional
    down = f.direction == "down"
    applied = list(why.applied)
    if uncertain:
        return CommitUncertainError(
            f"the COMMIT of version {version} was sent, but the connection failed "
            f"before the server answered and the server could not be asked since "
            f"({describe(exc)}). Nothing was recorded as failed. Once the database "
            f"is reachable, `asyncmig status` shows whether it committed; `migrate` "
            f"applies it again only if it did not.",
            version=version, path=path, applied=applied,
        )  # fmt: skip
    if why.lost_reason is not None or why.closed or isinstance(exc, _CONNECTION_LOST):
        reason = why.lost_reason or f"the connection was lost ({describe(exc)})"
        what = "rolling back" if down else "running"
        return LockLostError(
            f"lost the migration lock while {what} version {version}: {reason}. "
            + _after_loss(transactional, down, failure)
        )
    st = failure.statement
    where = ""
    line = column = None
    if st is not None:
        line, column = st.line, st.column
        pos = getattr(exc, "position", None)
        if pos:
            with contextlib.suppress(ValueError, IndexError):
                line, column = st.position(int(pos) - failure.prefix)
        where = f" (statement {failure.index}, {st.keyword or 'SQL'})"
    if isinstance(exc, TimeoutError):
        return MigrationTimeoutError(
            f"version {version} ran past its {why.migration_timeout:g}s deadline"
            f"{where}; the running statement was cancelled"
            + _after_failure(transactional, down, failure),
            version=version, path=path, line=line, column=column,
            statement_index=failure.index, applied=applied,
        )  # fmt: skip
    cls: type[MigrationError] = RollbackFailedError if down else MigrationError
    if isinstance(exc, asyncpg.PostgresError) and exc.sqlstate == LOCK_NOT_AVAILABLE:
        blockers = why.blockers
        held = "; held up by " + ", ".join(b.describe() for b in blockers) if blockers else ""
        return LockNotGrantedError(
            f"version {version}{where} was not granted a lock within its lock timeout "
            f"after {failure.attempt} attempt(s){held}"
            + _after_failure(transactional, down, failure)
            + ". End or wait out the blocking sessions, or raise --ddl-lock-timeout "
            "or --lock-retries",
            version=version, path=path, line=line, column=column,
            statement_index=failure.index, sqlstate=exc.sqlstate,
            server_message=str(exc), applied=applied, blockers=blockers,
        )  # fmt: skip
    if isinstance(exc, asyncpg.PostgresError):
        verb = "rollback of" if down else "migration"
        return cls(
            f"{verb} {version} failed{where}: {exc}"
            + _after_failure(transactional, down, failure),
            version=version, path=path, line=line, column=column,
            statement_index=failure.index, sqlstate=exc.sqlstate,
            detail=getattr(exc, "detail", None), hint=getattr(exc, "hint", None),
            server_message=str(exc), applied=applied,
        )  # fmt: skip
    if isinstance(exc, AsyncmigError):
        return exc
    return cls(
        f"version {version} failed{where}: {describe(exc)}"
        + _after_failure(transactional, down, failure),
        version=version, path=path, line=line, column=column,
        statement_index=failure.index, applied=applied,
    )  # fmt: skip


_CONNECTION_LOST = (
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.AdminShutdownError,
    asyncpg.ConnectionFailureError,
    ConnectionError,
)


def _after_failure(transactional: bool, down: bool, failure: Failure) -> str:
    """What a failure left behind, for the message."""
    if transactional:
        if down:
            return "; the rollback was undone, so the migration is still applied"
        return "; the migration was rolled back"
    if down:
        return (
            f"; it runs without a transaction: statements 1–{failure.done} are committed "
            f"and stay. Fix the cause, then `asyncmig rollback` runs it again"
        )
    return (
        f"; it runs without a transaction: statements 1–{failure.done} are committed "
        f"and stay. Fix the cause, then `asyncmig migrate --resume` continues at "
        f"statement {failure.done + 1}"
    )


def _after_loss(transactional: bool, down: bool, failure: Failure) -> str:
    if transactional:
        if down:
            return (
                "Its transaction was rolled back by the server, so the migration is still "
                "applied; run rollback again."
            )
        return "Its transaction was rolled back by the server; run migrate again."
    return (
        f"It runs without a transaction: the statements that committed stay "
        f"(history records at least {failure.done}). When the database is back, "
        + (
            "undo what is left by running rollback again."
            if down
            else "`asyncmig migrate --resume` continues after the last committed one."
        )
    )


def describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "deadline passed"
    if isinstance(exc, anyio.get_cancelled_exc_class()):
        return "cancelled"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
