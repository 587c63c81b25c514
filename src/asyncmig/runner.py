"""Run migrations and rollbacks, statement by statement, on the lock's connection.

One core runs a *transactional unit* — one migration, an ``--atomic`` batch, or a group
of consecutive transactional rollbacks — and one runs a *no-transaction file*:

* Unit: the session reset and ``BEGIN`` travel with the first statement; each file's
  ``SET LOCAL`` timeouts with its own first statement; each statement is timed and
  reported; the history rows are written inside the transaction (as the connecting
  user), then ``COMMIT``. A failure rolls everything back, then the failure is recorded
  in a transaction of its own, so it is never lost with the rollback.
* No-transaction file: the row is committed as ``running`` first. A statement that may
  run in a transaction block commits together with its resume point
  (``BEGIN; stmt`` then ``UPDATE … statements_done; COMMIT``), so a stop anywhere never
  re-runs it; a statement that cannot (``CREATE INDEX CONCURRENTLY``) commits on its
  own, and its resume point right after.
* Every file starts from a clean session (:mod:`asyncmig.session`).
* A COMMIT whose answer did not arrive (deadline, cancellation, cut connection) is
  settled before anything is recorded: the transaction id written with the history row
  is looked up with ``pg_xact_status`` on this connection after a ``ROLLBACK``, or on a
  fresh one. A committed unit is reported applied; an unknowable one raises
  :class:`CommitUncertainError` and records nothing.
* Deadline: each file's statements run under ``anyio.fail_after``; when it passes,
  asyncpg cancels the running statement on the server.
* Cancellation: the same cleanup runs shielded with its own deadline, then propagates.
* A dead connection or a lost lock becomes :class:`LockLostError`, never a partial run.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import anyio
import asyncpg

from . import session
from .connection import Conn
from .errors import (
    AsyncmigError,
    CommitUncertainError,
    LockLostError,
    MigrationError,
    MigrationTimeoutError,
    RollbackFailedError,
)
from .events import (
    Emitter,
    Message,
    MigrationFailed,
    MigrationFinished,
    MigrationStarted,
    ServerNotice,
    StatementFinished,
    StatementStarted,
    preview,
)
from .history import History
from .loader import Migration, SqlFile
from .lock import Progress
from .planner import MigrateStep, RollbackStep
from .reports import AppliedMigration
from .splitter import Statement

__all__ = ["Runner"]

_CLEANUP_TIMEOUT = 5.0
_SETTLE_TIMEOUT = 15.0
_COPY_CHUNK = 1 << 20

Direction = Literal["up", "down"]
FreshConnection = Callable[[], contextlib.AbstractAsyncContextManager[Conn]]


@dataclass(frozen=True, slots=True)
class _File:
    """One file to run: a migration's forward file, or a rollback file."""

    version: int
    name: str
    filename: str
    sql: SqlFile
    direction: Direction = "up"

    @classmethod
    def up(cls, mig: Migration) -> _File:
        return cls(mig.version, mig.name, mig.filename, mig.forward)

    @classmethod
    def down(cls, step: RollbackStep) -> _File:
        return cls(step.version, step.name, step.filename, step.sql, "down")

    def applied(self, duration_ms: float) -> AppliedMigration:
        return AppliedMigration(
            self.version, self.name, self.filename, duration_ms, len(self.sql.statements),
            self.direction,
        )  # fmt: skip


@dataclass(slots=True)
class _Failure:
    """Where a run stands, for the failure path: the statement, how far it got."""

    index: int | None = None  # 1-based statement that was running
    statement: Statement | None = None
    prefix: int = 0  # characters sent before the statement's text (reset, BEGIN)
    done: int = 0  # statements committed (no-transaction files)
    commit_sent: bool = False
    xid: str | None = None  # the unit's transaction, once its history row is written


