"""Holding the migration lock: :func:`hold`, with its heartbeat, watchdog and fence.

* **Holding**: once :func:`~asyncmig.lock.acquire` has the lock, holder information is
  published in ``_migration_locks`` and refreshed by a heartbeat on a second connection
  (:class:`SideConnection`); waiters report it every few seconds. Every heartbeat
  statement (connect, ``pg_locks`` check, heartbeat write) is bounded by
  :attr:`~asyncmig.lock.LockPolicy.statement_timeout`; a hung socket is dropped and
  reopened. Between beats, the same connection samples a long statement
  (:class:`~asyncmig.progress.Sampler`).
* **Holder-side watchdog**: each beat also checks, through ``pg_locks``, that the
  dedicated connection's backend still holds the lock. If it does not (a statement
  released it, the backend was terminated) or the connection closed, the run stops
  at once with :class:`~asyncmig.errors.LockLostError`.
* **Fencing**: a holder that cannot prove it is alive — no heartbeat reached the server
  for :attr:`~asyncmig.lock.LockPolicy.fence_after` (``stale_after`` × 0.8) — stops its
  own run before any waiter may reclaim the lock (a waiter needs ``stale_after``). The
  20 % margin (6 s at the default 30 s) covers the time the holder needs to stop and the
  latency of its last beat; it assumes every runner of one database uses the same
  ``stale_after``. Stopping a run, for any of these reasons, means: its dedicated
  connection is closed at once (the server rolls its transaction back and frees the
  lock; nothing more is sent on it, not even a failure record) and its body cancelled.

The statements themselves are the lock's (:mod:`asyncmig.lock`, where SQL lives); this
module decides when they run and what their failure means.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import anyio
import asyncpg
from anyio.streams.memory import MemoryObjectSendStream

from .connection import Conn
from .errors import AsyncmigError, LockLostError
from .events import LockAcquired, LockReleased, StatementProgress
from .history import History
from .lock import (
    MIN_BEAT,
    Emit,
    LockKey,
    LockPolicy,
    OwnSession,
    acquire,
    end_own_session,
    holder_backend_pid,
    own_session,
    read_sample,
    release,
)
from .progress import Progress, RunningStatement, Sampler, relay

__all__ = ["SideConnection", "hold"]

_READINGS_QUEUED = 16  # readings not yet emitted (more are dropped: a stuck consumer)


@dataclass(frozen=True, slots=True)
class SideConnection:
    """Where the heartbeat takes its own connection, and how it gives it back
    (``broken``: it failed or hung, so end it rather than reuse it)."""

    open: Callable[[], Awaitable[Conn]]
    close: Callable[[Conn, bool], Awaitable[None]]


@asynccontextmanager
async def hold(
    conn: Conn,
    key: LockKey,
    history: History,
    policy: LockPolicy,
    side: SideConnection,
    emit: Emit,
) -> AsyncIterator[Progress]:
    """Wait for the lock, then hold it for the body with heartbeat, watchdog and fence.

    The body is cancelled, and :class:`LockLostError` raised, when the lock is lost or
    cannot be proven held. The lock is released (shielded, bounded) on every exit.
    """
    waited = await acquire(conn, key, history, policy, emit)
    t_lock = time.monotonic()
    backend_pid = conn.get_server_pid()
    progress = Progress(proved_at=time.monotonic())
    try:
        await emit(LockAcquired(waited_s=round(waited, 3), backend_pid=backend_pid))
        own = await own_session(conn)
        await history.ensure(conn)
        sent = time.monotonic()
        await history.publish_holder(conn)  # the first heartbeat
        progress.proved_at = sent
        body_error: Exception | None = None
        # Readings of a long statement, queued by the heartbeat, emitted beside it.
        report, readings = anyio.create_memory_object_stream[
            tuple[RunningStatement, StatementProgress]
        ](_READINGS_QUEUED)
        with report, readings:
            async with anyio.create_task_group() as tg:
                body_scope = anyio.CancelScope()

                def stop(reason: str) -> None:
                    if progress.lost:
                        return
                    progress.lost = True
                    progress.lost_reason = reason
                    conn.terminate()  # the server rolls back and frees the lock; we send no more
                    body_scope.cancel()

                tg.start_soon(relay, progress, readings, emit)
                tg.start_soon(
                    _heartbeat, conn, key, history, own, progress, policy, side, stop, report
                )
                tg.start_soon(_fence, progress, policy, stop)
                try:
                    with body_scope:
                        yield progress
                except Exception as exc:  # re-raised below, outside the task group
                    body_error = exc
                finally:
                    tg.cancel_scope.cancel()
        if progress.lost and not isinstance(body_error, LockLostError):
            raise LockLostError(
                f"lost the migration lock: {progress.lost_reason}; the run's connection was "
                f"closed, so the server rolled back any open transaction"
            ) from body_error
        if body_error is not None:
            raise body_error
    finally:
        with anyio.CancelScope(shield=True):
            await release(conn, key, history)
            await emit(LockReleased(held_s=round(time.monotonic() - t_lock, 3)))


async def _fence(progress: Progress, policy: LockPolicy, stop: Callable[[str], None]) -> None:
    """Stop the run when no heartbeat has reached the server for ``fence_after``."""
    fence_after = policy.fence_after
    if fence_after is None:
        return
    while True:
        now = time.monotonic()
        due = progress.proved_at + fence_after
        if now >= due:
            stop(
                f"no heartbeat reached the server for {now - progress.proved_at:.1f}s, so "
                f"this run could not prove it still held the lock and stopped itself before "
                f"another runner could reclaim it (stale_after {policy.stale_after:g}s)"
            )
            return
        await anyio.sleep(due - now)


async def _end_own_session(side_conn: Conn, own: OwnSession, timeout: float) -> None:
    """Terminate the run's own backend (shielded: the run is already stopping)."""
    with (
        anyio.CancelScope(shield=True),
        anyio.move_on_after(timeout),
        contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError, OSError),
    ):
        await end_own_session(side_conn, own)


