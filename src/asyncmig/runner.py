"""Run migrations and rollbacks on the lock's connection: the entry points and the core.

The entry points (:meth:`Runner.migrate`, :meth:`Runner.rollback`,
:meth:`Runner.run_file`) hand each file to one of two paths. This module holds the one
that runs a *transactional unit* — one migration, an ``--atomic`` batch, or a group of
consecutive transactional rollbacks; a *no-transaction file* runs in
:mod:`asyncmig.autocommit`.

* Unit, batched (the default): the whole unit goes as one message, or a few
  (:mod:`asyncmig.batch`): the session reset, ``BEGIN``, each file's ``SET LOCAL``
  timeouts, its statements with a marker before each, the history rows (recorded as
  the connecting user from rows staged when the run began), ``COMMIT``. The markers'
  NOTICEs arrive while it runs and become the per-statement events (:mod:`asyncmig.feed`);
  the last one names the statement that failed.
* Unit, per statement (``batch=False``, and for a file that switches roles, which the
  markers could not follow): the same, one round trip per statement
  (:mod:`asyncmig.sender`).
* Lock retries: a unit whose lock is not granted in time is rolled back quietly and
  tried again (:mod:`asyncmig.retries`), under the deadline set for its first attempt.
* Every file starts from a clean session (:mod:`asyncmig.session`).
* A failure rolls back, then is recorded in a transaction of its own; a COMMIT whose
  answer did not arrive is settled first (:mod:`asyncmig.settle`).
* Deadline: each unit (or no-transaction file) runs under ``anyio.fail_after``; when it
  passes, asyncpg cancels the running statement on the server.
* Cancellation: the same clean-up runs shielded with its own deadline, then propagates.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable, Sequence
from datetime import datetime

import anyio
import asyncpg

from . import autocommit, session
from .batch import Segment, build
from .connection import Conn
from .events import Emitter, LockRetry, MigrationFinished
from .failures import Failure, File, typed_error
from .feed import EventFeed
from .history import History
from .models import MigrateStep, RollbackStep
from .progress import Progress
from .reports import AppliedMigration
from .retries import LOCK_NOT_AVAILABLE, RetryPolicy
from .sender import Sender, elapsed_ms
from .settle import (
    CLEANUP_TIMEOUT,
    circumstances,
    committed_anyway,
    fail,
    passed_last_file,
    place,
    settle,
    unrecordable,
)
from .sqlfile import SqlFile

__all__ = ["Runner"]

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

    Besides the entry points, its non-underscore members are what the no-transaction
    path (:mod:`asyncmig.autocommit`) and the failure path (:mod:`asyncmig.settle`)
    share with the unit core: the connection and its :class:`Sender`, the deadline,
    the lock retries, the completion events.
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
        self.fresh = fresh
        self.backend_pid = conn.get_server_pid()
        self.backend_start: datetime | None = None  # known once the plan is staged
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
            anyio.move_on_after(CLEANUP_TIMEOUT),
            unrecordable(),
        ):
            if not self.conn.is_in_transaction():
                await self.conn.execute(session.RESET)

    def sample_locks(self, timeouts: Sequence[float | None]) -> None:
        """Have the heartbeat sample a running statement's progress and what blocks it
        within half the shortest lock timeout, so a lock wait is seen."""
        limits = [t / 2 for t in timeouts if t]
        self.progress.sample_after = min([1.0, *limits])

    def _deadline_at(self) -> float | None:
        if self.migration_timeout and self.migration_timeout > 0:
            return anyio.current_time() + self.migration_timeout
        return None

    def deadline(self, until: float | None = None) -> contextlib.AbstractContextManager[object]:
        """The migration's deadline (``until``: one set earlier, shared by retries)."""
        until = until if until is not None else self._deadline_at()
        if until is None:
            return anyio.CancelScope()
        return anyio.fail_after(max(0.0, until - anyio.current_time()))

    async def finished(self, items: Sequence[AppliedMigration]) -> None:
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
        self.backend_start = await self.history.stage(self.conn, [f.staged() for f in files])

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
                await autocommit.apply(self, f, step.resume_from)

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
            await autocommit.rollback(self, f)
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
            error = typed_error(exc, failure, circumstances(self))
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
            self.sample_locks(timeouts)
            try:
                with self.deadline(until):
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
                if self.retryable(exc, failure, t0, files):
                    pause = self.retry.pause(attempt)
                    await self.lock_retry(failure, timeouts, pause)
                    attempt += 1
                    continue
                if failure.commit_sent:
                    fate = await settle(self, files)
                    if fate == "committed":
                        results = [f.applied(elapsed_ms(t0) / len(files)) for f in files]
                        await committed_anyway(self, results, exc)
                        if isinstance(exc, anyio.get_cancelled_exc_class()):
                            raise
                        return
                    if fate is None:
                        await fail(self, failure, exc, t0, uncertain=True)
                await fail(self, failure, exc, t0)
                raise  # fail raised the typed error unless this is a cancellation
            finally:
                self.progress.version = self.progress.statement = None
        await self.finished(results)

    def retryable(
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

    async def lock_retry(
        self, failure: Failure, timeouts: Sequence[float | None], pause: float
    ) -> None:
        """Roll the attempt back (quietly: it is not a failure yet) and say so."""
        seen = len(self.feed.inbox)
        with anyio.CancelScope(shield=True), anyio.move_on_after(CLEANUP_TIMEOUT):
            if self.feed.inbox:
                with unrecordable():
                    await self.feed.drain()
                seen = len(self.feed.inbox)
            try:
                await self.conn.execute(session.ROLLBACK)
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
                self.conn.terminate()
            self.feed.forget_since(seen)
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
                and passed_last_file(self.feed, files, tracker)
            )
            place(exc, segment, tracker, files, failure)
            raise
        finally:
            self.feed.tracker = None
        return tracker.durations

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
            results.append(f.applied(elapsed_ms(t0)))
            sender.prefix += session.RESET  # the next file's clean session
        await sender.flush()
        await self.conn.execute(session.OWN_IDENTITY)
        for f, r in zip(files, results, strict=True):
            await self.history.record(self.conn, f.version, r.duration_ms)
        failure.commit_sent = True
        await self.conn.execute(session.COMMIT)
        return results


# Statements that can switch roles: SET/RESET, and code that may run set_config or
# EXECUTE (an INSERT's megabytes of values are never searched).
_MAY_SWITCH = frozenset({"SET", "RESET", "DO", "SELECT", "CALL", "EXECUTE"})


def _switches_role(sql: SqlFile) -> bool:
    return any(
        st.keyword.partition(" ")[0] in _MAY_SWITCH and _SWITCHES_ROLE.search(st.text)
        for st in sql.statements
    )