class Runner:
    """Executes planned steps on one connection; emits events; writes history.

    ``fresh`` opens another connection, used only to settle a COMMIT whose answer was
    lost with this one. ``done`` lists what this run committed, in order.
    """

    def __init__(
        self,
        conn: Conn,
        history: History,
        emit: Emitter,
        progress: Progress,
        *,
        migration_timeout: float,
        fresh: FreshConnection | None = None,
    ) -> None:
        self.conn = conn
        self.history = history
        self.emit = emit
        self.progress = progress
        self.migration_timeout = migration_timeout
        self.done: list[AppliedMigration] = []
        self._fresh = fresh
        self._backend_pid = conn.get_server_pid()
        self._notices: list[asyncpg.PostgresLogMessage] = []
        self._current_version: int | None = None
        self._prefix = ""  # session and transaction control sent with the next statement

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
        if self.conn.is_closed():
            return
        self.conn.remove_log_listener(self._on_notice)
        # The connection goes back (to a pool, to the lock's release) as it came.
        with (
            anyio.CancelScope(shield=True),
            anyio.move_on_after(_CLEANUP_TIMEOUT),
            _unrecordable(),
        ):
            if not self.conn.is_in_transaction():
                await self.conn.execute(session.RESET)

    # -- statements -------------------------------------------------------------------

    async def _send(self, st: Statement, failure: _Failure) -> str:
        prefix, self._prefix = self._prefix, ""
        failure.prefix = 0
        if st.copy_from_stdin or st.no_transaction:
            # COPY has a protocol of its own, and a statement that cannot run in a
            # transaction block cannot share a message (an implicit transaction) either.
            if prefix:
                await self.conn.execute(prefix)
            return (
                await self._copy(st)
                if st.copy_from_stdin
                else str(await self.conn.execute(st.text))
            )
        failure.prefix = len(prefix)
        return str(await self.conn.execute(prefix + st.text))

    async def _flush_prefix(self) -> None:
        prefix, self._prefix = self._prefix, ""
        if prefix:
            await self.conn.execute(prefix)

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
        self, f: _File, start: int, failure: _Failure, *, autocommit: bool = False
    ) -> None:
        """The file's statements from ``start``. ``autocommit``: each one commits with
        its resume point (see the module docstring) before it is reported finished."""
        statements = f.sql.statements
        total = len(statements)
        for index in range(start, total):
            st = statements[index]
            text_preview = preview(st.text)
            self.progress.statement = text_preview
            failure.index, failure.statement = index + 1, st
            if self.emit.active:
                await self.emit(
                    StatementStarted(
                        version=f.version, index=index + 1, total=total, line=st.line,
                        column=st.column, keyword=st.keyword, preview=text_preview,
                    )
                )  # fmt: skip
            t0 = time.perf_counter()
            if autocommit and not st.no_transaction:
                self._prefix += session.BEGIN
            status = await self._send(st, failure)
            if autocommit:
                commit = self.history.progress_commit_sql(f.version, index + 1)
                await self.conn.execute(session.BEGIN + commit if st.no_transaction else commit)
            failure.done = index + 1
            elapsed = (time.perf_counter() - t0) * 1000
            if self._notices:
                await self._flush_notices()
            if self.emit.active:
                await self.emit(
                    StatementFinished(
                        version=f.version, index=index + 1, total=total, status=status,
                        duration_ms=elapsed,
                    )
                )  # fmt: skip
        failure.index, failure.statement = None, None

    def _deadline(self) -> contextlib.AbstractContextManager[object]:
        if self.migration_timeout and self.migration_timeout > 0:
            return anyio.fail_after(self.migration_timeout)
        return anyio.CancelScope()

    async def _started(self, f: _File) -> float:
        """A file begins: publish it, emit it; its start time."""
        self._current_version = f.version
        self.progress.moved_to(f.version)
        await self.emit(
            MigrationStarted(
                version=f.version, migration=f.name, filename=f.filename,
                statements=len(f.sql.statements), transactional=f.sql.directives.transactional,
                direction=f.direction,
            )
        )  # fmt: skip
        return time.perf_counter()

    async def _finished(self, items: Sequence[AppliedMigration]) -> None:
        self.done.extend(items)
        for item in items:
            await self.emit(
                MigrationFinished(
                    version=item.version, migration=item.name, direction=item.direction,
                    duration_ms=item.duration_ms, statements=item.statements,
                )
            )  # fmt: skip

    async def run_file(self, sql: SqlFile) -> None:
        """Run a seed file in the transaction its caller began (:mod:`asyncmig.seeds`):
        from a clean session, its directives as ``SET LOCAL``, COPY data, notices; no
        history. A failure raises the typed error naming the file, line and column."""
        failure = _Failure()
        d = sql.directives
        self._prefix = session.RESET + session.timeouts(
            d.lock_timeout, d.statement_timeout, local=True
        )
        f = _File(0, sql.path.stem, sql.path.name, sql)
        try:
            await self._run_statements(f, 0, failure)
            await self._flush_prefix()
        except Exception as exc:
            error = self._typed_error(exc, f, failure)
            assert error is not None  # None only for a cancellation, not an Exception
            raise error from exc

    # -- the transactional unit -------------------------------------------------------

    async def _unit(
        self,
        files: Sequence[_File],
        record: Callable[[Sequence[AppliedMigration]], Awaitable[str | None]],
    ) -> list[AppliedMigration]:
        """``files`` in one transaction; ``record`` writes their history inside it and
        returns the transaction id. Failure: rolled back, recorded, typed error raised."""
        failure = _Failure()
        results: list[AppliedMigration] = []
        current = files[0]
        t0 = time.perf_counter()
        try:
            self._prefix = session.RESET + session.BEGIN
            for f in files:
                current = f
                t0 = await self._started(f)
                d = f.sql.directives
                self._prefix += session.timeouts(d.lock_timeout, d.statement_timeout, local=True)
                with self._deadline():
                    await self._run_statements(f, 0, failure)
                results.append(f.applied(_ms(t0)))
                if f is not files[-1]:
                    self._prefix = session.RESET  # the next file's clean session
            with self._deadline():
                await self._flush_prefix()
                await self.conn.execute(session.OWN_IDENTITY)
                failure.xid = await record(results)
                failure.commit_sent = True
                await self.conn.execute(session.COMMIT)
        except BaseException as exc:
            self._prefix = ""
            if failure.commit_sent:
                fate = await self._settle(failure.xid)
                if fate == "committed":
                    await self._committed_anyway(results, exc)
                    if isinstance(exc, anyio.get_cancelled_exc_class()):
                        raise
                    return results
                if fate is None:
                    await self._fail(current, failure, exc, t0, uncertain=True)
            await self._fail(current, failure, exc, t0)
            raise  # _fail raised the typed error unless this is a cancellation
        finally:
            self.progress.version = self.progress.statement = None
        await self._finished(results)
        return results

    async def _committed_anyway(
        self, results: Sequence[AppliedMigration], exc: BaseException
    ) -> None:
        what = ", ".join(str(r.version) for r in results)
        verb = "rolled back" if results and results[0].direction == "down" else "applied"
        with anyio.CancelScope(shield=True):
            await self.emit(
                Message(
                    level="warning",
                    text=f"the COMMIT of {what} was interrupted ({_describe(exc)}), but the "
                    f"server had already committed it: {what} is {verb}",
                )
            )
            await self._finished(results)

    async def _settle(self, xid: str | None) -> str | None:
        """The fate of the unit whose COMMIT was sent: ``"committed"``, ``"aborted"``,
        or None when it cannot be known now."""
        if xid is None:
            return "aborted"
        seen = len(self._notices)
        with anyio.CancelScope(shield=True):
            try:
                if not self.conn.is_closed():
                    with anyio.move_on_after(_CLEANUP_TIMEOUT), _unrecordable():
                        # ROLLBACK ends the transaction if the COMMIT never ran; after it,
                        # the fate is sealed and readable on this very session.
                        await self.conn.execute(session.ROLLBACK)
                        return _fate(await self.conn.fetchval(session.XACT_STATUS, xid))
                    self.conn.terminate()
                return await self._settle_elsewhere(xid)
            finally:
                del self._notices[seen:]  # "no transaction in progress" is not the user's
        return None  # (the shielded scope cannot swallow what it does not catch)

    async def _settle_elsewhere(self, xid: str) -> str | None:
        if self._fresh is None:
            return None
        try:
            with anyio.fail_after(_SETTLE_TIMEOUT):
                async with self._fresh() as other:
                    while True:
                        fate = await other.fetchval(session.XACT_STATUS, xid)
                        if fate != "in progress":
                            return _fate(fate)
                        # Our old backend still runs it (a partition, a synchronous
                        # standby): end that session, and the outcome is decided.
                        await other.fetchval(session.TERMINATE_XACT, self._backend_pid, xid)
                        await anyio.sleep(0.1)
        except (TimeoutError, AsyncmigError, asyncpg.PostgresError, asyncpg.InterfaceError,
                OSError):  # fmt: skip
            return None

    # -- migrate ----------------------------------------------------------------------

    async def apply(self, step: MigrateStep) -> AppliedMigration:
        """Apply one migration in its own transaction (or without one, if marked so)."""
        if step.migration.forward.directives.transactional:
            f = _File.up(step.migration)
            return (await self._unit([f], self._recorder(step.migration)))[0]
        return await self._apply_autocommit(step)

    async def apply_atomic(self, steps: Sequence[MigrateStep]) -> list[AppliedMigration]:
        """All steps in one transaction: all or nothing."""
        if not steps:
            return []
        migs = [s.migration for s in steps]
        files = [_File.up(m) for m in migs]

        async def record(results: Sequence[AppliedMigration]) -> str | None:
            xid = None
            for mig, res in zip(migs, results, strict=True):
                xid = await self._recorder(mig)([res])
            return xid

        return await self._unit(files, record)

    def _recorder(
        self, mig: Migration
    ) -> Callable[[Sequence[AppliedMigration]], Awaitable[str | None]]:
        async def record(results: Sequence[AppliedMigration]) -> str | None:
            return await self._record_applied(mig, results[-1].duration_ms)

        return record

    async def _record_applied(self, mig: Migration, duration_ms: float) -> str | None:
        return await self.history.record_completed(
            self.conn, version=mig.version, filename=mig.filename,
            checksum=mig.forward.checksum, duration_ms=int(duration_ms),
            rollback_sql=mig.rollback.text if mig.rollback else None,
            rollback_checksum=mig.rollback.checksum if mig.rollback else None,
            statements=len(mig.forward.statements),
            transactional=mig.forward.directives.transactional,
        )  # fmt: skip

    async def _apply_autocommit(self, step: MigrateStep) -> AppliedMigration:
        mig = step.migration
        f = _File.up(mig)
        sql = mig.forward
        failure = _Failure(done=step.resume_from)
        t0 = await self._started(f)
        try:
            with self._deadline():
                await self.conn.execute(session.RESET)
                await self.history.record_running(
                    self.conn, version=mig.version, filename=mig.filename,
                    checksum=sql.checksum, statements=len(sql.statements),
                    statements_done=step.resume_from,
                    rollback_sql=mig.rollback.text if mig.rollback else None,
                    rollback_checksum=mig.rollback.checksum if mig.rollback else None,
                )  # fmt: skip
                if step.resume_from:
                    await self.history.log(
                        self.conn, "resume", version=mig.version, filename=mig.filename,
                        checksum=sql.checksum,
                        detail=f'{{"from_statement": {step.resume_from + 1}}}',
                    )  # fmt: skip
                d = sql.directives
                self._prefix = session.timeouts(d.lock_timeout, d.statement_timeout, local=False)
                await self._run_statements(f, step.resume_from, failure, autocommit=True)
                self._prefix = ""
                await self.conn.execute(session.RESET)
                await self._record_applied(mig, _ms(t0))
        except BaseException as exc:
            self._prefix = ""
            await self._fail(f, failure, exc, t0)
            raise
        finally:
            self.progress.version = self.progress.statement = None
        result = f.applied(_ms(t0))
        await self._finished([result])
        return result

    # -- rollback ---------------------------------------------------------------------

    async def rollback(self, steps: Sequence[RollbackStep]) -> list[AppliedMigration]:
        """Undo ``steps`` (newest first): consecutive transactional rollbacks run as one
        transaction; a no-transaction rollback file runs alone, between the groups."""
        done: list[AppliedMigration] = []
        group: list[_File] = []
        for step in steps:
            f = _File.down(step)
            if f.sql.directives.transactional:
                group.append(f)
                continue
            if group:
                done += await self._unit(group, self._rolled_back)
                group = []
            done += await self._rollback_autocommit(f)
        if group:
            done += await self._unit(group, self._rolled_back)
        return done

    async def _rolled_back(self, results: Sequence[AppliedMigration]) -> str | None:
        # one statement records the whole group, inside its transaction
        return await self.history.record_rolled_back_many(
            self.conn,
            [(r.version, r.filename, None, int(r.duration_ms)) for r in results],
        )

    async def _rollback_autocommit(self, f: _File) -> list[AppliedMigration]:
        failure = _Failure()
        t0 = await self._started(f)
        try:
            with self._deadline():
                d = f.sql.directives
                self._prefix = session.RESET + session.timeouts(
                    d.lock_timeout, d.statement_timeout, local=False
                )
                await self._run_statements(f, 0, failure)
                self._prefix = ""
                await self.conn.execute(session.RESET)
                result = f.applied(_ms(t0))
                await self._rolled_back([result])
        except BaseException as exc:
            self._prefix = ""
            await self._fail(f, failure, exc, t0)
            raise
        finally:
            self.progress.version = self.progress.statement = None
        await self._finished([result])
        return [result]

    # -- failure ----------------------------------------------------------------------

    async def _fail(
        self, f: _File, failure: _Failure, exc: BaseException, t0: float, *,
        uncertain: bool = False,
    ) -> None:  # fmt: skip
        """Roll back, record the failure (own transaction, shielded), emit it, raise the
        typed error. A cancellation is recorded and emitted too, then left to propagate."""
        error = self._typed_error(exc, f, failure, uncertain=uncertain)
        duration = _ms(t0)
        with anyio.CancelScope(shield=True):
            if self._notices:  # what the failing statement said before it failed
                with _unrecordable():
                    await self._flush_notices()
            if not uncertain and not isinstance(error, LockLostError):
                await self._rollback_and_record(f, failure, error, duration)
            await self.emit(
                MigrationFailed(
                    version=f.version, migration=f.name, direction=f.direction,
                    duration_ms=duration,
                    error=error.to_dict() if error else {"type": "Cancelled",
                                                          "message": "cancelled"},
                )
            )  # fmt: skip
        if error is not None:
            raise error from exc

    async def _rollback_and_record(
        self, f: _File, failure: _Failure, error: AsyncmigError | None, duration: float
    ) -> None:
        if self.conn.is_closed():
            return
        transactional = f.sql.directives.transactional
        seen = len(self._notices)
        with anyio.move_on_after(_CLEANUP_TIMEOUT) as scope:
            try:
                # ROLLBACK also ends an aborted or half-begun transaction; then the
                # failure is written as the connecting user, from a clean session.
                await self.conn.execute(session.ROLLBACK)
                await self.conn.execute(session.RESET)
                del self._notices[seen:]
                await self.history.record_failure(
                    self.conn, version=f.version, filename=f.filename,
                    checksum=f.sql.checksum, duration_ms=int(duration),
                    statements=len(f.sql.statements),
                    statements_done=0 if transactional else failure.done,
                    transactional=transactional,
                    message=error.message if error else "cancelled",
                    sqlstate=getattr(error, "sqlstate", None),
                    statement_index=failure.index, line=getattr(error, "line", None),
                    column=getattr(error, "column", None), direction=f.direction,
                )  # fmt: skip
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
                # The session is unusable: ending it makes the server roll back.
                self.conn.terminate()
        if scope.cancelled_caught:
            self.conn.terminate()

    def _typed_error(
        self, exc: BaseException, f: _File, failure: _Failure, *, uncertain: bool = False
    ) -> AsyncmigError | None:
        """The asyncmig error for ``exc``; None for a cancellation (to be re-raised).
        Every message is true for the file's mode (transaction or not, up or down)."""
        if isinstance(exc, anyio.get_cancelled_exc_class()) and not uncertain:
            return None
        version, path = f.version, f.sql.path
        transactional = f.sql.directives.transactional
        down = f.direction == "down"
        applied = [d.version for d in self.done]
        if uncertain:
            return CommitUncertainError(
                f"the COMMIT of version {version} was sent, but the connection failed "
                f"before the server answered and the server could not be asked since "
                f"({_describe(exc)}). Nothing was recorded as failed. Once the database "
                f"is reachable, `asyncmig status` shows whether it committed; `migrate` "
                f"applies it again only if it did not.",
                version=version, path=path, applied=applied,
            )  # fmt: skip
        if self.progress.lost or self.conn.is_closed() or isinstance(exc, _CONNECTION_LOST):
            reason = self.progress.lost_reason or f"the connection was lost ({_describe(exc)})"
            what = "rolling back" if down else "running"
            return LockLostError(
                f"lost the migration lock while {what} version {version}: {reason}. "
                + _after_loss(version, transactional, down, failure)
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
                f"version {version} ran past its {self.migration_timeout:g}s deadline"
                f"{where}; the running statement was cancelled"
                + _after_failure(version, transactional, down, failure),
                version=version, path=path, line=line, column=column,
                statement_index=failure.index, applied=applied,
            )  # fmt: skip
        cls: type[MigrationError] = RollbackFailedError if down else MigrationError
        if isinstance(exc, asyncpg.PostgresError):
            verb = "rollback of" if down else "migration"
            return cls(
                f"{verb} {version} failed{where}: {exc}"
                + _after_failure(version, transactional, down, failure),
                version=version, path=path, line=line, column=column,
                statement_index=failure.index, sqlstate=exc.sqlstate,
                detail=getattr(exc, "detail", None), hint=getattr(exc, "hint", None),
                server_message=str(exc), applied=applied,
            )  # fmt: skip
        if isinstance(exc, AsyncmigError):
            return exc
        return cls(
            f"version {version} failed{where}: {_describe(exc)}"
            + _after_failure(version, transactional, down, failure),
            version=version, path=path, line=line, column=column,
            statement_index=failure.index, applied=applied,
        )  # fmt: skip


_CONNECTION_LOST = (
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.AdminShutdownError,
    asyncpg.ConnectionFailureError,
    ConnectionError,
)


def _after_failure(version: int, transactional: bool, down: bool, failure: _Failure) -> str:
    """What a failure left behind, for the message."""
    if transactional:
        if down:
            return "; the rollback was undone, so the migration is still applied"
        return "; the migration was rolled back"
    return (
        f"; it runs without a transaction: statements 1–{failure.done} are committed "
        f"and stay. Fix the cause, then `asyncmig "
        + ("rollback" if down else f"migrate --resume` continues at statement {failure.done + 1}")
        + ("` runs it again" if down else "")
    )


def _after_loss(version: int, transactional: bool, down: bool, failure: _Failure) -> str:
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


def _fate(value: object) -> str | None:
    return str(value) if value in ("committed", "aborted") else None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "deadline passed"
    if isinstance(exc, anyio.get_cancelled_exc_class()):
        return "cancelled"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@contextlib.contextmanager
def _unrecordable() -> Iterator[None]:
    """A failure cannot be recorded when the session is gone; the caller still raises."""
    with contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
        yield


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000