async def _heartbeat(
    conn: Conn,
    key: LockKey,
    history: History,
    own: OwnSession,
    progress: Progress,
    policy: LockPolicy,
    side: SideConnection,
    stop: Callable[[str], None],
    report: MemoryObjectSendStream[tuple[RunningStatement, StatementProgress]],
) -> None:
    """Every beat: check in ``pg_locks`` that ``holder_pid`` holds the lock, then refresh
    ``heartbeat_at`` and progress, on the side connection, within a bounded time.
    Between beats, a statement that has run for ``progress.sample_after`` is sampled
    (:class:`~asyncmig.progress.Sampler`) on the same connection, also bounded.

    A failed or hung beat (or sample) drops the side connection (a fresh one is opened
    next time); the fence decides when too many beats have failed. When the lock is gone
    while the run's session lives, that session is ended here too: closing the client's
    socket alone would leave a busy backend running its statement to the end.
    """
    holder_pid = own.pid
    side_conn: Conn | None = None
    sampler = Sampler(lambda on: read_sample(on, holder_pid))
    last_beat = time.monotonic()
    try:
        while True:
            beat, sample = await _next_due(progress, policy, last_beat, sampler)
            if conn.is_closed():
                stop("the run's connection closed")
                return
            try:
                with anyio.fail_after(policy.statement_timeout):
                    if side_conn is None:
                        side_conn = await side.open()
                    if beat:
                        progress.changed = anyio.Event()
                        sent = time.monotonic()
                        pid = await holder_backend_pid(side_conn, key)
                        if pid != holder_pid:
                            stop(
                                f"backend {holder_pid} no longer holds the migration lock"
                                + (f" (now held by backend {pid})" if pid else "")
                            )
                            await _end_own_session(side_conn, own, policy.statement_timeout)
                            return
                        await history.heartbeat(
                            side_conn, holder_pid, progress.version, progress.statement
                        )
                        progress.proved_at = max(progress.proved_at, sent)
                    if sample:
                        await sampler.sample(side_conn, progress, report)
            except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError,
                    AsyncmigError):  # fmt: skip
                if side_conn is not None:
                    with anyio.CancelScope(shield=True), anyio.move_on_after(2):
                        await side.close(side_conn, True)
                side_conn = None
            finally:
                if beat:
                    last_beat = time.monotonic()
    finally:
        if side_conn is not None:
            with anyio.CancelScope(shield=True), anyio.move_on_after(2):
                await side.close(side_conn, False)


async def _next_due(
    progress: Progress, policy: LockPolicy, last_beat: float, sampler: Sampler
) -> tuple[bool, bool]:
    """Wait until a beat or a sample is due; which of them are.

    A beat is due ``beat_every`` after the last one, or ``MIN_BEAT`` after it once the
    runner moved to another migration (``progress.changed``). A sample is due when the
    running statement has run for ``sample_after``, then as often as
    :meth:`~asyncmig.progress.Sampler.due` says.
    """
    while True:
        if progress.woken.is_set():
            progress.woken = anyio.Event()
        now = time.monotonic()
        gap = min(MIN_BEAT, policy.beat_every) if progress.changed.is_set() else policy.beat_every
        beat_at = last_beat + gap
        sample_at = sampler.due(progress)
        if now >= beat_at or now >= sample_at:
            return now >= beat_at, now >= sample_at
        woken = progress.woken
        progress.wakes_at = min(beat_at, sample_at)
        with anyio.move_on_after(progress.wakes_at - now):
            await woken.wait()
