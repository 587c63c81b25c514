"""After a failure: where it happened, whether a COMMIT went through, what is recorded.

* Placing it (a one-message unit, :mod:`asyncmig.batch`): the server's error position
  names the statement when it gives one, else the last marker that arrived
  (:func:`place`); and the COMMIT may have run only if the final marker did
  (:func:`passed_last_file`).
* Settling a COMMIT whose answer did not arrive (:func:`settle`): after a ``ROLLBACK``
  the unit's history rows tell on this session; when it is unusable, on a fresh
  connection, once the run's old session is ended. A committed unit is reported applied
  (:func:`committed_anyway`); an unknowable one raises :class:`CommitUncertainError`
  and records nothing.
* Recording it (:func:`fail`): rolled back, written in a transaction of its own (never
  lost with the rollback), emitted, raised as the typed error (:mod:`asyncmig.failures`).
  A cancellation is recorded and emitted too, then left to propagate.

Every step here runs shielded, under its own deadline: a dead session ends the clean-up,
never the report.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import anyio
import asyncpg

from . import session
from .batch import Segment, Tracker, parse_mark
from .connection import Conn
from .errors import AsyncmigError, LockLostError
from .events import Message, MigrationFailed
from .failures import Circumstances, Failure, File, describe, typed_error
from .feed import EventFeed
from .history import MARK_SQLSTATE, History
from .reports import AppliedMigration
from .sender import elapsed_ms

if TYPE_CHECKING:
    from .runner import Runner

__all__ = [
    "CLEANUP_TIMEOUT",
    "circumstances",
    "committed_anyway",
    "fail",
    "passed_last_file",
    "place",
    "settle",
    "unrecordable",
]

CLEANUP_TIMEOUT = 5.0
_SETTLE_TIMEOUT = 15.0


@contextlib.contextmanager
def unrecordable() -> Iterator[None]:
    """A failure cannot be recorded when the session is gone; the caller still raises."""
    with contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
        yield


# -- placing it -------------------------------------------------------------------------


def place(
    exc: BaseException, segment: Segment, tracker: Tracker, files: Sequence[File], failure: Failure
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


def passed_last_file(feed: EventFeed, files: Sequence[File], tracker: Tracker) -> bool:
    """Whether the server got past the last file's statements (its final marker came)."""
    last = files[-1]
    if tracker.durations.get(len(files) - 1) is not None:
        return True
    end = (last.version, len(last.sql.statements) + 1)
    for msg in feed.inbox:  # arrived, not yet turned into events
        mark = parse_mark(getattr(msg, "message", ""))
        if getattr(msg, "sqlstate", None) == MARK_SQLSTATE and mark and mark[:2] == end:
            return True
    return False


# -- a COMMIT whose answer was lost ---------------------------------------------------


async def settle(run: Runner, files: Sequence[File]) -> str | None:
    """The fate of the unit whose COMMIT was sent: ``"committed"``, ``"aborted"``,
    or None when it cannot be known now. Its history rows tell, once this session
    no longer runs it (nobody else writes them: this run holds the lock)."""
    conn, feed = run.conn, run.feed
    seen = len(feed.inbox)
    with anyio.CancelScope(shield=True):
        try:
            if not conn.is_closed():
                with anyio.move_on_after(CLEANUP_TIMEOUT), unrecordable():
                    # ROLLBACK ends the transaction if the COMMIT never ran; after it,
                    # the outcome is sealed and readable on this very session.
                    await conn.execute(session.ROLLBACK)
                    return await _fate(run.history, conn, files)
                conn.terminate()
            return await _settle_elsewhere(run, files)
        finally:
            feed.forget_since(seen)  # "no transaction in progress" is not the user's
    return None  # (the shielded scope cannot swallow what it does not catch)


async def _settle_elsewhere(run: Runner, files: Sequence[File]) -> str | None:
    if run.fresh is None or run.backend_start is None:
        return None
    try:
        with anyio.fail_after(_SETTLE_TIMEOUT):
            async with run.fresh() as other:
                # Our old session may still run it (a partition, a synchronous
                # standby): end exactly that session, and the outcome is decided.
                while True:
                    alive = await other.fetchval(
                        session.END_SESSION, run.backend_pid, run.backend_start
                    )
                    if not alive:
                        break
                    await anyio.sleep(0.1)  # until the server has ended it
                return await _fate(run.history, other, files)
    except (TimeoutError, AsyncmigError, asyncpg.PostgresError, asyncpg.InterfaceError,
            OSError):  # fmt: skip
        return None


async def _fate(history: History, conn: Conn, files: Sequence[File]) -> str:
    statuses = await history.statuses(conn, [f.version for f in files])
    want = "rolled_back" if files[0].direction == "down" else "completed"
    return "committed" if all(statuses.get(f.version) == want for f in files) else "aborted"


async def committed_anyway(
    run: Runner, results: Sequence[AppliedMigration], exc: BaseException
) -> None:
    """Say that the interrupted COMMIT went through, and report the unit applied."""
    what = ", ".join(str(r.version) for r in results)
    verb = "rolled back" if results and results[0].direction == "down" else "applied"
    with anyio.CancelScope(shield=True):
        await run.emit(
            Message(
                level="warning",
                text=f"the COMMIT of {what} was interrupted ({describe(exc)}), but the "
                f"server had already committed it: {what} is {verb}",
            )
        )
        await run.finished(results)


# -- recording it -----------------------------------------------------------------------


def circumstances(run: Runner) -> Circumstances:
    """What the run knows now, for the typed error."""
    progress = run.progress
    return Circumstances(
        applied=[d.version for d in run.done],
        lost_reason=(progress.lost_reason or "") if progress.lost else None,
        closed=run.conn.is_closed(),
        migration_timeout=run.migration_timeout,
        blockers=progress.blockers,
    )


async def fail(
    run: Runner, failure: Failure, exc: BaseException, t0: float, *, uncertain: bool = False
) -> None:
    """Roll back, record the failure (own transaction, shielded), emit it, raise the
    typed error. A cancellation is recorded and emitted too, then left to propagate."""
    f = failure.file
    assert f is not None
    error = typed_error(exc, failure, circumstances(run), uncertain=uncertain)
    duration = elapsed_ms(t0)
    with anyio.CancelScope(shield=True):
        if run.feed.inbox:  # what the failing statement said before it failed
            with unrecordable():
                await run.feed.drain()
        if not uncertain and not isinstance(error, LockLostError):
            await _rollback_and_record(run, failure, error, duration)
        await run.emit(
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
    run: Runner, failure: Failure, error: AsyncmigError | None, duration: float
) -> None:
    f, conn = failure.file, run.conn
    if f is None or conn.is_closed():
        return
    seen = len(run.feed.inbox)
    with anyio.move_on_after(CLEANUP_TIMEOUT) as scope:
        try:
            # ROLLBACK also ends an aborted or half-begun transaction; then the
            # failure is written as the connecting user, from a clean session.
            await conn.execute(session.ROLLBACK)
            await conn.execute(session.RESET)
            run.feed.forget_since(seen)
            await run.history.record_failure(
                conn, version=f.version, filename=f.filename,
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
            conn.terminate()
    if scope.cancelled_caught:
        conn.terminate()
