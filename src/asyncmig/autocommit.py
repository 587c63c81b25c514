"""A no-transaction file (``-- asyncmig: no-transaction``), applied or rolled back.

Applying it: its history row is committed as ``running`` first (with a ``resume`` entry
when ``migrate --resume`` continues an interrupted run). A statement that may run in a
transaction block runs in one of its own, with the DDL lock timeout, and commits together
with its resume point, so a stop anywhere never re-runs it; it is tried again while its
lock is not granted in time. One that cannot (``CREATE INDEX CONCURRENTLY``) commits on
its own, and its resume point right after. INVALID indexes left by an earlier build are
reported or rebuilt (:mod:`asyncmig.indexes`).

Rolling it back: statement by statement with autocommit, from the start.

Either runs from a clean session, with the file's directives as session settings, under
the migration's deadline; a failure is recorded by :func:`asyncmig.settle.fail`.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import anyio
import asyncpg

from . import indexes, session
from .failures import Failure, File
from .sender import elapsed_ms
from .settle import fail
from .splitter import Statement

if TYPE_CHECKING:
    from .runner import Runner

__all__ = ["apply", "rollback"]


async def apply(run: Runner, f: File, resume_from: int) -> None:
    """Apply ``f`` from statement ``resume_from + 1`` (the ones before are committed)."""
    sql, conn, history = f.sql, run.conn, run.history

    async def body(failure: Failure, t0: float) -> None:
        await conn.execute(session.RESET)
        await history.record_running(
            conn, version=f.version, filename=f.filename,
            checksum=sql.checksum, statements=len(sql.statements),
            statements_done=resume_from,
            rollback_sql=f.rollback.text if f.rollback else None,
            rollback_checksum=f.rollback.checksum if f.rollback else None,
        )  # fmt: skip
        if resume_from:
            await history.log(
                conn, "resume", version=f.version, filename=f.filename,
                checksum=sql.checksum,
                detail=f'{{"from_statement": {resume_from + 1}}}',
            )  # fmt: skip
        if run.rebuild_invalid:
            await indexes.rebuild_before(conn, history, run.emit, sql, resume_from)
        d = sql.directives
        run.sender.prefix = session.timeouts(d.lock_timeout, d.statement_timeout, local=False)

        async def step(st: Statement, number: int) -> str:
            commit = history.progress_commit_sql(f.version, number)
            if st.no_transaction:
                status = await run.sender.send(st, failure)
                await conn.execute(session.BEGIN + commit)
            else:
                status = await _send_retrying(run, f, st, failure)
                await conn.execute(commit)
            return status

        await run.sender.run(f, resume_from, failure, step=step)
        run.sender.prefix = ""
        await indexes.check_after(conn, history, sql, f.version, [a.version for a in run.done])
        await conn.execute(session.RESET)
        await history.record(conn, f.version, elapsed_ms(t0))

    await _run(run, Failure(file=f, done=resume_from), body)


async def rollback(run: Runner, f: File) -> None:
    """Run ``f``, a no-transaction rollback file, from its first statement."""

    async def body(failure: Failure, t0: float) -> None:
        d = f.sql.directives
        run.sender.prefix = session.RESET + session.timeouts(
            d.lock_timeout, d.statement_timeout, local=False
        )
        await run.sender.run(f, 0, failure)
        run.sender.prefix = ""
        await run.conn.execute(session.RESET)
        await run.history.record(run.conn, f.version, elapsed_ms(t0))

    await _run(run, Failure(file=f), body)


async def _run(
    run: Runner, failure: Failure, body: Callable[[Failure, float], Awaitable[None]]
) -> None:
    """The file under its deadline: started, run, recorded as failed or finished."""
    f = failure.file
    assert f is not None
    t0 = time.perf_counter()
    await run.feed.started(f)
    try:
        with run.deadline():
            await body(failure, t0)
    except BaseException as exc:
        run.sender.prefix = ""
        await fail(run, failure, exc, t0)
        raise
    finally:
        run.progress.version = run.progress.statement = None
    await run.finished([f.applied(elapsed_ms(t0))])


async def _send_retrying(run: Runner, f: File, st: Statement, failure: Failure) -> str:
    """A statement that may run in a transaction block: in one of its own (its resume
    point commits with it), with the DDL lock timeout, tried again while its lock is not
    granted in time. Nothing of it committed before a retry, so nothing runs twice."""
    directive = f.sql.directives.lock_timeout
    t0 = time.perf_counter()
    failure.attempt = 1
    while True:
        timeout = run.retry.timeout(failure.attempt, directive)
        run.sender.prefix += session.BEGIN + session.timeouts(timeout, None, local=True)
        run.sample_locks([timeout])
        try:
            return await run.sender.send(st, failure)
        except asyncpg.PostgresError as exc:
            if not run.retryable(exc, failure, t0, [f]):
                raise
            pause = run.retry.pause(failure.attempt)
            await run.lock_retry(failure, [timeout], pause)
            await anyio.sleep(pause)
            failure.attempt += 1
