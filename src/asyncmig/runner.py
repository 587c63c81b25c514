"""Run migrations and rollbacks, statement by statement, on the lock's connection.

* Transactional migration: ``BEGIN``; ``SET LOCAL`` timeouts from directives; each
  statement timed and reported; the history row and audit entry written in the same
  transaction; ``COMMIT``. Any failure rolls everything back, then the failure is
  recorded in a transaction of its own, so it is never lost with the rollback.
* No-transaction migration: the row is committed as ``running`` first and
  ``statements_done`` advances after each statement, so a crash or failure leaves an
  exact resume point.
* Deadline: the migration's statements run under ``anyio.fail_after``; when it passes,
  asyncpg cancels the running statement on the server, the transaction rolls back and
  :class:`MigrationTimeoutError` is recorded and raised.
* Cancellation (server shutdown during startup): the same cleanup runs in a shielded
  scope with its own deadline, then the cancellation propagates.
* A dead connection or a lost lock becomes :class:`LockLostError`, never a partial run.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import anyio
import asyncpg

from .connection import Conn
from .errors import (
    LockLostError,
    MigrationError,
    MigrationTimeoutError,
    RollbackFailedError,
)
from .events import (
    Emitter,
    MigrationFailed,
    MigrationFinished,
    MigrationStarted,
    ServerNotice,
    StatementFinished,
    StatementStarted,
    preview,
)
from .history import History
from .loader import Directives, Migration, SqlFile
from .lock import Progress
from .planner import MigrateStep, RollbackStep
from .reports import AppliedMigration
from .splitter import Statement

__all__ = ["Runner"]

_CLEANUP_TIMEOUT = 5.0
_BEGIN_PREFIX = "BEGIN;"
_COPY_CHUNK = 1 << 20


@dataclass(slots=True)
class _Failure:
    """Where a run failed: which statement, and the server's error."""

    index: int | None = None
    statement: Statement | None = None
    exc: BaseException | None = None
    prefix: int = 0  # characters sent before the statement's text (a folded BEGIN)


