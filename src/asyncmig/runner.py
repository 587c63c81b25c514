"""Run migrations and rollbacks on the lock's connection.

One core runs a *transactional unit* — one migration, an ``--atomic`` batch, or a group
of consecutive transactional rollbacks — and one runs a *no-transaction file*:

* Unit, batched (the default): the whole unit goes as one message, or a few
  (:mod:`asyncmig.batch`): the session reset, ``BEGIN``, each file's ``SET LOCAL``
  timeouts, its statements with a marker before each, the history rows (recorded as
  the connecting user from rows staged when the run began), ``COMMIT``. The markers'
  NOTICEs arrive while it runs and become the per-statement events; the last one names
  the statement that failed.
* Unit, per statement (``batch=False``, and for a file that switches roles, which the
  markers could not follow): the same, one round trip per statement.
* No-transaction file: the row is committed as ``running`` first. A statement that may
  run in a transaction block commits together with its resume point, so a stop
  anywhere never re-runs it; one that cannot (``CREATE INDEX CONCURRENTLY``) commits on
  its own, and its resume point right after.
* Every file starts from a clean session (:mod:`asyncmig.session`).
* A failure rolls back, then is recorded in a transaction of its own (never lost with
  the rollback). A COMMIT whose answer did not arrive is settled first, from history on
  this session after a ``ROLLBACK``, or on a fresh connection after ending this session:
  a committed unit is reported applied; an unknowable one raises
  :class:`CommitUncertainError` and records nothing.
* Deadline: each unit (or no-transaction file) runs under ``anyio.fail_after``; when it
  passes, asyncpg cancels the running statement on the server.
* Cancellation: the same clean-up runs shielded with its own deadline, then propagates.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime

import anyio
import asyncpg

from . import indexes, session
from .batch import Segment, Tracker, build, parse_mark
from .connection import Conn
from .errors import (
    AsyncmigError,
    LockLostError,
)
from .events import (
    Emitter,
    LockRetry,
    Message,
    MigrationFailed,
    MigrationFinished,
)
from .failures import Circumstances, Failure, File, describe, typed_error
from .feed import EventFeed
from .history import MARK_SQLSTATE, History
from .loader import SqlFile
from .lock import Progress
from .models import MigrateStep, RollbackStep
from .reports import AppliedMigration
from .retries import LOCK_NOT_AVAILABLE, RetryPolicy
from .sender import Sender
from .splitter import Statement

__all__ = ["Runner"]

_CLEANUP_TIMEOUT = 5.0
_SETTLE_TIMEOUT = 15.0

FreshConnection = Callable[[], contextlib.AbstractAsyncContextManager[Conn]]

# A file that switches roles runs statement by statement: a marker called after the
# switch could lack the right to run.
_SWITCHES_ROLE = re.compile(
    r"\b(?:set|reset)\s+(?:(?:local|session)\s+)?(?:role|session\s+authorization)\b"
    r"|set_config\s*\(\s*'role'",
    re.I,
)


class Runner:
    """Executes planned steps on one connection; emits events; writes history.

    ``fresh`` opens another connection, used only to settle a COMMIT whose answer was
    lost with this one. ``done`` lists what this run committed, in order. ``batch``:
    one message per transactional unit (default), or one round trip per statement.
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
        batch: bool = True,
        retry: RetryPolicy | None = None,
        rebuild_invalid: bool = False,
    ) -> None:
        self.conn = conn
        self.rebuild_invalid = rebuild_invalid  # drop and rebuild INVALID indexes (indexes)
        self.history = history
        self.emit = emit
        self.progress = progress
        self.migration_timeout = migration_timeout
        self.batch = batch
        self.retry = retry if retry is not None else RetryPolicy()
        self.done: list[AppliedMigration] = []
        self._fresh = fresh
        self._backend_pid = conn.get_server_pid()
        self._backend_start: datetime | None = None
        self.feed = EventFeed(emit, progress)
        self.sender = Sender(conn, self.feed)

    async def __aenter__(self) -> Runner:
        self.conn.add_log_listener(self.feed.on_notice)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.conn.is_closed():
            return
        self.conn.remove_log_listener(self.feed.on_notice)
        # The connection goes back (to a pool, to the lock's release) as it came.
        with (
            anyio.CancelScope(shield=True),
            anyio.move_on_after(_CLEANUP_TIMEOUT),
            _unrecordable(),
        ):
            if not self.conn.is_in_transaction():
                await self.conn.execute(session.RESET)

    # -- no-transaction files: statements that commit with their resume point --------

    async def _send_retrying(self, f: File, st: Statement, failure: Failure) -> str:
        """A statement of a no-transaction file that may run in a transaction block: in
        one of its own (its resume point commits with it, see the module docstring),
        with the DDL lock timeout, tried again while its lock is not granted in time.
        Nothing of it committed before a retry, so nothing runs twice."""
        directive = f.sql.directives.lock_timeout
        t0 = time.perf_counter()
        failure.attempt = 1
        while True:
            timeout = self.retry.timeout(failure.attempt, directive)
            self.sender.prefix += session.BEGIN + session.timeouts(timeout, None, local=True)
            self.progress.sample_after = _sample_after([timeout])
            try:
                return await self.sender.send(st, failure)
            except asyncpg.PostgresError as exc:
                if not self._retryable(exc, failure, t0, [f]):
                    raise
                pause = self.retry.pause(failure.attempt)
                await self._lock_retry(failure, [timeout], pause)
                await anyio.sleep(pause)
                failure.attempt += 1

    def _deadline_at(self) -> float | None:
        if self.migration_timeout and self.migration_timeout > 0:
            return anyio.current_time() + self.migration_timeout
        return None

    def _deadline(self, until: float | None = None) -> contextlib.AbstractContextManager[object]:
        """The migration's deadline (``until``: one set earlier, shared by retries)."""
        until = until if until is not None else self._deadline_at()
        if until is None:
            return anyio.CancelScope()
        return anyio.fail_after(max(0.0, until - anyio.current_time()))

    async def _finished(self, items: Sequence[AppliedMigration]) -> None:
        self.done.extend(items)
        for item in items:
            await self.emit(
                MigrationFinished(
                    version=item.version, migration=item.name, direction=item.direction,
                    duration_ms=item.duration_ms, statements=item.statements,
                )
            )  # fmt: skip

    # -- the plan -----------------------------------------------------------------------

    async def _stage(self, files: Sequence[File]) -> None:
        """What each file's history row will say, in place before anything runs."""
        self._backend_start = await self.history.stage(self.conn, [f.staged() for f in files])

    async def migrate(self, steps: Sequence[MigrateStep], *, atomic: bool = False) -> None:
        """Apply ``steps``: each in its own transaction (no-transaction files without
        one), or (``atomic``) all in one."""
        files = [File.up(s.migration) for s in steps]
        if not files:
            return
        await self._stage(files)
        if atomic:
            await self._unit(files)
            return
        for step, f in zip(steps, files, strict=True):
            if f.transactional:
                await self._unit([f])
            else:
                await self._apply_autocommit(f, step.resume_from)

    async def rollback(self, steps: Sequence[RollbackStep]) -> None:
        """Undo ``steps`` (newest first): consecutive transactional rollbacks run as one
        transaction; a no-transaction rollback file runs alone, between the groups."""
        files = [File.down(s) for s in steps]
        if not files:
            return
        await self._stage(files)
        group: list[File] = []
        for f in files:
            if f.transactional:
                group.append(f)
                continue
            if group:
                await self._unit(group)
                group = []
            await self._rollback_autocommit(f)
        if group:
            await self._unit(group)

    async def run_file(self, sql: SqlFile) -> None:
        """Run a seed file in the transaction its caller began (:mod:`asyncmig.seeds`):
        from a clean session, its directives as ``SET LOCAL``, COPY data, notices; no
        history. A failure raises the typed error naming the file, line and column."""
        f = File(0, sql.path.stem, sql.path.name, sql)
        failure = Failure(file=f)
        d = sql.directives
        self.sender.prefix = session.RESET + session.timeouts(
            d.lock_timeout, d.statement_timeout, local=True
        )
        try:
            await self.sender.run(f, 0, failure)
            await self.sender.flush()
        except Exception as exc:
            error = typed_error(exc, failure, self._circumstances())
            assert error is not None  # None only for a cancellation, not an Exception
            raise error from exc

    # -- the transactional unit -------------------------------------------------------

    async def _unit(self, files: Sequence[File]) -> None:
        """``files`` in one transaction with their history rows, tried again while a
        lock is not granted in time (:mod:`asyncmig.retries`). Failure: rolled back,
        recorded, typed error raised."""
        t0 = time.perf_counter()
        batched = self.batch and not any(_switches_role(f.sql) for f in files)
        until = self._deadline_at()
        attempt, pause = 1, 0.0
        while True:
            failure = Failure(file=files[0], attempt=attempt)
            timeouts = [self.retry.timeout(attempt, f.sql.directives.lock_timeout) for f in files]
            self.progress.sample_after = _sample_after(timeouts)
            try:
                with self._deadline(until):
                    await anyio.sleep(pause)
                    if batched:
                        durations = await self._unit_batched(files, failure, timeouts)
                        results = [f.applied(durations.get(j, 0.0)) for j, f in enumerate(files)]
                    else:
                        results = await self._unit_per_statement(files, failure, timeouts)
                break
            except BaseException as exc:
                self.sender.prefix = ""
                self.feed.tracker = None
                if self._retryable(exc, failure, t0, files):
                    pause = self.retry.pause(attempt)
                    await self._lock_retry(failure, timeouts, pause)
                    attempt += 1
                    continue
                if failure.commit_sent:
                    fate = await self._settle(files)
                    if fate == "committed":
                        results = [f.applied(_ms(t0) / len(files)) for f in files]
                        await self._committed_anyway(results, exc)
                        if isinstance(exc, anyio.get_cancelled_exc_class()):
                            raise
                        return
                    if fate is None:
                        await self._fail(failure, exc, t0, uncertain=True)
                await self._fail(failure, exc, t0)
                raise  # _fail raised the typed error unless this is a cancellation
            finally:
                self.progress.version = self.progress.statement = None
        await self._finished(results)

    def _retryable(
        self, exc: BaseException, failure: Failure, t0: float, files: Sequence[File]
    ) -> bool:
        """A lock not granted in time, attempts and time left, nothing committed."""
        if not (isinstance(exc, asyncpg.PostgresError) and exc.sqlstate == LOCK_NOT_AVAILABLE):
            return False
        directive = files[0].sql.directives.lock_timeout
        return (
            not failure.commit_sent
            and not self.conn.is_closed()
            and self.retry.active(directive)
            and failure.attempt < self.retry.attempts
            and time.perf_counter() - t0 < self.retry.deadline
        )

    async def _lock_retry(
        self, failure: Failure, timeouts: Sequence[float | None], pause: float
    ) -> None:
        """Roll the attempt back (quietly: it is not a failure yet) and say so."""
        seen = len(self.feed.inbox)
        with anyio.CancelScope(shield=True), anyio.move_on_after(_CLEANUP_TIMEOUT):
            if self.feed.inbox:
                with _unrecordable():
                    await self.feed.drain()
                seen = len(self.feed.inbox)
            try:
                await self.conn.execute(session.ROLLBACK)
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
                self.conn.terminate()
            del self.feed.inbox[seen:]
        f = failure.file
        assert f is not None
        await self.emit(
            LockRetry(
                version=f.version, index=failure.index, attempt=failure.attempt,
                attempts=self.retry.attempts, lock_timeout_s=max(t or 0.0 for t in timeouts),
                sleep_s=round(pause, 3), blockers=self.progress.blockers,
                relation=self.progress.lock_relation,
            )
        )  # fmt: skip

    async def _unit_batched(
        self, files: Sequence[File], failure: Failure, timeouts: Sequence[float | None]
    ) -> dict[int, float]:
        """Send the unit's messages; each file's server-side duration, by position."""
        segments = build([f.version for f in files], [f.sql for f in files], self.history, timeouts)
        tracker = self.feed.follow(files)
        segment = Segment("")  # none sent yet
        try:
            async with self.feed.live():
                for segment in segments:
                    failure.commit_sent = segment.last
                    await self.conn.execute(segment.text)
                    if segment.copy is not None:
                        f = files[segment.copy.file]
                        await self.sender.copy(f.sql.statements[segment.copy.index - 1])
        except BaseException as exc:
            # The server answered with an error: nothing committed. Otherwise the COMMIT
            # may have run only if the server got past the last file's statements, which
            # its final marker says (markers go out before what they precede runs).
            failure.commit_sent = (
                failure.commit_sent
                and not isinstance(exc, asyncpg.PostgresError)
                and self._passed_last_file(files, tracker)
            )
            self._place(exc, segment, tracker, files, failure)
            raise
        finally:
            self.feed.tracker = None
        return tracker.durations

    def _passed_last_file(self, files: Sequence[File], tracker: Tracker) -> bool:
        last = files[-1]
        if tracker.durations.get(len(files) - 1) is not None:
            return True
        end = (last.version, len(last.sql.statements) + 1)
        for msg in self.feed.inbox:  # arrived, not yet turned into events
            mark = parse_mark(getattr(msg, "message", ""))
            if getattr(msg, "sqlstate", None) == MARK_SQLSTATE and mark and mark[:2] == end:
                return True
        return False

    def _place(
        self,
        exc: BaseException,
        segment: Segment,
        tracker: Tracker,
        files: Sequence[File],
        failure: Failure,
    ) -> None:
        """Which statement failed: by the server's error position when it gives one
        (a syntax error is found before anything in the message runs), else by the
        last marker."""
        position = getattr(exc, "position", None)
        span = segment.at(int(position)) if position else None
        if span is not None:
            failure.at(files[span.file], span.index, span.start)
        elif tracker.file is not None:
            failure.at(files[tracker.file], tracker.index or None)

    async def _unit_per_statement(
        self, files: Sequence[File], failure: Failure, timeouts: Sequence[float | None]
    ) -> list[AppliedMigration]:
        results: list[AppliedMigration] = []
        sender = self.sender
        sender.prefix = session.RESET + session.BEGIN
        for f, lock_timeout in zip(files, timeouts, strict=True):
            t0 = time.perf_counter()
            await self.feed.started(f)
            d = f.sql.directives
            sender.prefix += session.timeouts(lock_timeout, d.statement_timeout, local=True)
            await sender.run(f, 0, failure)
            results.append(f.applied(_ms(t0)))
            sender.prefix += session.RESET  # the next file's clean session
        await sender.flush()
        await self.conn.execute(session.OWN_IDENTITY)
        for f, r in zip(files, results, strict=True):
            await self.history.record(self.conn, f.version, r.duration_ms)
        failure.commit_sent = True
        await self.conn.execute(session.COMMIT)
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
                    text=f"the COMMIT of {what} was interrupted ({describe(exc)}), but the "
                    f"server had already committed it: {what} is {verb}",
                )
            )
            await self._finished(results)

    async def _settle(self, files: Sequence[File]) -> str | None:
        """The fate of the unit whose COMMIT was sent: ``"committed"``, ``"aborted"``,
        or None when it cannot be known now. Its history rows tell, once this session
        no longer runs it (nobody else writes them: this run holds the lock)."""
        seen = len(self.feed.inbox)
        with anyio.CancelScope(shield=True):
            try:
                if not self.conn.is_closed():
                    with anyio.move_on_after(_CLEANUP_TIMEOUT), _unrecordable():
                        # ROLLBACK ends the transaction if the COMMIT never ran; after it,
                        # the outcome is sealed and readable on this very session.
                        await self.conn.execute(session.ROLLBACK)
                        return await self._fate(self.conn, files)
                    self.conn.terminate()
                return await self._settle_elsewhere(files)
            finally:
                del self.feed.inbox[seen:]  # "no transaction in progress" is not the user's
        return None  # (the shielded scope cannot swallow what it does not catch)

    async def _settle_elsewhere(self, files: Sequence[File]) -> str | None:
        if self._fresh is None or self._backend_start is None:
            return None
        try:
            with anyio.fail_after(_SETTLE_TIMEOUT):
                async with self._fresh() as other:
                    # Our old session may still run it (a partition, a synchronous
                    # standby): end exactly that session, and the outcome is decided.
                    while True:
                        alive = await other.fetchval(
                            session.END_SESSION, self._backend_pid, self._backend_start
                        )
                        if not alive:
                            break
                        await anyio.sleep(0.1)  # until the server has ended it
                    return await self._fate(other, files)
        except (TimeoutError, AsyncmigError, asyncpg.PostgresError, asyncpg.InterfaceError,
                OSError):  # fmt: skip
            return None

    async def _fate(self, conn: Conn, files: Sequence[File]) -> str:
        statuses = await self.history.statuses(conn, [f.version for f in files])
        want = "rolled_back" if files[0].direction == "down" else "completed"
        return "committed" if all(statuses.get(f.version) == want for f in files) else "aborted"

    # -- no-transaction files ---------------------------------------------------------

    async def _apply_autocommit(self, f: File, resume_from: int) -> None:
        sql = f.sql
        failure = Failure(file=f, done=resume_from)
        t0 = time.perf_counter()
        await self.feed.started(f)
        try:
            with self._deadline():
                await self.conn.execute(session.RESET)
                await self.history.record_running(
                    self.conn, version=f.version, filename=f.filename,
                    checksum=sql.checksum, statements=len(sql.statements),
                    statements_done=resume_from,
                    rollback_sql=f.rollback.text if f.rollback else None,
                    rollback_checksum=f.rollback.checksum if f.rollback else None,
                )  # fmt: skip
                if resume_from:
                    await self.history.log(
                        self.conn, "resume", version=f.version, filename=f.filename,
                        checksum=sql.checksum,
                        detail=f'{{"from_statement": {resume_from + 1}}}',
                    )  # fmt: skip
                if self.rebuild_invalid:
                    await indexes.rebuild_before(
                        self.conn, self.history, self.emit, sql, resume_from
                    )
                d = sql.directives
                self.sender.prefix = session.timeouts(
                    d.lock_timeout, d.statement_timeout, local=False
                )

                async def step(st: Statement, number: int) -> str:
                    commit = self.history.progress_commit_sql(f.version, number)
                    if st.no_transaction:
                        status = await self.sender.send(st, failure)
                        await self.conn.execute(session.BEGIN + commit)
                    else:
                        status = await self._send_retrying(f, st, failure)
                        await self.conn.execute(commit)
                    return status

                await self.sender.run(f, resume_from, failure, step=step)
                self.sender.prefix = ""
                await indexes.check_after(
                    self.conn, self.history, sql, f.version, [a.version for a in self.done]
                )
                await self.conn.execute(session.RESET)
                await self.history.record(self.conn, f.version, _ms(t0))
        except BaseException as exc:
            self.sender.prefix = ""
            await self._fail(failure, exc, t0)
            raise
        finally:
            self.progress.version = self.progress.statement = None
        await self._finished([f.applied(_ms(t0))])

    async def _rollback_autocommit(self, f: File) -> None:
        failure = Failure(file=f)
        t0 = time.perf_counter()
        await self.feed.started(f)
        try:
            with self._deadline():
                d = f.sql.directives
                self.sender.prefix = session.RESET + session.timeouts(
                    d.lock_timeout, d.statement_timeout, local=False
                )
                await self.sender.run(f, 0, failure)
                self.sender.prefix = ""
                await self.conn.execute(session.RESET)
                await self.history.record(self.conn, f.version, _ms(t0))
        except BaseException as exc:
            self.sender.prefix = ""
            await self._fail(failure, exc, t0)
            raise
        finally:
            self.progress.version = self.progress.statement = None
        await self._finished([f.applied(_ms(t0))])

    # -- failure ----------------------------------------------------------------------

    def _circumstances(self) -> Circumstances:
        return Circumstances(
            applied=[d.version for d in self.done],
            lost_reason=(self.progress.lost_reason or "") if self.progress.lost else None,
            closed=self.conn.is_closed(),
            migration_timeout=self.migration_timeout,
            blockers=self.progress.blockers,
        )

    async def _fail(
        self, failure: Failure, exc: BaseException, t0: float, *, uncertain: bool = False
    ) -> None:
        """Roll back, record the failure (own transaction, shielded), emit it, raise the
        typed error. A cancellation is recorded and emitted too, then left to propagate."""
        f = failure.file
        assert f is not None
        error = typed_error(exc, failure, self._circumstances(), uncertain=uncertain)
        duration = _ms(t0)
        with anyio.CancelScope(shield=True):
            if self.feed.inbox:  # what the failing statement said before it failed
                with _unrecordable():
                    await self.feed.drain()
            if not uncertain and not isinstance(error, LockLostError):
                await self._rollback_and_record(failure, error, duration)
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
        self, failure: Failure, error: AsyncmigError | None, duration: float
    ) -> None:
        f = failure.file
        if f is None or self.conn.is_closed():
            return
        seen = len(self.feed.inbox)
        with anyio.move_on_after(_CLEANUP_TIMEOUT) as scope:
            try:
                # ROLLBACK also ends an aborted or half-begun transaction; then the
                # failure is written as the connecting user, from a clean session.
                await self.conn.execute(session.ROLLBACK)
                await self.conn.execute(session.RESET)
                del self.feed.inbox[seen:]
                await self.history.record_failure(
                    self.conn, version=f.version, filename=f.filename,
                    checksum=f.sql.checksum, duration_ms=int(duration),
                    statements=len(f.sql.statements),
                    statements_done=0 if f.transactional else failure.done,
                    transactional=f.transactional,
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


# Statements that can switch roles: SET/RESET, and code that may run set_config or
# EXECUTE (an INSERT's megabytes of values are never searched).
_MAY_SWITCH = frozenset({"SET", "RESET", "DO", "SELECT", "CALL", "EXECUTE"})


def _switches_role(sql: SqlFile) -> bool:
    return any(
        st.keyword.partition(" ")[0] in _MAY_SWITCH and _SWITCHES_ROLE.search(st.text)
        for st in sql.statements
    )


def _sample_after(timeouts: Sequence[float | None]) -> float:
    """How long a statement runs before the heartbeat samples its progress and what
    blocks it: within half the shortest lock timeout, so a lock wait is seen."""
    limits = [t / 2 for t in timeouts if t]
    return min([1.0, *limits])


@contextlib.contextmanager
def _unrecordable() -> Iterator[None]:
    """A failure cannot be recorded when the session is gone; the caller still raises."""
    with contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
        yield


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000