class Runner:
    """Executes planned steps on one connection; emits events; writes history."""

    def __init__(
        self,
        conn: Conn,
        history: History,
        emit: Emitter,
        progress: Progress,
        *,
        migration_timeout: float,
    ) -> None:
        self.conn = conn
        self.history = history
        self.emit = emit
        self.progress = progress
        self.migration_timeout = migration_timeout
        self._notices: list[asyncpg.PostgresLogMessage] = []
        self._current_version: int | None = None
        self._begin_pending = False

    # -- notices ----------------------------------------------------------------------

    def _on_notice(self, _conn: object, message: asyncpg.PostgresLogMessage) -> None:
        self._notices.append(message)

    async def _flush_notices(self) -> None:
        while self._notices:
            msg = self._notices.pop(0)
            await self.emit(
                ServerNotice(
                    version=self._current_version,
                    severity=getattr(msg, "severity", "NOTICE") or "NOTICE",
                    message=getattr(msg, "message", str(msg)),
                    detail=getattr(msg, "detail", None),
                    hint=getattr(msg, "hint", None),
                )
            )

    async def __aenter__(self) -> Runner:
        self.conn.add_log_listener(self._on_notice)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if not self.conn.is_closed():
            self.conn.remove_log_listener(self._on_notice)

    # -- statements -------------------------------------------------------------------

    async def _execute(self, st: Statement, failure: _Failure) -> str:
        failure.prefix = 0
        if self._begin_pending and not st.copy_from_stdin:
            # The transaction's BEGIN travels with its first statement: one round trip
            # less per migration. Error positions are shifted back by the prefix.
            self._begin_pending = False
            failure.prefix = len(_BEGIN_PREFIX)
            return str(await self.conn.execute(_BEGIN_PREFIX + st.text))
        await self._ensure_begun()
        if st.copy_from_stdin:
            return await self._copy(st)
        return str(await self.conn.execute(st.text))

    async def _ensure_begun(self) -> None:
        if self._begin_pending:
            self._begin_pending = False
            await self.conn.execute("BEGIN")

    async def _copy(self, st: Statement) -> str:
        data = st.copy_data or ""

        async def chunks() -> AsyncIterator[bytes]:
            for start in range(0, len(data), _COPY_CHUNK):
                yield data[start : start + _COPY_CHUNK].encode()

        # asyncpg's public COPY helpers build their own COPY statement; the file's
        # statement (any options) goes through the same internal entry point they use.
        copy_in: Any = self.conn._copy_in  # type: ignore[union-attr]
        return str(await copy_in(st.text, chunks(), None))

    async def _run_statements(
        self, version: int, statements: Sequence[Statement], start: int, failure: _Failure,
        after_each: Callable[[int], Awaitable[None]] | None = None,
    ) -> None:  # fmt: skip
        total = len(statements)
        for index in range(start, total):
            st = statements[index]
            text_preview = preview(st.text)
            self.progress.statement = text_preview
            failure.index, failure.statement = index + 1, st
            if self.emit.active:
                await self.emit(
                    StatementStarted(
                        version=version, index=index + 1, total=total, line=st.line,
                        column=st.column, keyword=st.keyword, preview=text_preview,
                    )
                )  # fmt: skip
            t0 = time.perf_counter()
            status = await self._execute(st, failure)
            elapsed = (time.perf_counter() - t0) * 1000
            if self._notices:
                await self._flush_notices()
            if self.emit.active:
                await self.emit(
                    StatementFinished(
                        version=version, index=index + 1, total=total, status=status,
                        duration_ms=elapsed,
                    )
                )  # fmt: skip
            if after_each is not None:
                await after_each(index + 1)
        failure.index, failure.statement = None, None

    async def _set_timeouts(self, directives: Directives, *, local: bool) -> None:
        if directives.lock_timeout is None and directives.statement_timeout is None:
            return
        await self._ensure_begun()
        for name, value in (
            ("lock_timeout", directives.lock_timeout),
            ("statement_timeout", directives.statement_timeout),
        ):
            if value is not None:
                await self.conn.execute(
                    "SELECT set_config($1, $2, $3)", name, f"{round(value * 1000)}ms", local
                )

    async def _reset_timeouts(self, directives: Directives, *, local: bool = False) -> None:
        """Back to the session's values: ``SET LOCAL … TO DEFAULT`` inside a transaction
        that goes on with other migrations (atomic mode, rollback groups), else RESET."""
        for name, value in (
            ("lock_timeout", directives.lock_timeout),
            ("statement_timeout", directives.statement_timeout),
        ):
            if value is not None:
                await self.conn.execute(
                    f"SET LOCAL {name} TO DEFAULT" if local else f"RESET {name}"
                )

    # -- migrate ----------------------------------------------------------------------

    async def _started(
        self, version: int, name: str, filename: str, sql: SqlFile, transactional: bool,
        direction: Literal["up", "down"] = "up",
    ) -> float:  # fmt: skip
        """A migration (or its rollback) begins: publish it, emit it; its start time."""
        self._current_version = version
        self.progress.moved_to(version)
        await self.emit(
            MigrationStarted(
                version=version, migration=name, filename=filename,
                statements=len(sql.statements), transactional=transactional,
                direction=direction,
            )
        )  # fmt: skip
        return time.perf_counter()

    async def _record_applied(self, mig: Migration, t0: float, *, transactional: bool) -> None:
        """Its history row and audit entry (inside its transaction, when it has one)."""
        await self._ensure_begun()
        await self.history.record_completed(
            self.conn, version=mig.version, filename=mig.filename,
            checksum=mig.forward.checksum, duration_ms=int(_ms(t0)),
            rollback_sql=mig.rollback.text if mig.rollback else None,
            rollback_checksum=mig.rollback.checksum if mig.rollback else None,
            statements=len(mig.forward.statements), transactional=transactional,
        )  # fmt: skip

    async def apply(self, step: MigrateStep, applied_before: Sequence[int]) -> AppliedMigration:
        """Apply one migration in its own transaction (or without one, if marked so)."""
        mig = step.migration
        sql = mig.forward
        transactional = sql.directives.transactional
        t0 = await self._started(mig.version, mig.name, mig.filename, sql, transactional)
        failure = _Failure()
        try:
            with self._deadline():
                if sql.directives.transactional:
                    async with _transaction(self):
                        await self._set_timeouts(sql.directives, local=True)
                        await self._run_statements(mig.version, sql.statements, 0, failure)
                        await self._record_applied(mig, t0, transactional=True)
                else:
                    await self._apply_autocommit(step, failure)
        except BaseException as exc:
            await self._fail_up(step, failure, exc, t0, applied_before)
            raise  # _fail_up raised the typed error unless this is a cancellation
        finally:
            self.progress.version = self.progress.statement = None
        duration = _ms(t0)
        await self.emit(
            MigrationFinished(
                version=mig.version, migration=mig.name, direction="up",
                duration_ms=duration, statements=len(sql.statements),
            )
        )  # fmt: skip
        return AppliedMigration(mig.version, mig.name, mig.filename, duration, len(sql.statements))

    async def _apply_autocommit(self, step: MigrateStep, failure: _Failure) -> None:
        mig = step.migration
        sql = mig.forward
        await self.history.record_running(
            self.conn, version=mig.version, filename=mig.filename, checksum=sql.checksum,
            statements=len(sql.statements), statements_done=step.resume_from,
            rollback_sql=mig.rollback.text if mig.rollback else None,
            rollback_checksum=mig.rollback.checksum if mig.rollback else None,
        )  # fmt: skip
        if step.resume_from:
            await self.history.log(
                self.conn, "resume", version=mig.version, filename=mig.filename,
                checksum=sql.checksum, detail=f'{{"from_statement": {step.resume_from + 1}}}',
            )  # fmt: skip
        await self._set_timeouts(sql.directives, local=False)
        try:

            async def done(k: int) -> None:
                await self.history.record_progress(self.conn, mig.version, k)

            t0 = time.perf_counter()
            await self._run_statements(mig.version, sql.statements, step.resume_from, failure,
                                       done)  # fmt: skip
            await self._record_applied(mig, t0, transactional=False)
        finally:
            if not self.conn.is_closed():
                with anyio.CancelScope(shield=True), anyio.move_on_after(_CLEANUP_TIMEOUT):
                    await self._reset_timeouts(sql.directives)

    def _deadline(self) -> contextlib.AbstractContextManager[object]:
        if self.migration_timeout and self.migration_timeout > 0:
            return anyio.fail_after(self.migration_timeout)
        return anyio.CancelScope()

    async def apply_atomic(self, steps: Sequence[MigrateStep]) -> list[AppliedMigration]:
        """All steps in one transaction: all or nothing."""
        done: list[AppliedMigration] = []
        t_run = time.perf_counter()
        current: MigrateStep | None = None
        failure = _Failure()
        t0 = t_run
        try:
            async with _transaction(self):
                for step in steps:
                    current = step
                    mig = step.migration
                    sql = mig.forward
                    t0 = await self._started(mig.version, mig.name, mig.filename, sql, True)
                    with self._deadline():
                        await self._set_timeouts(sql.directives, local=True)
                        await self._run_statements(mig.version, sql.statements, 0, failure)
                        await self._reset_timeouts(sql.directives, local=True)
                    await self._record_applied(mig, t0, transactional=True)
                    done.append(
                        AppliedMigration(mig.version, mig.name, mig.filename, _ms(t0),
                                         len(sql.statements))
                    )  # fmt: skip
                    await self.emit(
                        MigrationFinished(
                            version=mig.version, migration=mig.name, direction="up",
                            duration_ms=int(_ms(t0)), statements=len(sql.statements),
                        )
                    )  # fmt: skip
        except BaseException as exc:
            if current is None:
                raise
            await self._fail_up(current, failure, exc, t0, ())
            raise
        finally:
            self.progress.version = self.progress.statement = None
        return done

    async def _fail_up(
        self,
        step: MigrateStep,
        failure: _Failure,
        exc: BaseException,
        t0: float,
        applied_before: Sequence[int],
    ) -> None:
        """A migration failed: record it, report it, raise the typed error."""
        mig = step.migration
        sql = mig.forward
        done = 0
        if not sql.directives.transactional:  # autocommit: what ran, stays
            done = len(sql.statements) if failure.index is None else failure.index - 1
        await self._fail(
            mig.version, mig.name, mig.filename, sql, "up", failure, exc, t0, applied_before,
            statements_done=done, transactional=sql.directives.transactional,
        )  # fmt: skip

    async def _fail(
        self,
        version: int,
        name: str,
        filename: str,
        sql: SqlFile,
        direction: Literal["up", "down"],
        failure: _Failure,
        exc: BaseException,
        t0: float,
        applied_before: Sequence[int],
        *,
        statements_done: int,
        transactional: bool,
    ) -> None:
        """Record the failure (own transaction, shielded), emit it, raise the typed error.

        A cancellation is recorded and emitted too, then left to propagate.
        """
        error = self._typed_error(
            exc, version, sql.path, failure, applied_before, rollback=direction == "down"
        )
        duration = _ms(t0)
        if not isinstance(error, LockLostError) and not self.conn.is_closed():
            with (
                anyio.CancelScope(shield=True),
                anyio.move_on_after(_CLEANUP_TIMEOUT),
                _unrecordable(),
            ):
                await self.history.record_failure(
                    self.conn, version=version, filename=filename, checksum=sql.checksum,
                    duration_ms=int(duration), statements=len(sql.statements),
                    statements_done=statements_done, transactional=transactional,
                    message=error.message if error else "cancelled",
                    sqlstate=getattr(error, "sqlstate", None),
                    statement_index=failure.index, line=getattr(error, "line", None),
                    column=getattr(error, "column", None), direction=direction,
                )  # fmt: skip
        with anyio.CancelScope(shield=True):
            await self.emit(
                MigrationFailed(
                    version=version, migration=name, direction=direction,
                    duration_ms=duration,
                    error=error.to_dict() if error else {"type": "Cancelled",
                                                          "message": "cancelled"},
                )
            )  # fmt: skip
        if error is not None:
            raise error from exc

    def _typed_error(
        self,
        exc: BaseException,
        version: int,
        path: Path,
        failure: _Failure,
        applied_before: Sequence[int],
        *,
        rollback: bool = False,
    ) -> MigrationError | LockLostError | None:
        """The asyncmig error for ``exc``; None for a cancellation (to be re-raised)."""
        if isinstance(exc, anyio.get_cancelled_exc_class()):
            return None
        if (
            self.progress.lost
            or self.conn.is_closed()
            or isinstance(
                exc,
                asyncpg.ConnectionDoesNotExistError
                | asyncpg.AdminShutdownError
                | asyncpg.ConnectionFailureError
                | ConnectionError,
            )
        ):
            reason = self.progress.lost_reason or f"the connection was lost ({exc})"
            return LockLostError(
                f"lost the migration lock while running version {version}: {reason}. "
                f"Its transaction was rolled back by the server; run migrate again."
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
        cls: type[MigrationError] = RollbackFailedError if rollback else MigrationError
        if isinstance(exc, TimeoutError):
            return MigrationTimeoutError(
                f"version {version} ran past its {self.migration_timeout:g}s deadline"
                f"{where}; the running statement was cancelled and the migration rolled back",
                version=version, path=path, line=line, column=column,
                statement_index=failure.index, applied=applied_before,
            )  # fmt: skip
        if isinstance(exc, asyncpg.PostgresError):
            verb = "rollback of" if rollback else "migration"
            return cls(
                f"{verb} {version} failed{where}: {exc}",
                version=version, path=path, line=line, column=column,
                statement_index=failure.index, sqlstate=exc.sqlstate,
                detail=getattr(exc, "detail", None), hint=getattr(exc, "hint", None),
                server_message=str(exc), applied=applied_before,
            )  # fmt: skip
        if isinstance(exc, MigrationError | LockLostError):
            return exc
        return cls(
            f"version {version} failed{where}: {type(exc).__name__}: {exc}",
            version=version, path=path, line=line, column=column,
            statement_index=failure.index, applied=applied_before,
        )  # fmt: skip

    # -- rollback ---------------------------------------------------------------------

    async def rollback(self, steps: Sequence[RollbackStep]) -> list[AppliedMigration]:
        """Undo ``steps`` (newest first) in one transaction per atomic group.

        A rollback file marked no-transaction cannot join a transaction: it runs alone,
        and splits the selection into groups before and after it.
        """
        done: list[AppliedMigration] = []
        group: list[RollbackStep] = []
        for step in steps:
            if step.sql.directives.transactional:
                group.append(step)
                continue
            if group:
                done += await self._rollback_group(group)
                group = []
            done += await self._rollback_group([step])
        if group:
            done += await self._rollback_group(group)
        return done

    async def _rollback_group(self, steps: Sequence[RollbackStep]) -> list[AppliedMigration]:
        done: list[AppliedMigration] = []
        current: RollbackStep | None = None
        failure = _Failure()
        t0 = time.perf_counter()
        transactional = steps[0].sql.directives.transactional
        try:
            async with _transaction(self, transactional):
                for step in steps:
                    current = step
                    sql = step.sql
                    t0 = await self._started(step.version, step.name, step.filename, sql,
                                             transactional, "down")  # fmt: skip
                    with self._deadline():
                        await self._set_timeouts(sql.directives, local=transactional)
                        await self._run_statements(step.version, sql.statements, 0, failure)
                        if not transactional:
                            await self._reset_timeouts(sql.directives)
                    if sql.directives.transactional:
                        await self._reset_timeouts(sql.directives, local=True)
                    done.append(
                        AppliedMigration(step.version, step.name, step.filename, _ms(t0),
                                         len(sql.statements), "down")
                    )  # fmt: skip
                # one statement records the whole group, inside its transaction
                await self._ensure_begun()
                await self.history.record_rolled_back_many(
                    self.conn,
                    [(d.version, d.filename, c.sql.checksum, int(d.duration_ms))
                     for d, c in zip(done, steps, strict=True)],
                )  # fmt: skip
            for item in done:
                await self.emit(
                    MigrationFinished(
                        version=item.version, migration=item.name, direction="down",
                        duration_ms=item.duration_ms, statements=item.statements,
                    )
                )  # fmt: skip
        except BaseException as exc:
            if current is None:
                raise
            await self._fail(
                current.version, current.name, current.filename, current.sql, "down",
                failure, exc, t0, (), statements_done=0, transactional=transactional,
            )  # fmt: skip
            raise
        finally:
            self.progress.version = self.progress.statement = None
        return done


class _transaction:
    """BEGIN … COMMIT whose ROLLBACK survives cancellation (shielded, with a deadline).

    asyncpg's own transaction manager awaits its ROLLBACK in a scope that anyio keeps
    cancelling, which could leave the connection mid-transaction.
    """

    def __init__(self, runner: Runner, transactional: bool = True) -> None:
        self._runner = runner
        self._conn = runner.conn
        self._on = transactional

    async def __aenter__(self) -> None:
        if self._on:
            self._runner._begin_pending = True  # sent with the first statement

    async def __aexit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        if not self._on:
            return
        if self._runner._begin_pending:  # nothing was sent: no transaction to end
            self._runner._begin_pending = False
            return
        if exc_type is None:
            await self._conn.execute("COMMIT")
            return
        if self._conn.is_closed():
            return
        with anyio.CancelScope(shield=True), anyio.move_on_after(_CLEANUP_TIMEOUT) as scope:
            try:
                await self._conn.execute("ROLLBACK")
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
                self._conn.terminate()  # the server rolls back when the session ends
        if scope.cancelled_caught:
            self._conn.terminate()


@contextlib.contextmanager
def _unrecordable() -> Iterator[None]:
    """A failure cannot be recorded when the session is gone; the caller still raises."""
    with contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
        yield


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000
